"""Read customers, products and orders from a WooCommerce store, incrementally, without ever skipping a change.

WooCommerce pages by offset (``page``/``per_page``/``offset``), not by cursor: a record that changes while
a read pages on moves, and every record behind it shifts one place, so asking for "page 2" after an
edit on page 1 silently skips the record that slid onto page 1. So ferry never asks for page 2:

**Orders and products** (``orderby=modified&order=asc``, which WooCommerce sorts as ``modified, ID``):
a keyset is emulated with ``modified_after``. Each request is page 1 of "modified at or after the newest
second of the previous page" (``modified_after`` is exclusive and has one-second resolution, so ferry
sends that second minus one). A record edited mid-read gets a newer time and is met again later in the
same read; one not yet read is still at or after the bound; nothing shifts past a page already read. The
records of the boundary second are served twice; the state remembers their ids (and the engine's staging
ignores a repeated (key, version) anyway).

*A second wider than a page* (a bulk edit stamping more than ``per_page`` records with one second) would
make that request return the same page forever. The read then takes that second alone
(``modified_after = T - 1s``, ``modified_before = T + 1s``) in id order and pages it by ``offset``,
checking each page overlaps the last one: the set of a past second only loses records (an edit moves
one to a newer time, where the main read meets it again), so a record can only move towards the start;
the next request backs up ``OVERLAP`` places and must see the last id read again, else it backs up a
page. Then the main read goes on after ``T``.

**Customers** have no modified filter or order in WooCommerce's API (only ``orderby=id|name|
registered_date``). Every run reads them all in id order, by ``offset`` with the same overlap check
(records are only appended at the end or removed), and yields those modified at or after the cursor.

**The cursor** (the final state) follows the Shopify reader's clock-margin rule: a change is stamped at
most ``CLOCK_MARGIN`` before it becomes visible, so a page served at the store's time T (its ``Date``
header) can only have passed over a change stamped at or after ``T - margin``. The cursor moves to the
newest version read but never past the smallest ``T - margin`` of a page that reached the present; the
next run's lower bound is inclusive. For customers, read whole, the cursor is the first page's
``T - margin``: what changed after it is met by the next run.

Times are UTC throughout: versions come from ``date_modified_gmt`` and ``modified_after`` is sent with
``dates_are_gmt=true``. (``date_modified`` and a bare ``modified_after`` are in the store's timezone.)

A variable product's variations are fetched (``products/{id}/variations``, one call per 100) and
embedded in the product under ``_variations``: the normalizer needs them, and a product and its
variants are one record to stage and to replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.woocommerce import normalize as woo
from ferry.connectors.woocommerce.client import ListPage, WooCommerceClient
from ferry.connectors.woocommerce.config import ALL_STREAMS, WooCommerceConfig
from ferry.core.contracts import Normalized, SourceCapabilities, SourcePage
from ferry.errors import ConfigError
from ferry.model.values import MIN_VERSION

log = structlog.get_logger("ferry.connectors.woocommerce")

CLOCK_MARGIN = dt.timedelta(seconds=5)
OVERLAP = 3  # how far an offset page backs up into the previous one, to prove nothing slid past it
MODIFIED_ORDERED = ("orders", "products")
VARIATION_FETCHES = 4  # variation lists fetched at once for one page of products
STATE_FORMAT = 1
_SECOND = dt.timedelta(seconds=1)
_SECOND_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(slots=True)
class ReadState:
    """Where a read stands: the JSON a ``SourcePage`` carries (``as_json``/``from_json``).

    ``cursor`` alone (``done``) is a finished read: the next one starts there. Otherwise ``after`` is the
    main read's inclusive lower second, ``seen`` the ids already yielded at that second, ``tie`` the
    second being paged by id (``tie_last_id``/``tie_offset``: last id yielded and its position after),
    ``last_id``/``offset`` the same for a customers read, ``newest`` the newest version yielded and
    ``reached`` the smallest ``T - margin`` of a page that reached the present.
    """

    since: str | None = None
    done: bool = False
    after: str | None = None
    seen: list[str] = field(default_factory=list)
    tie: str | None = None
    tie_last_id: int = 0
    tie_offset: int = 0
    last_id: int = 0
    offset: int = 0
    newest: str | None = None
    reached: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ReadState:
        if not data:
            return cls()
        if data.get("format") != STATE_FORMAT:
            raise ConfigError(f"a saved WooCommerce read state has an unknown format: {data.get('format')!r}")
        if "cursor" in data:
            return cls(since=data["cursor"], after=data["cursor"])
        fields = {k: data[k] for k in cls.__slots__ if k in data}
        return cls(**fields)

    def as_json(self) -> dict[str, Any]:
        if self.done:
            return {"format": STATE_FORMAT, "cursor": self.final_cursor()}
        data = {k: getattr(self, k) for k in self.__slots__}
        return {"format": STATE_FORMAT, **data}

    def final_cursor(self) -> str | None:
        """The newest version read, never past where the read reached the present; the old cursor if nothing."""
        cursor = self.newest if self.newest is not None else self.since
        if cursor is not None and self.reached and self.reached < cursor:
            cursor = self.reached
        return cursor

    def saw(self, versions: Sequence[str], server_time: str | None) -> None:
        """Account for a page's versions: the newest yet, and whether (and when) it reached the present."""
        page_newest = max(versions, default=None)
        if page_newest is not None and (self.newest is None or page_newest > self.newest):
            self.newest = page_newest
        start = read_start(server_time)
        if page_newest is not None and page_newest >= start and (self.reached is None or start < self.reached):
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
        pages = self._customer_pages(current) if stream == "customers" else self._modified_pages(stream, current)
        async for records in pages:
            yield SourcePage(records, current.as_json(), resumed=resumed)

    async def fetch(self, stream: str, key: str) -> dict[str, Any] | None:
        """One record again by id, as ``read`` yields it; None when the store no longer has it (or for a guest)."""
        _check_stream(stream)
        if not key.isdigit():
            return None  # guests ("guest:...") and id-less records ("missing-id:...") have nothing to fetch
        record = await self._client.get_one(f"{stream}/{key}", label=stream)
        if record is not None and stream == "products":
            await self._embed_variations([record])
        return record

    def identify(self, stream: str, raw: dict[str, Any]) -> tuple[str, str]:
        return woo.record_key(raw), woo.record_version(stream, raw)

    def normalize(self, stream: str, raw: dict[str, Any]) -> Normalized:
        return woo.normalize(stream, raw)

    def locate(self, raw: dict[str, Any]) -> tuple[str, str] | None:
        """A raw record's stream by its shape (ferry always stores WooCommerce records with their stream)."""
        stream = "orders" if "line_items" in raw else "products" if "type" in raw and "slug" in raw else None
        if stream is None and "email" in raw and "role" in raw:
            stream = "customers"
        return (stream, woo.record_key(raw)) if stream else None

    # -- orders and products: modified order, keyset emulated by modified_after --------------------

    async def _modified_pages(self, stream: str, state: ReadState) -> AsyncIterator[list[dict[str, Any]]]:
        while not state.done:
            if state.tie is not None:
                yield await self._tie_page(stream, state)
                continue
            page = await self._client.list_page(stream, {**self._modified_params(stream, state.after), "page": 1})
            seen = set(state.seen)
            fresh = [r for r in page.records if woo.record_key(r) not in seen]
            self._advance(state, page)
            if stream == "products":
                await self._embed_variations(fresh)
            state.saw([woo.modified_version(r) for r in fresh], page.server_time)
            yield fresh

    def _advance(self, state: ReadState, page: ListPage) -> None:
        """Where the main read goes after ``page``: done, on after its newest second, or into that second alone."""
        if self._is_last(page, 0):
            state.done = True
            return
        newest = _second(max(woo.modified_version(r) for r in page.records))
        if state.after is None or newest > _second(state.after):
            state.after = newest + ".000000Z"
            state.seen = [woo.record_key(r) for r in page.records if _second(woo.modified_version(r)) == newest]
        else:  # a whole page within one second: page that second by id (module docstring)
            state.tie, state.tie_last_id, state.tie_offset = newest, 0, 0
            log.info("read.tie_second", second=newest, page_size=self.config.page_size)

    async def _tie_page(self, stream: str, state: ReadState) -> list[dict[str, Any]]:
        assert state.tie is not None
        params = self._modified_params(stream, state.tie + ".000000Z")
        params |= {"orderby": "id", "modified_before": _shift(state.tie, _SECOND)}
        page, offset = await self._overlapping_page(stream, params, state.tie_last_id, state.tie_offset)
        new = [r for r in page.records if _int_id(r) > state.tie_last_id]
        if new:
            state.tie_last_id = max(_int_id(r) for r in new)
        seen = set(state.seen)  # the main read's last page yielded these already
        fresh = [r for r in new if woo.record_key(r) not in seen]
        state.tie_offset = offset + len(page.records)
        if self._is_last(page, offset):  # the second is read: go on after it
            state.after, state.seen = _shift(state.tie, _SECOND) + ".000000Z", []
            state.tie, state.tie_last_id, state.tie_offset = None, 0, 0
        if stream == "products":
            await self._embed_variations(fresh)
        state.saw([woo.modified_version(r) for r in fresh], page.server_time)
        return fresh

    def _modified_params(self, stream: str, after: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "per_page": self.config.page_size,
            "orderby": "modified",
            "order": "asc",
            "status": "any",  # orders default to "any" too, but say it: a draft product or a failed order counts
            "dates_are_gmt": "true",  # modified_after is then UTC, like the versions; else the store's timezone
        }
        if after is not None and _second(after) > _second(MIN_VERSION):
            # modified_after is exclusive: one second less makes it "at or after ``after``'s second".
            params["modified_after"] = _shift(_second(after), -_SECOND)
        return params

    # -- customers: everything, in id order, offset paging with an overlap check ------------------

    async def _customer_pages(self, state: ReadState) -> AsyncIterator[list[dict[str, Any]]]:
        # The default role filter ("customer") is kept: shop staff are WordPress users too, not customers.
        params = {"per_page": self.config.page_size, "orderby": "id", "order": "asc"}
        while not state.done:
            page, offset = await self._overlapping_page("customers", params, state.last_id, state.offset)
            fresh = [r for r in page.records if _int_id(r) > state.last_id]
            if fresh:
                state.last_id = max(_int_id(r) for r in fresh)
            state.offset = offset + len(page.records)
            state.done = self._is_last(page, offset)
            if state.reached is None:  # the whole set is read from here on: later changes are the next run's
                state.reached = read_start(page.server_time)
            changed = [r for r in fresh if state.since is None or woo.modified_version(r) >= state.since]
            versions = [woo.modified_version(r) for r in changed]
            if versions and (state.newest is None or max(versions) > state.newest):
                state.newest = max(versions)
            yield changed

    def _is_last(self, page: ListPage, offset: int) -> bool:
        """Whether nothing follows ``page`` (served from ``offset``). ``X-WP-Total`` decides when sent: a short
        page alone does not prove it (a plugin may cap ``per_page``), and a full one may be the last."""
        if not page.records:
            return True
        if page.total is not None:
            return offset + len(page.records) >= page.total
        return len(page.records) < self.config.page_size

    async def _overlapping_page(
        self, resource: str, params: dict[str, Any], last_id: int, offset: int
    ) -> tuple[ListPage, int]:
        """The id-ordered page after ``last_id`` (at position ``offset``), proven not to have skipped a record.

        Records only leave the set before ``last_id`` (or are appended after it), so it can only have moved
        towards the start: the page starts ``OVERLAP`` places early and must include an id at or before
        ``last_id``; when it does not, more than ``OVERLAP`` records left, and it backs up a whole page."""
        start = max(0, offset - OVERLAP)
        while True:
            page = await self._client.list_page(resource, {**params, "offset": start}, label=resource)
            if start == 0 or (page.records and min(_int_id(r) for r in page.records) <= last_id):
                return page, start
            start = max(0, start - self.config.page_size)

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
            page = await self._client.list_page(
                f"products/{product_id}/variations", {**params, "page": page_number}, label="variations"
            )
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


def _int_id(raw: dict[str, Any]) -> int:
    value = raw.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_stream(stream: str) -> None:
    if stream not in woo.STREAMS:
        raise ConfigError(f"unknown WooCommerce stream {stream!r}; choose from {', '.join(woo.STREAMS)}")
