"""Read customers, products and orders from a Shopify store, page by page, in updated_at order, records untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.shopify.client import ShopifyClient
from ferry.connectors.shopify.config import ShopifyConfig
from ferry.errors import ConfigError, PermanentError

STREAMS = ("customers", "products", "orders")
# Every stream is read oldest change first. Shopify's page_info cursors are keyset ranges over the sort
# column and the id, so a record edited while a read pages on gets a newer updated_at and sorts after
# every page already served: the same read meets it again, at its new version, on a later page.
READ_ORDER = "updated_at asc"
_SINGULAR = {"customers": "customer", "products": "product", "orders": "order"}


@dataclass(slots=True)
class SourcePage:
    records: list[dict[str, Any]]
    next_url: str | None  # where the following page starts; save it to continue a read after a crash
    server_time: str | None  # the store's clock (``Date`` header) as ``YYYY-MM-DDTHH:MM:SSZ``, if it sent one


class ShopifySource(AsyncResource):
    """``async with ShopifySource(cfg) as src: async for page in src.read("orders", ...)``."""

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
        self.last_page_url: str | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def api_calls(self) -> int:
        return self._client.api_calls

    @property
    def throttled_seconds(self) -> float:
        """Time spent waiting for the leaky bucket to drain (before, not after, a 429)."""
        return self._client.bucket.waited_seconds

    async def read(
        self, stream: str, *, updated_at_min: str | None = None, updated_at_max: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page of raw Shopify records, oldest request first, each record exactly as sent."""
        if stream not in STREAMS:
            raise ConfigError(f"unknown Shopify stream {stream!r}; choose from {', '.join(STREAMS)}")
        params = self._first_page_params(stream, updated_at_min, updated_at_max)
        async for records, response in self._client.pages(stream, params):
            self.last_page_url = str(response.request.url.copy_with(query=None))
            yield records

    async def read_pages(
        self, stream: str, *, updated_at_min: str | None = None, resume_url: str | None = None
    ) -> AsyncIterator[SourcePage]:
        """Like ``read``, but each page says where the next one starts, and a saved link can be resumed."""
        if stream not in STREAMS:
            raise ConfigError(f"unknown Shopify stream {stream!r}; choose from {', '.join(STREAMS)}")
        params = self._first_page_params(stream, updated_at_min, None)
        async for records, response in self._client.pages(stream, params, start_url=resume_url):
            self.last_page_url = str(response.request.url.copy_with(query=None))
            yield SourcePage(records, self._client.next_url(response), _server_time(response.headers.get("Date")))

    async def fetch(self, stream: str, record_id: str) -> dict[str, Any] | None:
        """One record by id, exactly as sent; None when the store no longer has it (404)."""
        if stream not in STREAMS:
            raise ConfigError(f"unknown Shopify stream {stream!r}; choose from {', '.join(STREAMS)}")
        if not record_id.isdigit():
            return None  # ids are numeric; anything else (a content hash for a record without id) cannot be fetched
        path = self._client.resource_path(f"{stream}/{record_id}")
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

    def _first_page_params(self, stream: str, since: str | None, until: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": self.config.page_size, "order": READ_ORDER}
        if stream == "orders":
            params["status"] = "any"  # the default "open" would silently skip closed and cancelled orders
        if since:
            params["updated_at_min"] = since
        if until:
            params["updated_at_max"] = until
        return params


def _server_time(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return None
