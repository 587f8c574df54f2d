"""What the CDC tests share: a caller that stages each page with its state in the real SQLite store (as
`ferry serve` will), writers that change the sandbox org over REST, and a bounded consume loop."""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from ferry.connectors.salesforce import SalesforceConfig
from ferry.connectors.salesforce.cdc import ChangeStreams, SalesforceChangeSource
from ferry.connectors.salesforce.client import SalesforceClient
from ferry.core.contracts import SourcePage
from ferry.core.events import CHANGE_KEY
from ferry.core.ports import StagedRow
from ferry.store.sqlite import Store

from .conftest import Org

PIPELINE = "sf-cdc"
FIELDS = {"Contact": ["FirstName", "LastName", "Email", "Phone", "LastModifiedById"]}


class Durable:
    """The caller's side of the contract: each page's records and state in one transaction."""

    def __init__(self, path: Path) -> None:
        self.store = Store(path / "state.db")
        self.run_id = self.store.start_run(PIPELINE)
        self.handed: Counter[str] = Counter()  # (id@version) of every record staged, as handed out
        self.records: dict[str, dict[str, Any]] = {}  # id → the last staged record
        self.pages = 0

    def stage(self, stream: str, page: SourcePage) -> None:
        rows = [StagedRow(str(r["Id"]), str(r["SystemModstamp"]), orjson.dumps(r)) for r in page.records]
        self.store.stage(PIPELINE, stream, self.run_id, rows, page.state)
        self.pages += 1
        for r in page.records:
            self.handed[f"{r['Id']}@{r['SystemModstamp']}"] += 1
            self.records[str(r["Id"])] = r

    def state(self, stream: str = "Contact") -> dict[str, Any] | None:
        return self.store.read_state(PIPELINE, stream)

    def live_duplicates(self) -> list[str]:
        """Records handed out twice from events (a catch-up read overlaps the stream on purpose)."""
        return [k for k, n in self.handed.items() if n > 1]


def change_source(org: Org, *, quick_retries: bool = False, **settings: Any) -> SalesforceChangeSource:
    """`quick_retries`: the stream's backoff sleeps are cut to 10 ms (the waits are not what a test checks)."""
    if quick_retries:
        return SalesforceChangeSource(org.config(), ChangeStreams(objects=FIELDS, **settings),
                                      sleep=lambda _s: asyncio.sleep(0.01))
    return SalesforceChangeSource(org.config(), ChangeStreams(objects=FIELDS, **settings))


async def consume(source: SalesforceChangeSource, durable: Durable, until: Callable[[], bool], *,
                  stream: str = "Contact", timeout: float = 20.0,
                  during: Callable[[], Any] | None = None,
                  on_page: Callable[[SourcePage], Awaitable[None]] | None = None) -> None:
    """Stage pages until `until()` holds; `during` (a coroutine function) starts once the stream is live
    (after the first page) and is awaited when the consumer stops; `on_page` runs after each page is staged,
    before the consumer asks for the next one."""
    pages = source.events(stream, durable.state(stream))
    started: asyncio.Task[Any] | None = None

    async def run() -> None:
        nonlocal started
        async for page in pages:
            durable.stage(stream, page)
            if on_page is not None:
                await on_page(page)
            if started is None and during is not None:
                started = asyncio.create_task(during())
            if until():
                return

    try:
        await asyncio.wait_for(run(), timeout)
    finally:
        await pages.aclose()
        if started is not None:
            await started


class Writer:
    """Changes the org over REST: as ferry (`Sforce-Call-Options: client=ferry`) or as another client."""

    def __init__(self, config: SalesforceConfig) -> None:
        self.ferry = SalesforceClient(config)
        self.config = config

    async def aclose(self) -> None:
        await self.ferry.aclose()

    async def create(self, last_name: str, **fields: Any) -> str:
        body = await self.ferry.json("POST", self.ferry.data_path("/sobjects/Contact"), label="test",
                                     json={"LastName": last_name, **fields})
        return str(body["id"])

    async def update(self, record_id: str, **fields: Any) -> None:
        await self.ferry.request("PATCH", self.ferry.data_path(f"/sobjects/Contact/{record_id}"), label="test",
                                 json=fields)

    async def delete(self, record_id: str) -> None:
        await self.ferry.request("DELETE", self.ferry.data_path(f"/sobjects/Contact/{record_id}"), label="test")

    async def composite_create(self, names: list[str]) -> list[str]:
        """One transaction (allOrNone Collections)."""
        body = await self.ferry.json("POST", self.ferry.data_path("/composite/sobjects"), label="test", json={
            "allOrNone": True, "records": [{"attributes": {"type": "Contact"}, "LastName": n} for n in names]})
        return [str(r["id"]) for r in body]

    async def update_as_someone_else(self, record_id: str, **fields: Any) -> None:
        """A write without ferry's call options, as another integration or a person would make it."""
        session = await self.ferry.auth.session()
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(self.config.ca_file))) as http:
            response = await http.patch(
                f"{session.instance_url}{self.ferry.data_path(f'/sobjects/Contact/{record_id}')}",
                json=fields, headers={"Authorization": f"Bearer {session.access_token}"})
            response.raise_for_status()


def change(record: dict[str, Any]) -> dict[str, Any]:
    return dict(record[CHANGE_KEY])
