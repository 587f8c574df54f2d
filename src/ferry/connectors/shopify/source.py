"""Read customers, products and orders from a Shopify store, page by page, records untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.shopify.client import ShopifyClient
from ferry.connectors.shopify.config import ShopifyConfig
from ferry.errors import ConfigError

STREAMS = ("customers", "products", "orders")


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

    def _first_page_params(self, stream: str, since: str | None, until: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": self.config.page_size}
        if stream == "orders":
            params["status"] = "any"  # the default "open" would silently skip closed and cancelled orders
        if since:
            params["updated_at_min"] = since
        if until:
            params["updated_at_max"] = until
        return params
