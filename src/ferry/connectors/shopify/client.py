"""Shopify Admin REST over the shared HTTP core: auth header, leaky bucket, Link paging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from ferry.connectors.http import HttpCore
from ferry.connectors.shopify.config import ShopifyConfig
from ferry.connectors.shopify.pagination import next_page_url
from ferry.connectors.shopify.throttle import CALL_LIMIT_HEADER, LeakyBucket
from ferry.errors import PermanentError


class ShopifyClient:
    def __init__(
        self,
        config: ShopifyConfig,
        *,
        leak_rate: float = 2.0,
        throttle: bool = True,
        max_attempts: int = 6,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.bucket = LeakyBucket(leak_rate=leak_rate)
        self._origin = httpx.URL(config.url)
        self.http = HttpCore(
            "shopify",
            base_url=config.url,
            timeout_seconds=config.timeout_seconds,
            ca_file=config.ca_file,
            max_attempts=max_attempts,
            # The token lives only in the client's default headers: never in a URL, message or log.
            headers={
                "X-Shopify-Access-Token": config.access_token.get_secret_value(),
                "Accept": "application/json",
            },
            on_response=None if throttle else lambda r: self.bucket.observe(r.headers.get(CALL_LIMIT_HEADER)),
            before_request=self.bucket.acquire if throttle else None,
            after_request=self._release if throttle else None,
            transport=transport,
        )

    def _release(self, response: httpx.Response | None) -> None:
        self.bucket.release(response.headers.get(CALL_LIMIT_HEADER) if response is not None else None)

    @property
    def api_calls(self) -> int:
        return self.http.total_calls

    def resource_path(self, resource: str) -> str:
        return f"/admin/api/{self.config.api_version}/{resource}.json"

    async def aclose(self) -> None:
        await self.http.aclose()

    async def pages(
        self,
        resource: str,
        params: Mapping[str, Any],
        *,
        envelope: str | None = None,
        start_url: str | None = None,
    ) -> AsyncIterator[tuple[list[dict[str, Any]], httpx.Response]]:
        """Each page's records in order; filters go on the first request only, then the Link URL as given.

        ``start_url`` continues an earlier read at a next-page link it saved (the link carries the filters)."""
        key = envelope or resource
        url: str | None = self._checked_next(start_url) if start_url else self.resource_path(resource)
        query: Mapping[str, Any] | None = None if start_url else params
        while url is not None:
            response = await self.http.request("GET", url, params=query, label=resource)
            yield self.records_of(response, key), response
            url = self.next_url(response)
            # page_info carries every filter; Shopify rejects other params next to it (limit is already in the URL).
            query = None

    def next_url(self, response: httpx.Response) -> str | None:
        """The checked next-page link of a page, or None on the last page."""
        return self._checked_next(next_page_url(response.headers.get("Link")))

    def records_of(self, response: httpx.Response, key: str) -> list[dict[str, Any]]:
        """The ``key`` list of a list endpoint's answer."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise PermanentError(f"GET {response.request.url.path}: response is not JSON") from exc
        records = body.get(key) if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise PermanentError(f"GET {response.request.url.path}: no '{key}' list in the response")
        return records

    def _checked_next(self, url: str | None) -> str | None:
        """Follow a next link only to the same store: the access token must not travel elsewhere."""
        if url is None:
            return None
        target = httpx.URL(url)
        if target.is_relative_url:
            return url
        if (target.scheme, target.host, target.port) != (self._origin.scheme, self._origin.host, self._origin.port):
            raise PermanentError(f"Link header points outside the store ({target.scheme}://{target.host}); refusing")
        return url
