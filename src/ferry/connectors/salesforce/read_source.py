"""Salesforce as a contract Source: Accounts, Products and Orders read incrementally, deletes included.

Built on the low-level reader (``source.SalesforceSource``): each stream is one query ordered by
``(SystemModstamp, Id)`` and started strictly after the last run's watermark, through REST query pages, or a
Bulk API 2.0 query when a ``COUNT()`` says the read holds at least ``bulk_read_threshold`` records. Both go
through ``queryAll`` so deleted records (``IsDeleted = true``, still in the recycle bin) are read too.

**Never skip.** REST pages are a keyset: records sharing a timestamp are ordered by Id, and a page's state is
the last (SystemModstamp, Id) it held, so a read continued after a crash starts strictly after it. A record
edited while the read pages on moves past the keyset's position and is met again at its new stamp. A Bulk
query's rows arrive unordered: a Bulk read continued after a crash starts the query again (staging keeps a
(key, version) once). The cursor a finished read leaves is the newest record read, but never later than the
read's start less ``clock_margin_seconds``: a transaction that commits late carries a SystemModstamp from
before it became visible, and the next run reads from before it (what it reads again is unchanged).

**Children.** Each record carries what its canonical record needs, fetched with one ``IN (...)`` query per
page of parents: an Account its primary Contact (the first created), a Product2 its standard price, an Order
its OrderItems (``normalize.py``). The version is the newest SystemModstamp among them.

**Link back** (``LinksBack``): once a run has loaded them, the target's ids are written onto the records
(``link_back: {Account: QuickBooks_Id__c}``) with sObject Collections updates, 200 a call, only where the field
does not hold the id yet, and the changed records are read again so the engine can tell that the new
SystemModstamp is ferry's own write (``ferry.engine.linkback``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.salesforce import normalize as sf
from ferry.connectors.salesforce.select import Condition, Select, Watermark, eq, in_
from ferry.connectors.salesforce.source import MODSTAMP, SalesforceSource, query_pages
from ferry.connectors.salesforce.source_config import SalesforceSourceConfig
from ferry.core.contracts import Normalized, SourceCapabilities, SourcePage, TargetLink
from ferry.errors import ConfigError
from ferry.model.values import text

log = structlog.get_logger("ferry.connectors.salesforce.read")

STATE_FORMAT = 1
COLLECTION_RECORDS = 200  # sObject Collections' limit per call
_PREFIXES = {"001": "Account", "01t": "Product2", "801": "Order"}
# An id below every record's (key prefixes start at 001): a cursor "at this time, before any record". Salesforce
# refuses ``Id > ''`` (INVALID_QUERY_FILTER_OPERATOR), so the tie-break needs a well-formed id.
LOWEST_ID = "000000000000000AAA"


@dataclass(slots=True)
class ReadState:
    """Where a stream's read stands (``as_json``/``from_json``): a finished read is its ``cursor``; a read under
    way keeps its ``since`` (where it started), ``started`` (when, for the margin), ``mode`` (rest or bulk,
    decided once) and ``newest`` (the newest record yielded: where a REST read continues)."""

    since: Watermark | None = None
    started: str | None = None
    mode: str | None = None
    newest: Watermark | None = None
    done: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ReadState:
        if not data:
            return cls()
        if data.get("format") != STATE_FORMAT:
            raise ConfigError(f"a saved Salesforce read state has an unknown format: {data.get('format')!r}")
        if "cursor" in data:
            return cls(since=_mark(data["cursor"]))
        return cls(since=_mark(data.get("since")), started=data.get("started"), mode=data.get("mode"),
                   newest=_mark(data.get("newest")))

    @property
    def under_way(self) -> bool:
        return self.started is not None

    def as_json(self) -> dict[str, Any]:
        if self.done:
            return {"format": STATE_FORMAT, "cursor": _pair(self.final_cursor())}
        return {"format": STATE_FORMAT, "since": _pair(self.since), "started": self.started, "mode": self.mode,
                "newest": _pair(self.newest)}

    def continue_from(self) -> Watermark | None:
        """A REST read continues strictly after the newest record it yielded; a Bulk one starts again."""
        return self.newest if self.mode == "rest" and self.newest is not None else self.since

    def saw(self, records: Sequence[dict[str, Any]]) -> None:
        for raw in records:
            stamp, record_id = text(raw.get(MODSTAMP)), text(raw.get("Id"))
            if stamp and record_id:
                self.newest = Watermark(stamp, record_id) if self.newest is None else self.newest.advance(
                    stamp, record_id)

    def final_cursor(self) -> Watermark | None:
        """The newest record read, held back to the read's start less the margin; never before ``since``."""
        if self.newest is None:
            return self.since
        cursor = self.newest
        if self.started is not None:
            limit = dt.datetime.fromisoformat(self.started)
            if cursor.at > limit:
                cursor = Watermark(_sf_time(limit), LOWEST_ID)  # every record stamped from the limit on, again
        if self.since is not None and (cursor.at, cursor.id) < (self.since.at, self.since.id):
            return self.since
        return cursor


