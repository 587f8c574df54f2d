"""Shopify webhooks in: HMAC check, shop and topic headers, the REST resource body as a staged record, and the
subscriptions ferry needs made through ``webhooks.json``.

Shopify signs the raw body: ``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(app client secret, body)), compared
in constant time before anything is parsed. ``X-Shopify-Webhook-Id`` is the same across a delivery's retries
(shopify.dev, "Ignore duplicate webhooks"), so it alone is the dedup key. Bodies are the REST JSON of the
resource (the same shape the REST reader stages; the GraphQL reader stages that shape too), so the source's
``identify``/``normalize`` take them as they are. Delete topics carry only ``{"id": N}``: ferry does not
delete in targets, so they are acknowledged and remembered, nothing more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog

from ferry.connectors.shopify.client import ShopifyClient
from ferry.connectors.shopify.config import ShopifyConfig
from ferry.connectors.shopify.normalize import mark_unsettled
from ferry.core.webhooks import (
    Subscription,
    WebhookEvent,
    WebhookRejected,
    hmac_sha256_base64,
    signature_matches,
    with_resource,
)
from ferry.errors import PermanentError

log = structlog.get_logger("ferry.connectors.shopify.webhooks")

# The topics whose body is a record of a stream this connector reads.
STREAM_TOPICS: dict[str, tuple[str, ...]] = {
    "customers": ("customers/create", "customers/update"),
    "orders": ("orders/create", "orders/updated"),
    "products": ("products/create", "products/update"),
}
STREAM_OF_TOPIC = {topic: stream for stream, topics in STREAM_TOPICS.items() for topic in topics}
IGNORED_TOPICS = {"customers/delete", "orders/delete", "products/delete"}


def _fired_at(value: str | None) -> dt.datetime:
    """``X-Shopify-Triggered-At`` (UTC, nanoseconds); now when it is missing or unreadable."""
    if value:
        with contextlib.suppress(ValueError):
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


class ShopifyWebhookReceiver:
    system = "shopify"

    def __init__(self, config: ShopifyConfig, secret: str, shop: str | None = None) -> None:
        self.config = config
        self._secret = secret
        # The shop domain deliveries must name: given, or the source URL's host when it is a myshopify domain.
        host = urlsplit(config.url).hostname or ""
        self.shop = shop or (host if host.endswith(".myshopify.com") else None)

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        if not signature_matches(hmac_sha256_base64(body, self._secret), headers.get("x-shopify-hmac-sha256")):
            raise WebhookRejected(401, "missing or invalid X-Shopify-Hmac-Sha256")
        topic = headers.get("x-shopify-topic")
        if not topic:
            raise WebhookRejected(400, "missing X-Shopify-Topic")
        if not headers.get("x-shopify-webhook-id"):
            raise WebhookRejected(400, "missing X-Shopify-Webhook-Id")
        domain = headers.get("x-shopify-shop-domain")
        if not domain:
            raise WebhookRejected(400, "missing X-Shopify-Shop-Domain")
        if self.shop is not None and domain.lower() != self.shop.lower():
            raise WebhookRejected(403, f"delivery from shop {domain!r}, this pipeline reads {self.shop!r}")
        if topic not in STREAM_OF_TOPIC and topic not in IGNORED_TOPICS:
            raise WebhookRejected(400, f"topic {topic!r} is not one ferry subscribes to")

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        return False  # Shopify sends no handshake

    def parse(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        topic = headers["x-shopify-topic"]
        event = WebhookEvent(dedup_key=f"shopify:{headers['x-shopify-webhook-id']}", topic=topic,
                             stream=STREAM_OF_TOPIC.get(topic))
        stream = event.stream
        if stream is None:
            return event
        event = with_resource(event, body)
        fired = _fired_at(headers.get("x-shopify-triggered-at"))
        # Two changes in one second carry one updated_at: the one fired later is the newer (values.SEEN_KEY).
        mark_unsettled(stream, event.records, seen=fired.timestamp())
        return event

    def subscriptions(self, public_url: str, streams: Sequence[str]) -> list[Subscription]:
        return [Subscription(topic, public_url) for stream in streams for topic in STREAM_TOPICS.get(stream, ())]

    async def register(self, subscriptions: Sequence[Subscription]) -> dict[str, int]:
        """``GET webhooks.json?address=`` then ``POST webhooks.json`` for each missing topic; never deletes."""
        counts = {"created": 0, "existing": 0}
        client = ShopifyClient(self.config, throttle=False)
        try:
            for address in sorted({s.address for s in subscriptions}):
                have = await self._topics_at(client, address)
                for sub in (s for s in subscriptions if s.address == address):
                    if sub.topic in have:
                        counts["existing"] += 1
                        continue
                    await client.http.request(
                        "POST", client.resource_path("webhooks"), label="webhooks", idempotent=False,
                        json={"webhook": {"topic": sub.topic, "address": sub.address, "format": "json"}},
                    )
                    counts["created"] += 1
        finally:
            await client.aclose()
        log.info("webhooks.registered", system="shopify", **counts)
        return counts

    @staticmethod
    async def _topics_at(client: ShopifyClient, address: str) -> set[str]:
        response = await client.http.request(
            "GET", client.resource_path("webhooks"), params={"address": address, "limit": 250}, label="webhooks"
        )
        body: Any = response.json()
        hooks = body.get("webhooks") if isinstance(body, dict) else None
        if not isinstance(hooks, list):
            raise PermanentError("GET webhooks.json: no 'webhooks' list in the response")
        return {str(h.get("topic")) for h in hooks if isinstance(h, dict)}
