"""Webhook subscriptions, one list per shop that REST (``webhooks.json``) and GraphQL
(``webhookSubscriptionCreate`` / ``webhookSubscriptions``) both read and write.

Records are kept in the REST shape (``address``, ``topic`` as ``orders/create``, ``format: "json"``); GraphQL
views translate topics with ``TOPICS`` (no mechanical rule: ``ORDERS_UPDATED`` is ``orders/updated`` but
``CUSTOMERS_UPDATE`` is ``customers/update``). ``ShopifyWebhooks`` (``webhooks.py``) delivers to them.

The sandbox only ever sends to loopback addresses, so any other address (another host, and the Pub/Sub and
EventBridge forms, which it cannot deliver to) is refused when the subscription is made, with Shopify's own
error shape. Shopify refuses plain http://; ``allow_http`` (off by default) lets a local receiver without TLS
subscribe, a deviation for development only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ferry.sandbox.shopify.ids import IdSequence, gid
from ferry.sandbox.shopify.store import Record
from ferry.sandbox.webhooks import is_loopback_url

# GraphQL WebhookSubscriptionTopic enum value -> REST topic (reference §5.4).
TOPICS: dict[str, str] = {
    "APP_UNINSTALLED": "app/uninstalled", "BULK_OPERATIONS_FINISH": "bulk_operations/finish",
    "CUSTOMERS_CREATE": "customers/create", "CUSTOMERS_DELETE": "customers/delete",
    "CUSTOMERS_DISABLE": "customers/disable", "CUSTOMERS_ENABLE": "customers/enable",
    "CUSTOMERS_UPDATE": "customers/update", "CUSTOMERS_MERGE": "customers/merge",
    "CUSTOMERS_MARKETING_CONSENT_UPDATE": "customers_marketing_consent/update",
    "CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE": "customers_email_marketing_consent/update",
    "FULFILLMENTS_CREATE": "fulfillments/create", "FULFILLMENTS_UPDATE": "fulfillments/update",
    "INVENTORY_ITEMS_CREATE": "inventory_items/create", "INVENTORY_ITEMS_DELETE": "inventory_items/delete",
    "INVENTORY_ITEMS_UPDATE": "inventory_items/update", "INVENTORY_LEVELS_CONNECT": "inventory_levels/connect",
    "INVENTORY_LEVELS_DISCONNECT": "inventory_levels/disconnect", "INVENTORY_LEVELS_UPDATE": "inventory_levels/update",
    "ORDERS_CANCELLED": "orders/cancelled", "ORDERS_CREATE": "orders/create", "ORDERS_DELETE": "orders/delete",
    "ORDERS_EDITED": "orders/edited", "ORDERS_FULFILLED": "orders/fulfilled", "ORDERS_PAID": "orders/paid",
    "ORDERS_PARTIALLY_FULFILLED": "orders/partially_fulfilled", "ORDERS_UPDATED": "orders/updated",
    "ORDER_TRANSACTIONS_CREATE": "order_transactions/create", "PRODUCTS_CREATE": "products/create",
    "PRODUCTS_DELETE": "products/delete", "PRODUCTS_UPDATE": "products/update", "REFUNDS_CREATE": "refunds/create",
}
ENUM_OF_TOPIC = {rest: enum for enum, rest in TOPICS.items()}


class SubscriptionError(ValueError):
    """A rejected subscription: ``field`` is the REST field name the message is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Subscriptions:
    def __init__(self, ids: IdSequence) -> None:
        self._ids = ids
        self.records: list[Record] = []
        self.allow_http = False

    def create(self, *, topic: str, address: str, fmt: str, fields: list[str], namespaces: list[str],
               api_version: str, now: str, filter_text: str | None = None) -> Record:
        """Add a subscription (REST topic and address); raises ``SubscriptionError`` as Shopify refuses it."""
        if topic not in ENUM_OF_TOPIC:
            raise SubscriptionError("topic", f"Invalid topic specified: {topic}")
        check_address(address, allow_http=self.allow_http)
        if fmt not in ("json", "xml"):
            raise SubscriptionError("format", "is not included in the list")
        if any(r["topic"] == topic and r["address"] == address for r in self.records):
            raise SubscriptionError("address", "for this topic has already been taken")
        sid = self._ids.next()
        rec: Record = {
            "id": sid, "address": address, "topic": topic, "created_at": now, "updated_at": now, "format": fmt,
            "fields": list(fields), "metafield_namespaces": list(namespaces), "api_version": api_version,
            "private_metafield_namespaces": [], "admin_graphql_api_id": gid("WebhookSubscription", sid),
            "filter": filter_text,
        }
        self.records.append(rec)
        return rec

    def update(self, sid: int, changes: dict[str, Any], now: str) -> Record | None:
        """PUT webhooks/{id}.json: a new ``address``, ``fields`` or ``metafield_namespaces`` (the topic stays).

        Deliveries already queued keep the address they were made for (Shopify: "Retried webhooks will be
        delivered to the subscription's address that was configured when the webhook was triggered")."""
        rec = self.get(sid)
        if rec is None:
            return None
        address = str(changes.get("address") or rec["address"])
        if address != rec["address"]:
            check_address(address, allow_http=self.allow_http)
            if any(r["topic"] == rec["topic"] and r["address"] == address for r in self.records):
                raise SubscriptionError("address", "for this topic has already been taken")
        rec["address"] = address
        for key in ("fields", "metafield_namespaces"):
            if isinstance(changes.get(key), list):
                rec[key] = list(changes[key])
        rec["updated_at"] = now
        return rec

    def get(self, sid: int) -> Record | None:
        return next((r for r in self.records if r["id"] == sid), None)

    def delete(self, sid: int) -> bool:
        rec = self.get(sid)
        if rec is None:
            return False
        self.records.remove(rec)
        return True

    def matching(self, *, topics: list[str] | None = None, address: str | None = None) -> list[Record]:
        return [r for r in self.records if (topics is None or r["topic"] in topics)
                and (address is None or r["address"] == address)]


LOOPBACK_ONLY = "must be a loopback address (127.0.0.1, ::1 or localhost): the sandbox delivers nowhere else"


def check_address(address: str, *, allow_http: bool = False) -> None:
    """An HTTPS endpoint (Shopify refuses plain http) on loopback (the sandbox's own rule)."""
    parts = urlsplit(address)
    if parts.scheme == "http" and not allow_http:
        raise SubscriptionError("address", "protocol http:// is not supported")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SubscriptionError("address", LOOPBACK_ONLY if address.startswith(("pubsub://", "arn:aws:events:"))
                                else "is invalid")
    if not is_loopback_url(address):
        raise SubscriptionError("address", LOOPBACK_ONLY)


def rest_view(rec: Record) -> dict[str, Any]:
    """The REST ``webhook`` object (the stored record without the GraphQL-only keys)."""
    return {k: v for k, v in rec.items() if k not in ("admin_graphql_api_id", "filter")}
