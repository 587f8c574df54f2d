"""The QuickBooks Online Accounting API over the shared HTTP core: entity writes, reads, queries, batches.

Every call is paced under the realm's throttles (``pace.Pacer``) and authorized by ``OAuthSession`` (a 401
refreshes the token once and repeats the call). A write carries a ``requestid``: Intuit answers a repeated
id with the first answer and does nothing, which makes the write safe to repeat, so the core may retry it
after a reset or a timeout like a read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import orjson

from ferry.connectors.http import HttpCore
from ferry.connectors.quickbooks.auth import OAuthSession
from ferry.connectors.quickbooks.config import QuickBooksConfig
from ferry.connectors.quickbooks.errors import Fault, classify, parse_fault
from ferry.connectors.quickbooks.pace import BATCH_CALL, Pacer, SharedMinute
from ferry.errors import PermanentError

Record = dict[str, Any]
QUERY_PAGE = 1000  # MAXRESULTS' ceiling


def quote(value: str) -> str:
    """A string literal of the query language (``\\'`` escapes a quote, as python-quickbooks writes it)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class QuickBooksClient:
    def __init__(
        self,
        config: QuickBooksConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        shared: SharedMinute | None = None,
        shared_batches: SharedMinute | None = None,
    ) -> None:
        self.config = config
        kwargs: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self.pacer = Pacer(config.per_second, config.per_minute, config.max_concurrency, shared=shared,
                           batch_per_minute=config.batch_per_minute, shared_batches=shared_batches, **kwargs)
        self.http = HttpCore(
            "quickbooks",
            timeout_seconds=config.timeout_seconds,
            ca_file=config.ca_file,
            classify=classify,
            headers={"Accept": "application/json"},
            before_request=self.pacer.acquire,
            after_request=lambda _response: self.pacer.release(),
            transport=transport,
            sleep=sleep,
        )
        # The token endpoint is Intuit's OAuth server, not the company's API: its calls are not paced with the
        # API's (and a refresh made while a call holds a slot in flight must not wait for another slot).
        self.oauth_http = HttpCore("quickbooks-oauth", timeout_seconds=config.timeout_seconds,
                                   ca_file=config.ca_file, transport=transport, sleep=sleep)
        self.auth = OAuthSession(config, self.oauth_http)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.oauth_http.aclose()

    @property
    def api_calls(self) -> dict[str, int]:
        return dict(self.http.calls)

    def _url(self, path: str) -> str:
        return f"{self.config.company_path}/{path}"

    async def _call(self, method: str, path: str, *, label: str, params: dict[str, Any] | None = None,
                    json: Any = None, content: str | None = None, headers: dict[str, str] | None = None,
                    idempotent: bool = True) -> Any:
        response = await self.http.request(
            method, self._url(path), label=label, auth=self.auth, json=json, content=content,
            params={**(params or {}), "minorversion": self.config.minor_version}, headers=headers,
            idempotent=idempotent,
        )
        return orjson.loads(response.content) if response.content else {}

    async def write(
        self, entity: str, body: Record, request_id: str, *, label: str
    ) -> tuple[Record | None, Fault | None]:
        """Create (no ``Id``) or update one entity; (the entity as stored, None) or (None, the Fault)."""
        answer = await self._call("POST", entity.lower(), label=label, json=body, params={"requestid": request_id})
        fault = parse_fault(answer)
        if fault is not None:
            return None, fault
        return _entity(answer, entity), None

    async def read(self, entity: str, rid: str, *, label: str) -> tuple[Record | None, Fault | None]:
        answer = await self._call("GET", f"{entity.lower()}/{rid}", label=label)
        fault = parse_fault(answer)
        return (None, fault) if fault is not None else (_entity(answer, entity), None)

    async def query(self, statement: str, *, label: str = "query") -> list[Record]:
        """Every row of a SELECT, page by page (STARTPOSITION/MAXRESULTS); the statement has no paging of its own."""
        rows: list[Record] = []
        start = 1
        while True:
            answer = await self._call(
                "POST", "query", label=label, content=f"{statement} STARTPOSITION {start} MAXRESULTS {QUERY_PAGE}",
                headers={"Content-Type": "application/text"},
            )
            fault = parse_fault(answer)
            if fault is not None:
                raise PermanentError(f"QuickBooks query refused: {fault.code} {fault.text()}", code=f"QBO_{fault.code}")
            page = _query_rows(answer)
            rows += page
            if len(page) < QUERY_PAGE:
                return rows
            start += QUERY_PAGE

    async def batch(self, items: Sequence[Record], request_id: str, *, label: str) -> dict[str, Record]:
        """One ``batch`` call (<= 30 items, each with a ``bId``); each item's answer by its bId."""
        marked = BATCH_CALL.set(True)  # each attempt takes a batch slot (pace.Pacer.acquire)
        try:
            answer = await self._call("POST", "batch", label=label, json={"BatchItemRequest": list(items)},
                                      params={"requestid": request_id})
        finally:
            BATCH_CALL.reset(marked)
        fault = parse_fault(answer)
        if fault is not None:
            raise PermanentError(f"QuickBooks refused the batch: {fault.code} {fault.text()}", code=f"QBO_{fault.code}")
        return {str(item.get("bId")): item for item in answer.get("BatchItemResponse", []) if isinstance(item, dict)}


def _entity(answer: Any, entity: str) -> Record | None:
    found = answer.get(entity) if isinstance(answer, dict) else None
    return found if isinstance(found, dict) else None


def _query_rows(answer: Any) -> list[Record]:
    response = answer.get("QueryResponse") if isinstance(answer, dict) else None
    if not isinstance(response, dict):
        return []
    for key, value in response.items():
        if key not in ("startPosition", "maxResults", "totalCount") and isinstance(value, list):
            return [row for row in value if isinstance(row, dict)]
    return []
