"""Shopify webhook deliveries: signing, the headers Shopify sends, and ``ShopifyWebhooks``, which turns every
write through the API into deliveries to the shop's subscriptions (``subscriptions.py``).

``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(app client secret, raw body)); receivers must verify the raw
bytes, before any JSON parsing, with a constant-time compare. The body is the REST JSON of the resource as it
was when the change happened (retries carry that same payload), cut to the subscription's ``fields`` if it has
any; a ``*/delete`` topic sends ``{"id": N}``. ``X-Shopify-Webhook-Id`` names one delivery and stays the same
across its retries and duplicates; ``X-Shopify-Event-Id`` is shared by the deliveries of one change to several
subscriptions (reference §1.6; shopify.dev "Ignore duplicate webhooks").

Sending follows Shopify's published behaviour: 1 s to connect and 5 s in all, success is any 2xx (a redirect is
a failure), 8 retries over 4 hours with exponential backoff (changelog 2024-09-10; Shopify publishes no exact
schedule, so the delays double from 56 s and add up to 4 h), and a subscription made through the API is
removed when a delivery has failed every retry.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson

from ferry.sandbox.shopify.query import project
from ferry.sandbox.shopify.state import ShopState
from ferry.sandbox.shopify.store import Record
from ferry.sandbox.webhooks import Delivery, Dispatcher, RetryPolicy, exponential_delays, hmac_sha256_base64

TOPICS = {
    ("customers", "create"): "customers/create", ("customers", "update"): "customers/update",
    ("customers", "delete"): "customers/delete",
    ("orders", "create"): "orders/create", ("orders", "update"): "orders/updated",
    ("orders", "delete"): "orders/delete",
    ("products", "create"): "products/create", ("products", "update"): "products/update",
    ("products", "delete"): "products/delete",
    ("bulk_operations", "finish"): "bulk_operations/finish",
}
POLICY = RetryPolicy(delays=exponential_delays(8, 4 * 3600), connect_timeout=1.0, timeout=5.0)
USER_AGENT = "Shopify-Captain-Hook"
# Deliveries of one subscription in flight at once. Shopify's webhook docs (best practices; not re-read here) say
# it does not guarantee ordering within a topic or across topics for one resource, and it publishes no concurrency
# figure: several in flight would be faithful. Kept at 1 here: with 4 or 8 in flight, `bench/events.py` on a loaded
# machine measured slower acks (p50 5 -> 35-80 ms) and later writes, not earlier (bench/RESULTS.md, h-sfcalls);
# ``PATCH /__sandbox/webhooks {"concurrency": N}`` or ``bench/events.py --sender-concurrency N`` sends N at once.
CONCURRENCY = 1


def sign_webhook(body: bytes, secret: str) -> str:
    return hmac_sha256_base64(body, secret)


def webhook_headers(*, topic: str, body: bytes, secret: str, shop: str, api_version: str, webhook_id: str,
                    triggered_at: str, event_id: str | None = None) -> dict[str, str]:
    """The headers Shopify sends with a delivery (reference §1.6)."""
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign_webhook(body, secret),
        "X-Shopify-Shop-Domain": f"{shop}.myshopify.com",
        "X-Shopify-API-Version": api_version,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Triggered-At": triggered_at,
    }
    if event_id is not None:
        headers["X-Shopify-Event-Id"] = event_id
    return headers


def triggered_at(epoch_ns: int) -> str:
    """``2023-03-29T18:00:27.877041743Z``: UTC with nanoseconds, as Shopify writes it."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _int_id(value: object) -> int | None:
    return value if isinstance(value, int) else None


class ShopifyWebhooks:
    """Listens to the shop's writes and queues a signed delivery per matching JSON subscription."""

    def __init__(self, state: ShopState, *, secret: str, ca_files: list[Path], time_scale: float = 1.0) -> None:
        self.state = state
        self.secret = secret
        self.dispatcher = Dispatcher("shopify", POLICY, self, ca_files=ca_files, time_scale=time_scale,
                                     concurrency=CONCURRENCY, user_agent=USER_AGENT)
        state.listeners.append(self.on_change)

    def on_change(self, resource: str, event: str, rec: Record) -> None:
        topic = TOPICS.get((resource, event))
        if topic is None:
            return
        subs = [s for s in self.state.subscriptions.matching(topics=[topic]) if s["format"] == "json"]
        if not subs:
            return
        event_id = str(uuid.uuid4())
        fired = triggered_at(time.time_ns())
        for sub in subs:
            body = self._payload(rec, event, sub.get("fields") or [])
            headers = webhook_headers(topic=topic, body=body, secret=self.secret, shop=self.state.shop,
                                      api_version=sub["api_version"], webhook_id=str(uuid.uuid4()),
                                      triggered_at=fired, event_id=event_id)
            self.dispatcher.enqueue(Delivery(subscription=str(sub["id"]), topic=topic, url=sub["address"],
                                             body=body, headers=headers, resource_id=_int_id(rec.get("id"))))

    @staticmethod
    def _payload(rec: Record, event: str, fields: list[str]) -> bytes:
        if event == "delete":
            return orjson.dumps({"id": rec["id"]})
        return orjson.dumps(project([rec], ",".join(fields) if fields else None)[0])

    # -- DeliveryHooks -----------------------------------------------------------------------------------
    def active(self, delivery: Delivery) -> bool:
        return self.state.subscriptions.get(int(delivery.subscription)) is not None

    def finalize(self, delivery: Delivery) -> None:
        """Nothing changes between retries: the same payload and ids go to the same address."""

    def settled(self, delivery: Delivery, delivered: bool) -> None:
        if not delivered:  # every retry failed: Shopify removes a subscription made through the API
            self.state.subscriptions.delete(int(delivery.subscription))
