"""Shopify as a ferry Source: customers, products and orders read page by page in updated_at order, records untouched.

What a read needs to stay correct (the order, the cursor rule, older ferry reads) is in ``reader.py``; how a
record becomes canonical is in ``normalize.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.shopify import normalize as shopify_normalize
from ferry.connectors.shopify.client import ShopifyClient
from ferry.connectors.shopify.config import ShopifyConfig
from ferry.connectors.shopify.gql_client import ShopifyGraphQL
from ferry.connectors.shopify.gql_reader import GraphQLReads
from ferry.connectors.shopify.reader import ReadState, ShopifyPage, read_stream
from ferry.core.contracts import SourceCapabilities, SourcePage
from ferry.errors import ConfigError, PermanentError

STREAMS = ("customers", "products", "orders")
# Every stream is read oldest change first. Shopify's page_info cursors are keyset ranges over the sort
# column and the id, so a record edited while a read pages on gets a newer updated_at and sorts after
# every page already served: the same read meets it again, at its new version, on a later page.
READ_ORDER = "updated_at asc"
IDS_PER_CALL = 250  # the list endpoints' largest page: ids=... of more would be cut
FETCHES_IN_FLIGHT = 4
_SINGULAR = {"customers": "customer", "products": "product", "orders": "order"}


class ShopifySource(AsyncResource):
    """``async with ShopifySource(cfg) as src: async for page in src.read("orders", state)``."""

    system = "shopify"
    capabilities = SourceCapabilities(refetch=True, incremental=True)

    def __init__(
        self,
        config: ShopifyConfig,
        *,
        leak_rate: float = 2.0,
        throttle: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._client = ShopifyClient(config, leak_rate=leak_rate, throttle=throttle, transport=transport)
        self._graphql: GraphQLReads | None = None
        if config.api == "graphql":
            client = ShopifyGraphQL(config, transport=transport)
            self._graphql = GraphQLReads(
                client,
                page_size=config.page_size,
                bulk_threshold=config.bulk_threshold,
                bulk_page_size=config.bulk_page_size,
                version=shopify_normalize.record_version,
                api_version=config.api_version,
                streams=config.streams,
                bulk_split_min=config.bulk_split_min,
            )

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._graphql is not None:
            await self._graphql.client.aclose()

    @property
    def api(self) -> str:
        return self.config.api

    @property
    def read_plans(self) -> dict[str, dict[str, Any]]:
        """How each stream was read in this run (GraphQL: "bulk" or "paged", with the store's count)."""
        if self._graphql is None:
            return {stream: {"stream": stream, "mode": "rest-pages", "expected": None} for stream in self.streams}
        return {stream: plan.as_json() for stream, plan in self._graphql.plans.items()}

    async def plan_read(self, stream: str, state: dict[str, Any] | None) -> dict[str, Any]:
        """What a read of ``stream`` from ``state`` would do (for ``ferry plan``): one count query on GraphQL."""
        _check_stream(stream)
        if self._graphql is None:
            return {"stream": stream, "mode": "rest-pages", "expected": None}
        return (await self._graphql.plan(stream, state)).as_json()

    async def prepare_reads(self, states: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
        """Before a run's reads (GraphQL): one count query for every stream, the bulk operations started together
        where the API version allows; the states to save before reading (streams whose operation started).
        REST reads need nothing ahead."""
        if self._graphql is None:
            return {}
        return await self._graphql.prepare({s: states.get(s) for s in self.streams})

    @property
    def streams(self) -> Sequence[str]:
        return tuple(self.config.streams)

    def select_entities(self, entities: frozenset[str]) -> frozenset[str]:
        """Read only for ``entities`` (``SelectsEntities``). Over GraphQL, a pipeline that maps no ``refund``
        reads no refunds: an order's ``total_refunded`` comes from its own ``totalRefundedSet`` and no refund's
        line items are read (a node query per ~100 refunds, paced at the plan's restore rate). REST's order pages
        carry refunds at no extra call: REST reads as before. The entities no longer read whole."""
        if self._graphql is None or "orders" not in self.streams:
            return frozenset()
        return self._graphql.select(entities)

    @property
    def api_calls(self) -> int:
        extra = self._graphql.client.api_calls if self._graphql is not None else 0
        return self._client.api_calls + extra

    @property
    def throttled_seconds(self) -> float:
        """Time spent waiting for the leaky bucket to drain (before, not after, a 429)."""
        paced = self._graphql.client.pacer.waited_seconds if self._graphql is not None else 0.0
        return self._client.bucket.waited_seconds + paced

    def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        """The stream's pages changed since ``state``'s cursor (or continuing the read it holds), each page with
        the state after it (``reader.ReadState`` as JSON)."""
        _check_stream(stream)
        if self._graphql is not None:
            return self._graphql.read(stream, state)
        return read_stream(self, stream, state, shopify_normalize.record_version)

    async def read_pages(
        self, stream: str, *, updated_at_min: str | None = None, resume_url: str | None = None
    ) -> AsyncIterator[ShopifyPage]:
        """Each page of raw Shopify records in updated_at order, each record exactly as sent, with where the next
        page starts (a saved link can be resumed) and the store's clock."""
        _check_stream(stream)
        params = self._first_page_params(stream, updated_at_min)
        async for records, response in self._client.pages(stream, params, start_url=resume_url):
            yield ShopifyPage(records, self._client.next_url(response), _server_time(response.headers.get("Date")))

    async def fetch(self, stream: str, key: str) -> dict[str, Any] | None:
        """One record by id, as sent (marked unsettled when changed just now); None when the store no longer
        has it (404)."""
        record = await self._fetch(stream, key)
        if record is not None:
            shopify_normalize.mark_unsettled(stream, [record])  # seen now
        return record

    async def _fetch(self, stream: str, key: str) -> dict[str, Any] | None:
        _check_stream(stream)
        if self._graphql is not None:
            return await self._graphql.fetch(stream, key) if key.isdigit() else None
        if not key.isdigit():
            return None  # ids are numeric; anything else (a content hash for a record without id) cannot be fetched
        path = self._client.resource_path(f"{stream}/{key}")
        try:
            response = await self._client.http.request("GET", path, label=stream)
        except PermanentError as exc:
            if exc.code == "HTTP_404" or "HTTP 404" in str(exc):
                return None
            raise
        body = response.json()
        record = body.get(_SINGULAR[stream]) if isinstance(body, dict) else None
        if not isinstance(record, dict):
            raise PermanentError(f"GET {path}: no '{_SINGULAR[stream]}' object in the response")
        return record

    async def fetch_many(self, stream: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Records by id through the list endpoint's ``ids`` filter, up to a page (250) a call, each exactly as
        sent; ids the store no longer has are absent."""
        _check_stream(stream)
        ids = [k for k in dict.fromkeys(keys) if k.isdigit()]  # content-hash keys cannot be fetched
        out: dict[str, dict[str, Any]] = {}
        gate = asyncio.Semaphore(FETCHES_IN_FLIGHT)  # the leaky bucket paces them; this bounds memory

        async def fetch(chunk: list[str]) -> None:
            params: dict[str, Any] = {"ids": ",".join(chunk), "limit": IDS_PER_CALL}
            if stream == "orders":
                params["status"] = "any"  # the default "open" would hide closed and cancelled orders
            async with gate:
                async for records, _ in self._client.pages(stream, params):
                    out.update((str(r["id"]), r) for r in records if r.get("id") is not None)

        await asyncio.gather(*(fetch(ids[i : i + IDS_PER_CALL]) for i in range(0, len(ids), IDS_PER_CALL)))
        shopify_normalize.mark_unsettled(stream, list(out.values()))  # seen now
        return out

    async def probe(self, stream: str, limit: int) -> list[dict[str, Any]]:
        """The stream's first ``limit`` records (oldest change first), one call: it fails as a read would."""
        _check_stream(stream)
        params = self._first_page_params(stream, None) | {"limit": max(1, min(limit, IDS_PER_CALL))}
        response = await self._client.http.request("GET", self._client.resource_path(stream), params=params,
                                                   label=stream)
        return self._client.records_of(response, stream)

    async def estimate(self, stream: str, state: dict[str, Any] | None) -> int | None:
        """Records changed since the state's lower bound, by the stream's ``count.json`` (one call)."""
        _check_stream(stream)
        saved = ReadState.parse(state)
        since = saved.read.since if saved.read is not None else saved.cursor
        params: dict[str, Any] = {"status": "any"} if stream == "orders" else {}
        if since:
            params["updated_at_min"] = since
        response = await self._client.http.request(
            "GET", self._client.resource_path(f"{stream}/count"), params=params, label=stream
        )
        body = response.json()
        count = body.get("count") if isinstance(body, dict) else None
        return int(count) if isinstance(count, int) else None

    # The record's id (a content hash when it has none) and its updated_at as a version; and its canonical
    # records. The normalizer's functions themselves, not methods calling them: both run once per record.
    identify = staticmethod(shopify_normalize.identify)
    normalize = staticmethod(shopify_normalize.normalize)
    # An order's customer and products (RefersTo): ferry serve fetches those the target lacks before the order.
    references = staticmethod(shopify_normalize.references)

    def stream_entities(self, stream: str) -> Sequence[str]:
        """The entities ``normalize`` can yield for ``stream`` (a batch run loads by it while reading on)."""
        _check_stream(stream)
        return shopify_normalize.STREAM_ENTITIES[stream]

    def locate(self, raw: dict[str, Any]) -> tuple[str, str] | None:
        """Stream and id of a raw record stored without them (dead letters of older ferry versions), by its shape:
        an order has line items, a product variants."""
        if raw.get("id") is None:
            return None
        stream = "orders" if "line_items" in raw else "products" if "variants" in raw else "customers"
        return stream, str(raw["id"])

    def _first_page_params(self, stream: str, since: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": self.config.page_size, "order": READ_ORDER}
        if stream == "orders":
            params["status"] = "any"  # the default "open" would silently skip closed and cancelled orders
        if since:
            params["updated_at_min"] = since
        return params


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise ConfigError(f"unknown Shopify stream {stream!r}; choose from {', '.join(STREAMS)}")


def _server_time(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return None
