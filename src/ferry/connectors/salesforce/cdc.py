"""Change Data Capture consumed: Salesforce change events → pages of full current records (an EventSource).

``SalesforceChangeSource(config, ChangeStreams(objects={"Contact": ["Email", ...]})).events("Contact", state)``
subscribes to ``/data/ContactChangeEvent`` over CometD (``cometd.CometdStream``) and yields one ``SourcePage``
per long poll's batch of events (a micro-batch):

* Change events carry only what changed (an UPDATE: the changed fields), so the page holds the records as
  they are now, read back by Id with one SOQL ``WHERE Id IN (...)`` query per 200 changed records (usually
  one query per micro-batch). Several events for one record in a batch cost one read. A DELETE (or
  GAP_DELETE) becomes a tombstone ``{"Id", "IsDeleted": true, "SystemModstamp"}``; nothing is read for it.
* Every record carries ``core.events.CHANGE_KEY``: the last event's ``changeType``, ``changeOrigin``
  (``...;client=ferry`` on ferry's own writes), ``commitUser``, commit time, replay id and transaction key,
  for echo suppression downstream.
* The page's ``state`` is ``{"replay_id": N, "watermark": ISO time}``: the last event of the page and a
  time safely before it. The caller saves it with the records in one transaction; the stream resubscribes
  after that replay id (after a restart, a session expiry or a lost CometD client), so nothing is lost and
  nothing handed out twice.

Loss is never silent. A gap event (``GAP_CREATE``/``GAP_UPDATE``/``GAP_UNDELETE``: the org could not build
the event) names its records, which are read by Id like any change, as the Change Data Capture guide advises.
An overflow event (``GAP_OVERFLOW``: a transaction past 100,000 changes, no record ids), a wildcard record id
(``001*``), a replay id past the 72-hour retention (the subscribe's ``400::The replayId {N} you provided was
invalid``) or a session lost before any replay id was known each trigger a **catch-up**: subscribe for new
events first, then read every record whose SystemModstamp is at or after the saved watermark (``queryAll``,
so records deleted meanwhile come back as ``IsDeleted: true``), then go live. The catch-up overlaps the live
stream on purpose; staging keeps one copy per (Id, SystemModstamp).

A fresh start (``state=None``) follows new events only and first yields an empty page whose state marks
the starting time, so a crash before the first event still catches up from there. The initial load of
existing records is a batch run's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, Field

from ferry.connectors.salesforce.client import SalesforceClient, api_name
from ferry.connectors.salesforce.cometd import NEW_EVENTS, CometdStream, ReplayLost, replay_id_of
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.select import Select, compare, in_, parse_modstamp
from ferry.core.contracts import SourcePage
from ferry.core.events import CATCH_UP, CHANGE_KEY, ChangeInfo
from ferry.errors import ConfigError, PermanentError

log = structlog.get_logger("ferry.connectors.salesforce.cdc")

MODSTAMP = "SystemModstamp"
ID_CHUNK = 200  # ids per SOQL IN (...) read: ~4 KB of URI, far below the 16 KB limit
LINGER_SECONDS = 0.1
MAX_BATCH = 2_000
OVERLAP_SECONDS = 120.0  # a watermark this far before the last event: SystemModstamp precedes the commit
DELETES = frozenset({"DELETE", "GAP_DELETE"})
CATCH_UP_TRIGGERS = frozenset({"GAP_OVERFLOW"})


class ChangeStreams(BaseModel):
    """Which objects to follow and which fields to read back for each (Id and SystemModstamp are added)."""

    objects: dict[str, list[str]] = Field(min_length=1)
    overlap_seconds: float = Field(OVERLAP_SECONDS, ge=0)
    id_chunk: int = Field(ID_CHUNK, ge=1, le=ID_CHUNK)
    # After events arrive, keep collecting this long before reading the records back: fewer SOQL calls
    # (one per micro-batch) for at most this much more latency. 0: one long poll per micro-batch.
    linger_seconds: float = Field(LINGER_SECONDS, ge=0, le=10)
    max_batch: int = Field(MAX_BATCH, ge=1)


def channel_for(sobject: str) -> str:
    """``Contact`` → ``/data/ContactChangeEvent``; a custom ``Name__c`` → ``/data/Name__ChangeEvent``."""
    name = api_name(sobject)
    return f"/data/{name[:-1] if name.endswith('__c') else name}ChangeEvent"


@dataclass(slots=True)
class Position:
    """Where a stream stands: the last durable replay id (None: unknown, catch up) and the watermark."""

    replay_id: int | None
    watermark: dt.datetime

    @classmethod
    def load(cls, state: dict[str, Any]) -> Position:
        replay, mark = state.get("replay_id"), state.get("watermark")
        if (replay is not None and (not isinstance(replay, int) or isinstance(replay, bool))) or not isinstance(
            mark, str
        ):
            raise ConfigError(f"not a Salesforce change stream state: {state!r}")
        return cls(replay, parse_modstamp(mark))

    def dump(self) -> dict[str, Any]:
        return {"replay_id": self.replay_id, "watermark": _iso(self.watermark)}


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _from_millis(ms: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if isinstance(ms, int | float) else None


def header_of(message: dict[str, Any]) -> dict[str, Any]:
    payload = (message.get("data") or {}).get("payload") or {}
    header = payload.get("ChangeEventHeader")
    return header if isinstance(header, dict) else {}


def change_info(header: dict[str, Any], replay_id: int | None) -> ChangeInfo:
    committed = _from_millis(header.get("commitTimestamp"))
    return ChangeInfo(
        kind=str(header.get("changeType", "")).lower(),
        origin=str(header.get("changeOrigin") or ""),
        user=str(header.get("commitUser") or ""),
        committed_at=_iso(committed) if committed else "",
        position="" if replay_id is None else str(replay_id),
        transaction=str(header.get("transactionKey") or ""),
    )


def needs_catch_up(header: dict[str, Any]) -> bool:
    """An overflow event, or record ids the event cannot name one by one (a type conversion's ``001*``)."""
    ids = header.get("recordIds") or []
    return header.get("changeType") in CATCH_UP_TRIGGERS or any(str(i).endswith("*") for i in ids)


class SalesforceChangeSource:
    """Salesforce Change Data Capture as an ``core.events.EventSource``; ``async with`` it, then ``events``."""

    system = "salesforce"

    def __init__(
        self,
        config: SalesforceConfig,
        streams: ChangeStreams,
        *,
        client: SalesforceClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.settings = streams
        self._own_client = client is None
        self.client = client or SalesforceClient(config, transport=transport)
        self._clock = clock
        self._sleep = sleep
        self.catch_ups = 0  # how many catch-up reads ran (a loss was detected)
        self.catch_ups_by_stream: dict[str, int] = {}

    async def __aenter__(self) -> SalesforceChangeSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_client:
            await self.client.aclose()

    @property
    def streams(self) -> Sequence[str]:
        return list(self.settings.objects)

    @property
    def api_calls(self) -> int:
        return sum(self.client.api_calls.values())

    def fields(self, stream: str) -> list[str]:
        if stream not in self.settings.objects:
            raise ConfigError(f"{stream!r} is not a followed object (objects: {', '.join(self.settings.objects)})")
        return list(dict.fromkeys([*self.settings.objects[stream], "Id", MODSTAMP]))

    async def events(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        fields = self.fields(stream)
        cometd = CometdStream(self.client.auth, channel_for(stream), api_version=self.config.api_version,
                              ca_file=self.config.ca_file, sleep=self._sleep)
        try:
            if state is None:
                await cometd.open(NEW_EVENTS)
                position = Position(None, self._now_less_overlap())
                yield SourcePage([], position.dump())  # the starting point, durable before any event
            else:
                position = Position.load(state)
                if await self._resume(cometd, position):
                    # Subscribed again: an empty page says so at once (a follower's health), the same position.
                    yield SourcePage([], position.dump())
                else:
                    async for page in self._catch_up(stream, fields, position):
                        yield page
            while True:
                # aclosing: a consumer that stops mid-stream also ends the poll held in flight, at once
                try:
                    async with contextlib.aclosing(
                        cometd.batches(self.settings.linger_seconds, self.settings.max_batch)
                    ) as batches:
                        async for batch in batches:
                            async for page in self._pages(stream, fields, batch, position):
                                yield page
                except ReplayLost as lost:
                    log.warning("salesforce.cdc.position_lost", stream=stream, reason=lost.reason)
                    await cometd.open(NEW_EVENTS)
                    async for page in self._catch_up(stream, fields, position):
                        yield page
        finally:
            await cometd.aclose()

    async def _resume(self, cometd: CometdStream, position: Position) -> bool:
        """Subscribe after the saved replay id; False when it cannot be (expired, or none saved)."""
        if position.replay_id is not None:
            try:
                await cometd.open(position.replay_id)
                return True
            except ReplayLost as lost:
                log.warning("salesforce.cdc.replay_expired", channel=lost.channel, replay_id=lost.replay_id)
        await cometd.open(NEW_EVENTS)
        return False

    def _now_less_overlap(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock() - self.settings.overlap_seconds, dt.UTC)

    async def _pages(
        self, stream: str, fields: list[str], batch: list[dict[str, Any]], position: Position
    ) -> AsyncIterator[SourcePage]:
        """A batch as pages: runs of ordinary events become one page each; a catch-up trigger in between
        becomes a catch-up read after the events before it are handed out."""
        run: list[dict[str, Any]] = []
        for message in batch:
            if needs_catch_up(header_of(message)):
                if run:
                    yield await self._page(stream, fields, run, position)
                    run = []
                log.warning("salesforce.cdc.overflow", stream=stream, replay_id=replay_id_of(message))
                async for page in self._catch_up(stream, fields, position, trigger=message):
                    yield page
            else:
                run.append(message)
        if run:
            yield await self._page(stream, fields, run, position)

    async def _page(
        self, stream: str, fields: list[str], messages: list[dict[str, Any]], position: Position
    ) -> SourcePage:
        latest: dict[str, tuple[dict[str, Any], int | None]] = {}  # record id → its last event in the run
        for message in messages:
            header = header_of(message)
            for record_id in header.get("recordIds") or []:
                latest.pop(str(record_id), None)  # re-insert: dict order follows the last change
                latest[str(record_id)] = (header, replay_id_of(message))
        wanted = [rid for rid, (header, _) in latest.items() if header.get("changeType") not in DELETES]
        found = await self.read_by_id(stream, fields, wanted)
        records: list[dict[str, Any]] = []
        for rid, (header, replay) in latest.items():
            info = change_info(header, replay)
            if header.get("changeType") in DELETES:
                records.append(self._tombstone(stream, rid, header, info))
            elif rid in found:
                records.append({**found[rid], CHANGE_KEY: info})
            else:  # deleted (or hidden from this user) since: its DELETE event comes later
                log.info("salesforce.cdc.record_gone", stream=stream, id=rid, change=info["kind"])
        self._advance(position, messages)
        return SourcePage(records, position.dump())

    def _advance(self, position: Position, messages: list[dict[str, Any]]) -> None:
        last = messages[-1]
        position.replay_id = replay_id_of(last)
        committed = _from_millis(header_of(last).get("commitTimestamp"))
        if committed is not None:
            overlap = dt.timedelta(seconds=self.settings.overlap_seconds)
            position.watermark = max(position.watermark, committed - overlap)

    @staticmethod
    def _tombstone(stream: str, record_id: str, header: dict[str, Any], info: ChangeInfo) -> dict[str, Any]:
        committed = _from_millis(header.get("commitTimestamp")) or dt.datetime.now(dt.UTC)
        return {"attributes": {"type": stream}, "Id": record_id, "IsDeleted": True,
                MODSTAMP: committed.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000", CHANGE_KEY: info}

    async def read_by_id(self, stream: str, fields: list[str], ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The current records with these ids, one SOQL ``Id IN (...)`` query per ``id_chunk`` ids."""
        out: dict[str, dict[str, Any]] = {}
        chunk = self.settings.id_chunk
        for start in range(0, len(ids), chunk):
            soql = Select(stream, fields).where(in_("Id", ids[start:start + chunk])).soql()
            async for page in self._query("/query", soql, label=f"cdc:{stream}"):
                out.update((str(r["Id"]), r) for r in page if r.get("Id"))
        return out

    async def _catch_up(
        self,
        stream: str,
        fields: list[str],
        position: Position,
        trigger: dict[str, Any] | None = None,
    ) -> AsyncIterator[SourcePage]:
        """Every record changed at or after the watermark (deleted ones too), then the position after it.

        The subscription is already live, so whatever changes from now on arrives as events; pages before the
        last keep the old state (a crash repeats the catch-up), the last one carries the new position."""
        self.catch_ups += 1
        self.catch_ups_by_stream[stream] = self.catch_ups_by_stream.get(stream, 0) + 1
        started = self._now_less_overlap()
        since = position.watermark
        log.warning("salesforce.cdc.catch_up", stream=stream, since=_iso(since))
        query = Select(stream, [*fields, "IsDeleted"]).where(compare(MODSTAMP, ">=", since)).order_by(MODSTAMP, "Id")
        pending: list[dict[str, Any]] | None = None
        async for page in self._query("/queryAll", query.soql(), label=f"cdc-catch-up:{stream}"):
            if pending:
                yield SourcePage(pending, position.dump())
            pending = [{**r, CHANGE_KEY: _catch_up_info(r)} for r in page]
        if trigger is not None:
            position.replay_id = replay_id_of(trigger)
            position.watermark = max(position.watermark, started)
        else:
            position.replay_id = None  # live from -1: no replay id until the first event arrives
            position.watermark = started
        yield SourcePage(pending or [], position.dump())

    async def _query(self, endpoint: str, soql: str, *, label: str) -> AsyncIterator[list[dict[str, Any]]]:
        """A REST query's pages (``/query`` or ``/queryAll``, which also returns deleted records)."""
        client = self.client
        body = await client.json("GET", client.data_path(endpoint), label=label, params={"q": soql})
        while True:
            yield [r for r in body.get("records", []) if isinstance(r, dict)]
            next_path = body.get("nextRecordsUrl")
            if body.get("done", True) or not next_path:
                return
            if not str(next_path).startswith("/services/data/"):
                raise PermanentError(f"unexpected nextRecordsUrl shape: {httpx.URL(str(next_path)).path}")
            body = await client.json("GET", str(next_path), label=label)


def _catch_up_info(record: dict[str, Any]) -> ChangeInfo:
    return ChangeInfo(kind=CATCH_UP, origin="", user=str(record.get("LastModifiedById") or ""),
                      committed_at="", position="", transaction="")
