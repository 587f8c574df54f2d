"""WooCommerce webhooks in: signature, site and topic headers, the REST resource body as a staged record, and
the webhooks ferry needs made (or re-enabled) through ``wc/v3/webhooks``.

``X-WC-Webhook-Signature`` is base64(HMAC-SHA256(secret, raw body)) (``WC_Webhook::generate_signature``),
compared in constant time before anything is parsed. ``X-WC-Webhook-Delivery-ID`` is ``wp_hash(id . time())``:
two deliveries of one webhook in the same second share it, so it is not a dedup key alone; the key is it with
the webhook id and a digest of the body (two deliveries that agree on all three carry the same record at the
same state: keeping one loses nothing). WooCommerce never retries; a duplicate only comes from the network or
a proxy. On creation WooCommerce sends an unsigned ping (form body ``webhook_id=N``) that must get a 2xx, or
the webhook counts a failure; a webhook failing more than 5 times in a row is disabled, and ``register``
turns ferry's own disabled webhooks back on.

Products are not taken from webhooks: a variable product's variations are not in its body (the batch read
fetches them), so products arrive through the batch read (a ``schedule:`` sweep) only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from ferry.connectors.woocommerce.client import WooCommerceClient
from ferry.connectors.woocommerce.config import WooCommerceConfig
from ferry.connectors.woocommerce.normalize import mark_unsettled
from ferry.core.webhooks import (
    Subscription,
    WebhookEvent,
    WebhookRejected,
    body_digest,
    hmac_sha256_base64,
    signature_matches,
    with_resource,
)
from ferry.errors import PermanentError

log = structlog.get_logger("ferry.connectors.woocommerce.webhooks")

STREAM_TOPICS: dict[str, tuple[str, ...]] = {
    "customers": ("customer.created", "customer.updated"),
    "orders": ("order.created", "order.updated"),
}
STREAM_OF_TOPIC = {topic: stream for stream, topics in STREAM_TOPICS.items() for topic in topics}
WEBHOOK_NAME = "ferry"  # the name ferry gives the webhooks it creates: the only ones it ever changes


class WooCommerceWebhookReceiver:
    system = "woocommerce"

    def __init__(self, config: WooCommerceConfig, secret: str, site: str | None = None) -> None:
        self.config = config
        self._secret = secret
        self.site = (site or config.url).rstrip("/")

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        if not signature_matches(hmac_sha256_base64(body, self._secret), headers.get("x-wc-webhook-signature")):
            raise WebhookRejected(401, "missing or invalid X-WC-Webhook-Signature")
        for name in ("x-wc-webhook-topic", "x-wc-webhook-delivery-id", "x-wc-webhook-id", "x-wc-webhook-source"):
            if not headers.get(name):
                raise WebhookRejected(400, f"missing {name}")
        source = headers["x-wc-webhook-source"].rstrip("/")
        if source != self.site:
            raise WebhookRejected(403, f"delivery from site {source!r}, this pipeline reads {self.site!r}")

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        """WC_Webhook::deliver_ping: no signature, no topic header, a form body ``webhook_id=N``."""
        return (
            "x-wc-webhook-signature" not in headers
            and headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
            and body.startswith(b"webhook_id=")
            and body[len(b"webhook_id="):].isdigit()
        )

    def parse(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        topic = headers["x-wc-webhook-topic"]
        key = f"woocommerce:{headers['x-wc-webhook-id']}:{headers['x-wc-webhook-delivery-id']}:{body_digest(body)}"
        event = WebhookEvent(dedup_key=key, topic=topic, stream=STREAM_OF_TOPIC.get(topic))
        stream = event.stream
        if stream is None:
            return event
        event = with_resource(event, body)
        mark_unsettled(stream, event.records)  # seen now (no event time sent): one second's changes by arrival
        return event

    def subscriptions(self, public_url: str, streams: Sequence[str]) -> list[Subscription]:
        return [Subscription(topic, public_url) for stream in streams for topic in STREAM_TOPICS.get(stream, ())]

    async def register(self, subscriptions: Sequence[Subscription]) -> dict[str, int]:
        """List the site's webhooks; create each missing (topic, delivery_url) with the pipeline's secret, and set
        ferry's own disabled or paused ones active again. Webhooks ferry did not create are never touched."""
        counts = {"created": 0, "existing": 0, "reactivated": 0}
        client = WooCommerceClient(self.config)
        try:
            hooks = await self._webhooks(client)
            for sub in subscriptions:
                same = [h for h in hooks if h.get("topic") == sub.topic and h.get("delivery_url") == sub.address]
                if not same:
                    await client.http.request("POST", "webhooks", label="webhooks", idempotent=False, json={
                        "name": WEBHOOK_NAME, "topic": sub.topic, "delivery_url": sub.address,
                        "secret": self._secret, "status": "active",
                    })
                    counts["created"] += 1
                    continue
                counts["existing"] += 1
                for hook in same:
                    if hook.get("status") != "active" and hook.get("name") == WEBHOOK_NAME:
                        await client.http.request("PUT", f"webhooks/{hook['id']}", label="webhooks",
                                                  json={"status": "active", "secret": self._secret})
                        counts["reactivated"] += 1
        finally:
            await client.aclose()
        log.info("webhooks.registered", system="woocommerce", **counts)
        return counts

    @staticmethod
    async def _webhooks(client: WooCommerceClient) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in range(1, 100):
            response = await client.http.request(
                "GET", "webhooks", params={"per_page": 100, "page": page}, label="webhooks"
            )
            body = response.json()
            if not isinstance(body, list):
                raise PermanentError("GET webhooks: the response is not a JSON list")
            out.extend(h for h in body if isinstance(h, dict))
            if len(body) < 100:
                break
        return out
