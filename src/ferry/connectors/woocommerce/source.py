"""Read customers, products and orders from a WooCommerce store, incrementally, without ever skipping a change.

WooCommerce pages by offset (``page``/``per_page``/``offset``), not by cursor: a record that changes while
a read pages on moves to the end of the order, every record behind it shifts one place towards the start,
and asking for "page 2" then skips the record that slid onto page 1. ferry pages by offset but *proves*
each page continues the last one:

**Offset pages anchored on what was read.** A read keeps one filter and one order for its whole length
(orders and products: ``modified_after`` the cursor, ``orderby=modified&order=asc``; customers: everything,
``orderby=id&order=asc``). Records only ever leave the part already read (an edit moves one to the end,
where this read meets it again at its new version; a deletion removes it); new changes sort at the end.
So the unread part can only move towards the start. Each request starts ``OVERLAP`` places before where
the last page ended and must contain one of that page's last records at the *same version* (an anchor:
a record whose version is unchanged has not moved); what follows the anchor is new. No anchor: more than
``OVERLAP`` records left, and the request backs up a page (down to offset 0, which cannot skip).

Why not a keyset emulated by moving ``modified_after`` to each page's newest time: WordPress sorts posts
(products, and orders without HPOS) by the *local* ``post_modified`` but filters ``dates_are_gmt=true`` on
``post_modified_gmt``; in the hour a DST change repeats, the two orders disagree and a bound taken from one
skips records of the other. A second with more changes than a page would also stall such a read. Offsets
with anchors depend on neither: the filter never moves during a read, and ties are just positions.

**Customers** have no modified filter or order in WooCommerce's API (only ``orderby=id|include|name|
registered_date``): every run reads them all, in id order, and yields those modified at or after the
cursor (the rest were yielded before).

**The cursor** (the final state) follows the Shopify reader's clock-margin rule: a change is stamped at
most ``CLOCK_MARGIN`` before it becomes visible, so a page served at the store's time T (its ``Date``
header) can only have passed over a change stamped at or after ``T - margin``. The cursor moves to the
newest version read but never past the smallest ``T - margin`` of a page that reached the present, and
the next run's lower bound is inclusive (``modified_after`` is exclusive and whole seconds: ferry sends
the cursor's second minus one). Customers, read whole, start the next run at the first page's
``T - margin`` at the latest.

Times are UTC throughout: versions come from ``date_modified_gmt`` and ``modified_after`` is sent with
``dates_are_gmt=true`` (``date_modified`` and a bare ``modified_after`` are in the store's timezone).

A variable product's variations are fetched (``products/{id}/variations``, one call per 100) and
embedded in the product under ``_variations``: the normalizer needs them, and a product and its
variants are one record to stage and to replay. A variation saved through WooCommerce's CRUD queues a
deferred sync that saves its parent, bumping the parent's modified time, so the product is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.woocommerce import normalize as woo
from ferry.connectors.woocommerce.client import ListPage, WooCommerceClient, is_not_found
from ferry.connectors.woocommerce.config import ALL_STREAMS, WooCommerceConfig
from ferry.core.contracts import Normalized, SourceCapabilities, SourcePage
from ferry.errors import ConfigError, PermanentError
from ferry.model.values import MIN_VERSION, SETTLE_SECONDS, seen_version

log = structlog.get_logger("ferry.connectors.woocommerce")

CLOCK_MARGIN = dt.timedelta(seconds=SETTLE_SECONDS)  # the same window makes a record seen in it unsettled
OVERLAP = 5  # how far a page backs up into the last one, for an anchor proving nothing slid past it
VARIATION_FETCHES = 4  # variation lists (or pages of records by id) fetched at once
STATE_FORMAT = 2
INCLUDE_PER_CALL = 100  # WooCommerce's largest per_page: include=... of more ids would be cut
_SECOND = dt.timedelta(seconds=1)
_SECOND_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(slots=True)
class ReadState:
    """Where a read stands: the JSON a ``SourcePage`` carries (``as_json``/``from_json``).

    A finished read is its ``cursor`` alone: the next read starts there (``since``). A read under way
    keeps its ``since`` (its filter), ``offset`` (where the last page ended), ``tail`` (that page's last
    records as [key, version]: the anchors the next page must show), ``newest`` (the newest version
    yielded) and ``reached`` (the smallest ``T - margin`` of a page that reached the present).
    """

    since: str | None = None
    done: bool = False
    offset: int = 0
    tail: list[list[str]] = field(default_factory=list)
    newest: str | None = None
    reached: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ReadState:
        if not data:
            return cls()
        if data.get("format") != STATE_FORMAT:
            raise ConfigError(f"a saved WooCommerce read state has an unknown format: {data.get('format')!r}")
        if "cursor" in data:
            return cls(since=data["cursor"])
        return cls(**{k: data[k] for k in ("since", "offset", "tail", "newest", "reached") if k in data})

    def as_json(self) -> dict[str, Any]:
        if self.done:
            return {"format": STATE_FORMAT, "cursor": self.final_cursor()}
        return {
            "format": STATE_FORMAT,
            "since": self.since,
            "offset": self.offset,
            "tail": self.tail,
            "newest": self.newest,
            "reached": self.reached,
        }

    def final_cursor(self) -> str | None:
        """The newest version read, never past where the read reached the present; the old cursor if nothing."""
        cursor = self.newest if self.newest is not None else self.since
        if cursor is not None and self.reached and self.reached < cursor:
            cursor = self.reached
        return cursor

    def saw(self, versions: Sequence[str], server_time: str | None, *, whole: bool = False) -> None:
        """Account for a page's versions: the newest yet, and whether (and when) it reached the present.
        ``whole``: the read takes every record, so its first page bounds the cursor whatever it holds."""
        page_newest = max(versions, default=None)
        if page_newest is not None and (self.newest is None or page_newest > self.newest):
            self.newest = page_newest
        start = read_start(server_time)
        reached = whole or (page_newest is not None and page_newest >= start)
        if reached and (self.reached is None or start < self.reached):
            self.reached = start


class WooCommerceSource(AsyncResource):
    """``async with WooCommerceSource(cfg) as src: async for page in src.read("orders", state): ...``."""

    system = "woocommerce"
    capabilities = SourceCapabilities(refetch=True, incremental=True)

    def __init__(self, config: WooCommerceConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._client = WooCommerceClient(config, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def streams(self) -> Sequence[str]:
        return [s for s in ALL_STREAMS if s in self.config.streams]

    @property
    def api_calls(self) -> int:
        return self._client.api_calls

    # -- the Source contract ---------------------------------------------------------------------

    async def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        """Pages of ``stream`` changed since ``state``; each page's state continues the read after it."""
        _check_stream(stream)
        current = ReadState.from_json(state)
        resumed = bool(state) and "cursor" not in (state or {})  # a read that died, continued
        async for records in self._pages(stream, current):
            yield SourcePage(records, current.as_json(), resumed=resumed)

    async def fetch(self, stream: str, key: str) -> dict[str, Any] | None:
        """One record again by id, as ``read`` yields it; None when the store no longer has it (or for a guest)."""
        _check_stream(stream)
        if not key.isdigit():
            return None  # guests ("guest:...") and id-less records ("missing-id:...") have nothing to fetch
        record = await self._client.get_one(f"{stream}/{key}", label=stream)
        if record is not None and stream == "products":
            await self._embed_variations([record])
        if record is not None:
            woo.mark_unsettled(stream, [record])  # seen now
        return record

    async def fetch_many(self, stream: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Records by id through the list endpoint's ``include`` filter, 100 a call (WooCommerce's largest
        ``per_page``), as ``fetch`` gives them; ids the store no longer has are absent."""
        _check_stream(stream)
        ids = [k for k in dict.fromkeys(keys) if k.isdigit()]  # guests and id-less records cannot be fetched
        # Every status but trash, every role: what ``fetch`` of the record by id would find.
        scope = {"role": "all"} if stream == "customers" else {"status": "any"}
        out: dict[str, dict[str, Any]] = {}
        gate = asyncio.Semaphore(VARIATION_FETCHES)

        async def fetch(chunk: list[str]) -> None:
            params = scope | {"include": ",".join(chunk), "per_page": INCLUDE_PER_CALL, "orderby": "id"}
            async with gate:
                page = await self._client.list_page(stream, params, label=stream)
            if stream == "products":
                await self._embed_variations(page.records)
            out.update((woo.record_key(r), r) for r in page.records)

        await asyncio.gather(*(fetch(ids[i : i + INCLUDE_PER_CALL]) for i in range(0, len(ids), INCLUDE_PER_CALL)))
        woo.mark_unsettled(stream, list(out.values()))  # seen now
        return out

    async def probe(self, stream: str, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` records of the stream as a read orders them, one call (variations not embedded)."""
        _check_stream(stream)
        params = self._list_params(stream, None) | {"per_page": max(1, min(limit, INCLUDE_PER_CALL))}
        return (await self._client.list_page(stream, params, label=stream)).records

    async def estimate(self, stream: str, state: dict[str, Any] | None) -> int | None:
        """``X-WP-Total`` of the read's filter (one call of one record). Customers have no modified filter:
        their count is every customer, an upper bound of what a read yields."""
        _check_stream(stream)
        params = self._list_params(stream, ReadState.from_json(state).since) | {"per_page": 1}
        return (await self._client.list_page(stream, params, label=stream)).total

    def identify(self, stream: str, raw: dict[str, Any]) -> tuple[str, str]:
        return woo.record_key(raw), seen_version(raw, woo.record_version(stream, raw))

    def normalize(self, stream: str, raw: dict[str, Any]) -> Normalized:
        return woo.normalize(stream, raw)

    def locate(self, raw: dict[str, Any]) -> tuple[str, str] | None:
        """A raw record's stream by its shape (ferry always stores WooCommerce records with their stream)."""
        stream = "orders" if "line_items" in raw else "products" if "type" in raw and "slug" in raw else None
        if stream is None and "email" in raw and "role" in raw:
            stream = "customers"
        return (stream, woo.record_key(raw)) if stream else None

    # -- reading: offset pages, each proven to continue the last (module docstring) --------------

    async def _pages(self, stream: str, state: ReadState) -> AsyncIterator[list[dict[str, Any]]]:
        params = self._list_params(stream, state.since)
        while not state.done:
            page, start, new = await self._anchored_page(stream, params, state)
            state.offset = start + len(page.records)
            if page.records:
                state.tail = [[woo.record_key(r), woo.modified_version(r)] for r in page.records[-OVERLAP:]]
            state.done = self._is_last(page, start)
            if stream == "customers":  # read whole: only what changed since the cursor is news
                new = [r for r in new if state.since is None or woo.modified_version(r) >= state.since]
            elif stream == "products":
                await self._embed_variations(new)
            state.saw([woo.modified_version(r) for r in new], page.server_time, whole=stream == "customers")
            woo.mark_unsettled(stream, new, read_start(page.server_time), time.time())
            yield new

    async def _anchored_page(
        self, resource: str, params: dict[str, Any], state: ReadState
    ) -> tuple[ListPage, int, list[dict[str, Any]]]:
        """The page after ``state.offset``, its start, and its records after the anchor (the new ones)."""
        anchors = {key: rank for rank, (key, _) in enumerate(state.tail)}
        versions = dict((key, version) for key, version in state.tail)
        start = max(0, state.offset - len(state.tail))
        while True:
            page = await self._client.list_page(resource, {**params, "offset": start}, label=resource)
            if not anchors:
                return page, start, page.records
            found = [
                (anchors[key], index)
                for index, r in enumerate(page.records)
                if (key := woo.record_key(r)) in anchors and woo.modified_version(r) == versions[key]
            ]
            if found:
                _, index = max(found)  # the latest record of the last page still where it was
                return page, start, page.records[index + 1 :]
            if start == 0:  # every anchor moved or went: from the start again (re-reads, never skips)
                log.warning("read.anchors_lost", stream=resource, offset=state.offset)
                return page, start, page.records
            start = max(0, start - self.config.page_size)
            log.info("read.back_up", stream=resource, offset=start)

    def _list_params(self, stream: str, since: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"per_page": self.config.page_size, "order": "asc"}
        if stream == "customers":
            # Only orderby=id is stable. The default role filter ("customer") stays: shop staff are users too.
            return params | {"orderby": "id"}
        params |= {
            "orderby": "modified",  # WooCommerce adds the id: (modified, id), a total order
            "status": "any",  # a draft product, a failed order: every status but trash
            "dates_are_gmt": "true",  # modified_after is then UTC, like the versions; else the store's timezone
        }
        if since is not None and _second(since) > _second(MIN_VERSION):
            # modified_after is exclusive and in whole seconds: one second less is "at or after the cursor".
            params["modified_after"] = _shift(_second(since), -_SECOND)
        return params

    def _is_last(self, page: ListPage, offset: int) -> bool:
        """Whether nothing follows ``page`` (served from ``offset``). ``X-WP-Total`` decides when sent: a short
        page alone does not prove it (a plugin may cap ``per_page``), and a full one may be the last."""
        if not page.records:
            return True
        if page.total is not None:
            return offset + len(page.records) >= page.total
        return len(page.records) < self.config.page_size

    # -- products' variations -----------------------------------------------------------------------

    async def _embed_variations(self, products: list[dict[str, Any]]) -> None:
        variable = [p for p in products if p.get("type") == "variable" and woo.record_key(p).isdigit()]
        gate = asyncio.Semaphore(VARIATION_FETCHES)

        async def embed(product: dict[str, Any]) -> None:
            async with gate:
                product[woo.VARIATIONS_KEY] = await self._variations(woo.record_key(product))

        await asyncio.gather(*(embed(p) for p in variable))

    async def _variations(self, product_id: str) -> list[dict[str, Any]]:
        """Every variation of one product (they are few: read by page, id order, nothing to keep in state)."""
        out: list[dict[str, Any]] = []
        params = {"per_page": 100, "orderby": "id", "order": "asc"}
        page_number = 1
        while True:
            try:
                page = await self._client.list_page(
                    f"products/{product_id}/variations", {**params, "page": page_number}, label="variations"
                )
            except PermanentError as exc:
                if not is_not_found(exc):
                    raise
                return out  # the product was deleted since it was listed: what it had is all there is
            out += page.records
            if len(page.records) < 100 or (page.total_pages is not None and page_number >= page.total_pages):
                return out
            page_number += 1


def read_start(server_time: str | None) -> str:
    """The store's clock (``Date``), less the margin, as a version; our clock when the store sent none."""
    now = dt.datetime.now(dt.UTC)
    if server_time:
        with contextlib.suppress(ValueError):
            now = dt.datetime.fromisoformat(server_time.replace("Z", "+00:00"))
    return (now - CLOCK_MARGIN).strftime(_SECOND_FORMAT) + ".000000Z"


def _second(version: str) -> str:
    return version[:19]


def _shift(second: str, delta: dt.timedelta) -> str:
    return (dt.datetime.strptime(second, _SECOND_FORMAT) + delta).strftime(_SECOND_FORMAT)


def _check_stream(stream: str) -> None:
    if stream not in woo.STREAMS:
        raise ConfigError(f"unknown WooCommerce stream {stream!r}; choose from {', '.join(woo.STREAMS)}")
