"""The canonical model: source-neutral records every mapping reads from.

Plain ``slots=True`` dataclasses, not pydantic: the per-record path (normalize,
map, validate) must sustain tens of thousands of records a second on one core,
and these records are built from data that was already parsed as JSON.

Conventions every record follows:

- ``key`` is the source's stable id as a string (the external id written to
  targets); ``version`` is the source's updated_at as a fixed-width UTC string
  (``2026-03-04T15:11:12.000000Z``) so "latest wins" is a string comparison.
- Timestamps are fixed-width UTC ISO strings (see ``ferry.model.values``).
- Money is ``str``: the exact decimal text the source sent (Shopify sends
  ``"199.00"``). Not float, which would round; not Decimal, which orjson cannot
  serialise and which would force a parse (and an exception) on junk values.
  Text keeps every digit, and the validator converts it to the target's type
  (float for a Salesforce currency field, text for a text field) where the
  target's precision is known. Sums ferry computes (``total_refunded``) are
  done in Decimal and written back as text.
- Text is stripped and blank becomes None; values that look wrong (a bad email,
  a non-numeric quantity) are kept as they came, for the validator to judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry.model.values import MIN_VERSION, Money


@dataclass(slots=True)
class Address:
    street: str | None = None  # address1 and address2 joined with ", "
    city: str | None = None
    province: str | None = None
    province_code: str | None = None
    zip: str | None = None
    country: str | None = None  # the name when the source gives one, else the code
    country_code: str | None = None
    phone: str | None = None
    company: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass(slots=True)
class Customer:
    key: str
    version: str = MIN_VERSION
    source_id: str | None = None  # the source's own id; None for a guest built from an order
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None  # "first last", derived; None when both are blank
    company: str | None = None
    phone: str | None = None
    note: str | None = None
    tags: tuple[str, ...] = ()
    state: str | None = None
    accepts_marketing: bool | None = None  # None = the source did not say
    currency: str | None = None
    address: Address | None = None
    is_guest: bool = False
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(slots=True)
class Product:
    key: str
    version: str = MIN_VERSION
    title: str | None = None
    vendor: str | None = None
    product_type: str | None = None
    status: str | None = None  # active | draft | archived
    handle: str | None = None
    description: str | None = None  # body_html as plain text
    tags: tuple[str, ...] = ()
    variant_keys: tuple[str, ...] = ()
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(slots=True)
class ProductVariant:
    """One sellable variant. Targets that price and sell per SKU (Salesforce Product2) map from this."""

    key: str
    version: str = MIN_VERSION  # newest of the product's and the variant's updated_at (it carries both)
    product_key: str | None = None
    title: str | None = None
    product_title: str | None = None
    display_name: str | None = None  # "Product - Variant", or just "Product" for Shopify's "Default Title"
    sku: str | None = None
    barcode: str | None = None
    price: Money | None = None
    compare_at_price: Money | None = None
    description: str | None = None  # the product's, as plain text
    status: str | None = None  # the product's
    vendor: str | None = None
    options: tuple[str, ...] = ()
    inventory_quantity: int | str | None = None
    position: int | str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(slots=True)
class OrderLine:
    key: str  # the line item id
    version: str = MIN_VERSION  # the order's
    order_key: str | None = None
    variant_key: str | None = None  # None for a custom line item (no catalogue variant)
    product_key: str | None = None
    sku: str | None = None
    title: str | None = None
    variant_title: str | None = None
    name: str | None = None
    vendor: str | None = None
    quantity: int | str | None = None
    unit_price: Money | None = None  # shop currency
    presentment_unit_price: Money | None = None
    total_discount: Money | None = None
    is_custom: bool = False
    is_gift_card: bool = False
    updated_at: str | None = None  # the order's


@dataclass(slots=True)
class Refund:
    key: str
    version: str = MIN_VERSION  # the order's
    order_key: str | None = None
    created_at: str | None = None
    processed_at: str | None = None
    amount: Money | None = None  # successful refund transactions, shop currency
    currency: str | None = None
    note: str | None = None
    restock: bool | None = None
    line_keys: tuple[str, ...] = ()  # refunded line item ids


@dataclass(slots=True)
class Order:
    key: str
    version: str = MIN_VERSION
    name: str | None = None  # "#1001"
    number: int | str | None = None
    customer_key: str | None = None  # the source customer id, or the guest key
    is_guest: bool = False
    email: str | None = None
    phone: str | None = None
    currency: str | None = None  # shop currency: every plain money field below is in it
    presentment_currency: str | None = None  # what the buyer saw and paid in
    financial_status: str | None = None
    fulfillment_status: str | None = None
    cancelled_at: str | None = None
    cancel_reason: str | None = None
    closed_at: str | None = None
    processed_at: str | None = None
    processed_on: str | None = None  # the order's date as the shop saw it (local date of processed_at)
    created_at: str | None = None
    updated_at: str | None = None
    note: str | None = None
    tags: tuple[str, ...] = ()
    source_name: str | None = None
    test: bool = False
    total_price: Money | None = None
    subtotal_price: Money | None = None
    total_tax: Money | None = None
    total_discounts: Money | None = None
    total_refunded: Money | None = None  # None when a refund's shop-currency amount is unknown
    presentment_total_price: Money | None = None
    billing_address: Address | None = None
    shipping_address: Address | None = None
    lines: tuple[OrderLine, ...] = field(default=())
    refunds: tuple[Refund, ...] = field(default=())


CanonicalRecord = Customer | Product | ProductVariant | Order | OrderLine | Refund

# Entity names as pipelines write them in `from:`, and the record type each one yields.
ENTITY_TYPES: dict[str, type] = {
    "customer": Customer,
    "product": Product,
    "product_variant": ProductVariant,
    "order": Order,
    "order_line": OrderLine,
    "refund": Refund,
}
ENTITIES: tuple[str, ...] = tuple(ENTITY_TYPES)
