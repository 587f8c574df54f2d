"""Canonical records (source-neutral) and the value rules every normalizer shares (``values``)."""

from ferry.model.canonical import (
    ENTITIES,
    ENTITY_TYPES,
    Address,
    CanonicalRecord,
    Customer,
    Order,
    OrderLine,
    Product,
    ProductVariant,
    Refund,
)

__all__ = [
    "ENTITIES",
    "ENTITY_TYPES",
    "Address",
    "CanonicalRecord",
    "Customer",
    "Order",
    "OrderLine",
    "Product",
    "ProductVariant",
    "Refund",
]
