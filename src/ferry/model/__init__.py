"""Canonical records (source-neutral) and the normalizers that build them from source JSON."""

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
