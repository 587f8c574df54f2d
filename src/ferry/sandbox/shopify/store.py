"""The data a Shopify sandbox serves: plain REST-shaped dicts plus the anomaly side channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]

RESOURCES = ("customers", "products", "orders")


@dataclass
class Store:
    """A shop's records in the exact Shopify REST JSON shapes (API version 2025-07).

    ``anomalies`` maps ``"<kind>:<id>"`` (kind: customer, product, variant, order, line_item)
    to short tags naming the messiness the record carries (see ``generator`` for the list).
    It is never served over the API; tests use it to know what to expect.
    """

    customers: list[Record]
    products: list[Record]
    orders: list[Record]
    anomalies: dict[str, list[str]] = field(default_factory=dict)

    def records(self, resource: str) -> list[Record]:
        if resource == "customers":
            return self.customers
        if resource == "products":
            return self.products
        if resource == "orders":
            return self.orders
        raise KeyError(resource)

    def tagged(self, tag: str) -> list[str]:
        """Keys of every record carrying ``tag`` (handy in tests)."""
        return [key for key, tags in self.anomalies.items() if tag in tags]