class SalesforceReadSource(AsyncResource):
    """``async with SalesforceReadSource(cfg) as src: async for page in src.read("Account", state): ...``."""

    system = "salesforce"
    capabilities = SourceCapabilities(refetch=True, incremental=True)

    def __init__(
        self, config: SalesforceSourceConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.reader = SalesforceSource(config, bulk_read_threshold=config.bulk_read_threshold, transport=transport,
                                       query_batch_size=config.query_batch_size)
        self._client = self.reader._client
        self._standard_pricebook: str | None = None
        self._link_fields: dict[str, str] = {str(k): v for k, v in config.link_back.items()}  # by stream name
        self.read_plans: dict[str, dict[str, Any]] = {}  # per stream: rest or bulk, records, deleted
        self.linked: dict[str, dict[str, int]] = {}  # per stream: ids written back, and refused

    async def aclose(self) -> None:
        await self.reader.aclose()

    @property
    def streams(self) -> Sequence[str]:
        return [s for s in sf.STREAMS if s in self.config.streams]

    @property
    def api_calls(self) -> int:
        return sum(self.reader.api_calls.values())

    # -- the Source contract ---------------------------------------------------------------------

    async def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        """Pages of ``stream`` changed (or deleted) since ``state``; the last page carries the next cursor."""
        _check_stream(stream)
        current = ReadState.from_json(state)
        resumed = current.under_way
        if not resumed:
            margin = dt.timedelta(seconds=self.config.clock_margin_seconds)
            current.started = (dt.datetime.now(dt.UTC) - margin).isoformat()
        since, where = current.continue_from(), self._where(stream)
        if current.mode is None:
            count = await self.reader.count(stream, where=where, since=since, label=f"read:{stream}")
            current.mode = "bulk" if count >= self.config.bulk_read_threshold else "rest"
        plan = self.read_plans.setdefault(stream, {"strategy": current.mode, "records": 0, "deleted": 0})
        pending: tuple[list[dict[str, Any]], dict[str, Any]] | None = None
        batches = self.reader.read(stream, self._fields(stream), since=since, where=where,
                                   bulk=current.mode == "bulk", label=f"read:{stream}", all_rows=True)
        async for batch in batches:
            records = [_clean(r) for r in batch]
            await self._embed(stream, records)
            current.saw(records)
            plan["records"] += len(records)
            plan["deleted"] += sum(1 for r in records if sf.is_deleted(r))
            if pending is not None:
                yield SourcePage(pending[0], pending[1], resumed=resumed)
            pending = (records, current.as_json())
        current.done = True
        yield SourcePage(pending[0] if pending else [], current.as_json(), resumed=resumed)

    async def fetch(self, stream: str, key: str) -> dict[str, Any] | None:
        return (await self.fetch_many(stream, [key])).get(key)

    async def fetch_many(self, stream: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Records by Id as ``read`` yields them (children embedded), ``rest_page_ids`` a query; deleted
        records are absent (``query``, not ``queryAll``)."""
        _check_stream(stream)
        ids = [k for k in dict.fromkeys(keys) if _PREFIXES.get(k[:3]) == stream]
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(ids, self.config.rest_page_ids):
            soql = Select(stream, self._select_fields(stream)).where(in_("Id", chunk)).soql()
            async for page in query_pages(self._client, soql, label=f"fetch:{stream}"):
                records = [_clean(r) for r in page]
                await self._embed(stream, records)
                out.update((sf.record_key(r), r) for r in records)
        return out

    async def probe(self, stream: str, limit: int) -> list[dict[str, Any]]:
        _check_stream(stream)
        query = Select(stream, self._select_fields(stream)).where(self._where(stream)).limit(max(1, limit))
        async for page in query_pages(self._client, query.soql(), label=f"probe:{stream}"):
            records = [_clean(r) for r in page][:limit]
            await self._embed(stream, records)
            return records
        return []

    async def estimate(self, stream: str, state: dict[str, Any] | None) -> int | None:
        _check_stream(stream)
        current = ReadState.from_json(state)
        return await self.reader.count(stream, where=self._where(stream), since=current.continue_from(),
                                       label=f"count:{stream}")

    def identify(self, stream: str, raw: dict[str, Any]) -> tuple[str, str]:
        return sf.record_key(raw), sf.record_version(raw)

    def normalize(self, stream: str, raw: dict[str, Any]) -> Normalized:
        return sf.normalize(stream, raw)

    def locate(self, raw: dict[str, Any]) -> tuple[str, str] | None:
        """A record's sObject by its Id's key prefix."""
        key = text(raw.get("Id")) or ""
        stream = _PREFIXES.get(key[:3])
        return (stream, key) if stream else None

    # -- LinksBack: the target's ids onto the records ----------------------------------------------

    def links_back(self, stream: str) -> bool:
        return stream in self._link_fields

    async def link_back(self, stream: str, links: Sequence[TargetLink]) -> dict[str, dict[str, Any]]:
        """Write each link's target id into the stream's ``link_back`` field where it differs; the records
        changed, read again. A refused update is logged and counted, never raised: the books hold the
        record either way, and the next read of it tries again."""
        field = self._link_fields.get(stream)
        if field is None:
            return {}
        updates = [
            {"attributes": {"type": stream}, "id": link.key, field: target_id}
            for link in links
            if (target_id := next(iter(link.target_ids.values()), None)) is not None
            and text(link.raw.get(field)) != target_id
        ]
        counts = self.linked.setdefault(stream, {"linked": 0, "refused": 0})
        changed: list[str] = []
        for chunk in _chunks(updates, COLLECTION_RECORDS):
            answers = await self._client.json(
                "PATCH", self._client.data_path("/composite/sobjects"), label=f"link:{stream}",
                json={"allOrNone": False, "records": chunk},
            )
            for sent, answer in zip(chunk, answers or [], strict=False):
                if isinstance(answer, dict) and answer.get("success"):
                    changed.append(str(sent["id"]))
                else:
                    errors = answer.get("errors") if isinstance(answer, dict) else answer
                    log.warning("link_back.refused", stream=stream, record=sent["id"], errors=errors)
                    counts["refused"] += 1
        counts["linked"] += len(changed)
        return await self.fetch_many(stream, changed) if changed else {}

    # -- queries -----------------------------------------------------------------------------------

    def _fields(self, stream: str) -> list[str]:
        link = self._link_fields.get(stream)
        return [*sf.FIELDS[stream], *([link] if link else [])]

    def _select_fields(self, stream: str) -> list[str]:
        return list(dict.fromkeys([*self._fields(stream), "Id", MODSTAMP]))

    def _where(self, stream: str) -> Condition | None:
        statuses = self.config.order_statuses
        if stream != "Order" or statuses is None:
            return None
        return in_("Status", statuses)

    async def _embed(self, stream: str, records: list[dict[str, Any]]) -> None:
        ids = [r["Id"] for r in records if r.get("Id") and not sf.is_deleted(r)]
        if not ids:
            return
        by_id = {r["Id"]: r for r in records if r.get("Id")}
        if stream == "Account":
            for contact in await self._children("Contact", "AccountId", ids, sf.CONTACT_FIELDS, "CreatedDate"):
                by_id[contact["AccountId"]].setdefault(sf.CONTACT, contact)  # the first created is the primary
        elif stream == "Product2":
            book = await self._standard_pricebook_id()
            extra = eq("Pricebook2Id", book) if book else None
            for price in await self._children("PricebookEntry", "Product2Id", ids, sf.PRICE_FIELDS, "Id", extra):
                by_id[price["Product2Id"]][sf.PRICE] = price
        elif stream == "Order":
            for item in await self._children("OrderItem", "OrderId", ids, sf.ITEM_FIELDS, "Id"):
                by_id[item["OrderId"]].setdefault(sf.ITEMS, []).append(item)

    async def _children(
        self, sobject: str, parent_field: str, parent_ids: Sequence[str], fields: Sequence[str], order: str,
        extra: Condition | None = None,
    ) -> list[dict[str, Any]]:
        wanted = list(dict.fromkeys([*fields, parent_field, "Id", MODSTAMP]))
        out: list[dict[str, Any]] = []
        for chunk in _chunks(list(parent_ids), self.config.rest_page_ids):
            query = Select(sobject, wanted).where(in_(parent_field, chunk)).where(extra)
            query.order_by(*dict.fromkeys([order, "Id"]))
            async for page in query_pages(self._client, query.soql(), label=f"read:{sobject}"):
                out += [_clean(r) for r in page]
        return out

    async def _standard_pricebook_id(self) -> str | None:
        if self._standard_pricebook is None:
            soql = "SELECT Id FROM Pricebook2 WHERE IsStandard = true LIMIT 1"
            async for page in query_pages(self._client, soql, label="read:Pricebook2"):
                self._standard_pricebook = str(page[0]["Id"]) if page else ""
        return self._standard_pricebook or None


def _clean(raw: dict[str, Any]) -> dict[str, Any]:
    """A record without REST's ``attributes`` (type and URL): what Bulk and REST rows share."""
    return {k: v for k, v in raw.items() if k != "attributes"}


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _mark(pair: Any) -> Watermark | None:
    return Watermark(str(pair[0]), str(pair[1])) if pair else None


def _pair(mark: Watermark | None) -> list[str] | None:
    return [mark.modstamp, mark.id] if mark is not None else None


def _sf_time(moment: dt.datetime) -> str:
    """A datetime as Salesforce writes SystemModstamp: ``2026-12-01T10:00:00.000+0000``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _check_stream(stream: str) -> None:
    if stream not in sf.STREAMS:
        raise ConfigError(f"unknown Salesforce stream {stream!r}; choose from {', '.join(sf.STREAMS)}")
