"""The data a WooCommerce sandbox serves: records in the exact ``wc/v3`` JSON shapes, plus an anomaly side channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]

# Top-level collections, and the two that live under a parent (products/{id}/variations, orders/{id}/refunds).
TOP_LEVEL = ("customers", "products", "orders", "coupons")
CHILDREN = {"variations": "products", "refunds": "orders"}
RESOURCES = (*TOP_LEVEL, *CHILDREN)

# WordPress post type of each resource: it names the resource in WooCommerce's error codes
# (``woocommerce_rest_shop_order_invalid_id``...). Customers are users, not posts.
POST_TYPES = {"products": "product", "orders": "shop_order", "coupons": "shop_coupon",
              "variations": "product_variation", "refunds": "shop_order_refund"}


@dataclass
class Store:
    """A store's records, served as ``GET /wp-json/wc/v3/...`` returns them (``_links`` are added when served).

    ``variations`` and ``refunds`` map the parent's id to its children. ``anomalies`` maps
    ``"<kind>:<id>"`` to tags naming the messiness a record carries (see ``generator``); it is never
    served over the API: tests use it to know what to expect.
    """

    customers: list[Record]
    products: list[Record]
    orders: list[Record]
    coupons: list[Record]
    variations: dict[int, list[Record]] = field(default_factory=dict)
    refunds: dict[int, list[Record]] = field(default_factory=dict)
    anomalies: dict[str, list[str]] = field(default_factory=dict)
    timezone: str = "Europe/Berlin"
    currency: str = "EUR"

    def top(self, resource: str) -> list[Record]:
        return {"customers": self.customers, "products": self.products, "orders": self.orders,
                "coupons": self.coupons}[resource]

    def children(self, resource: str) -> dict[int, list[Record]]:
        return self.variations if resource == "variations" else self.refunds

    def tagged(self, tag: str) -> list[str]:
        return [key for key, tags in self.anomalies.items() if tag in tags]
