"""The Shopify normalizer (ferry.connectors.shopify.normalize, formerly ferry.model.normalize.shopify) before the
positional builders: the reference the fast one is proved against."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from ferry.model.canonical import (
    Address,
    CanonicalRecord,
    Customer,
    Order,
    OrderLine,
    Product,
    ProductVariant,
    Refund,
)
from tests.connectors.shopify.reference.values_before import (
    MISSING_KEY_PREFIX,
    decimal_or_none,
    ident,
    int_or_raw,
    money,
    newest_version,
    strip_html,
    tags,
    text,
    utc_timestamp,
    version_of,
)

STREAMS = ("customers", "products", "orders")
_DEFAULT_VARIANT_TITLE = "Default Title"  # Shopify's title for the only variant of a product without options


def normalize(stream: str, raw: dict[str, Any]) -> Iterator[tuple[str, CanonicalRecord]]:
    """Yield ``(entity, record)`` for one raw record of a Shopify stream."""
    if stream == "customers":
        yield "customer", customer(raw)
    elif stream == "products":
        product_record = product(raw)
        yield "product", product_record
        for variant in _dicts(raw.get("variants")):
            yield "product_variant", product_variant(raw, variant, product_record)
    elif stream == "orders":
        yield from _order_records(raw)
    else:
        raise ValueError(f"unknown Shopify stream {stream!r}; expected one of {', '.join(STREAMS)}")


def record_key(stream: str, raw: dict[str, Any]) -> str:
    """The staging key of a raw record: its id, or a content hash when the id is missing."""
    return ident(raw.get("id")) or _missing_key(raw)


def record_version(stream: str, raw: dict[str, Any]) -> str:
    """The raw record's own updated_at as a version (also the stream cursor Shopify filters on)."""
    return version_of(raw.get("updated_at"), raw.get("created_at"))


# -- customers -------------------------------------------------------------------


def customer(raw: dict[str, Any]) -> Customer:
    first, last = text(raw.get("first_name")), text(raw.get("last_name"))
    address = _address(_default_address(raw))
    source_id = ident(raw.get("id"))
    created_at, updated_at = utc_timestamp(raw.get("created_at")), utc_timestamp(raw.get("updated_at"))
    return Customer(
        key=source_id or _missing_key(raw),
        version=newest_version(updated_at, created_at),
        source_id=source_id,
        email=text(raw.get("email")),
        first_name=first,
        last_name=last,
        full_name=_full_name(first, last),
        company=address.company if address else None,
        phone=text(raw.get("phone")) or (address.phone if address else None),
        note=text(raw.get("note")),
        tags=tags(raw.get("tags")),
        state=text(raw.get("state")),
        accepts_marketing=_accepts_marketing(raw),
        currency=text(raw.get("currency")),
        address=address,
        is_guest=False,
        created_at=created_at,
        updated_at=updated_at,
    )


def _default_address(raw: dict[str, Any]) -> dict[str, Any] | None:
    default = raw.get("default_address")
    if isinstance(default, dict) and default:
        return default
    addresses = _dicts(raw.get("addresses"))
    for a in addresses:
        if a.get("default"):
            return a
    return addresses[0] if addresses else None


def _accepts_marketing(raw: dict[str, Any]) -> bool | None:
    # Newer API versions replaced the accepts_marketing flag with a consent object.
    consent = raw.get("email_marketing_consent")
    if isinstance(consent, dict) and consent.get("state"):
        return str(consent["state"]).lower() == "subscribed"
    flag = raw.get("accepts_marketing")
    return flag if isinstance(flag, bool) else None


def _full_name(first: str | None, last: str | None) -> str | None:
    if first and last:
        return f"{first} {last}"
    return first or last


def _address(raw: dict[str, Any] | None) -> Address | None:
    if not raw:
        return None
    get = raw.get
    line1, line2 = text(get("address1")), text(get("address2"))
    country_code = text(get("country_code"))
    province_code = text(get("province_code"))
    return Address(
        street=f"{line1}, {line2}" if line1 and line2 else line1 or line2,
        city=text(get("city")),
        province=text(get("province")) or province_code,
        province_code=province_code,
        zip=text(get("zip")),
        country=text(get("country")) or text(get("country_name")) or country_code,
        country_code=country_code,
        phone=text(get("phone")),
        company=text(get("company")),
        first_name=text(get("first_name")),
        last_name=text(get("last_name")),
    )


# -- products --------------------------------------------------------------------


def product(raw: dict[str, Any]) -> Product:
    return Product(
        key=ident(raw.get("id")) or _missing_key(raw),
        version=version_of(raw.get("updated_at"), raw.get("created_at")),
        title=text(raw.get("title")),
        vendor=text(raw.get("vendor")),
        product_type=text(raw.get("product_type")),
        status=text(raw.get("status")),
        handle=text(raw.get("handle")),
        description=strip_html(raw.get("body_html")),
        tags=tags(raw.get("tags")),
        variant_keys=tuple(k for k in (ident(v.get("id")) for v in _dicts(raw.get("variants"))) if k),
        created_at=utc_timestamp(raw.get("created_at")),
        updated_at=utc_timestamp(raw.get("updated_at")),
    )


def product_variant(raw_product: dict[str, Any], raw: dict[str, Any], parent: Product) -> ProductVariant:
    title = text(raw.get("title"))
    return ProductVariant(
        key=ident(raw.get("id")) or _missing_key(raw),
        # The variant carries product fields (name, description, status): a change to either is a new version.
        version=version_of(raw.get("updated_at"), raw_product.get("updated_at"), raw.get("created_at")),
        product_key=ident(raw.get("product_id")) or parent.key,
        title=title,
        product_title=parent.title,
        display_name=_display_name(parent.title, title),
        sku=text(raw.get("sku")),
        barcode=text(raw.get("barcode")),
        price=money(raw.get("price")),
        compare_at_price=money(raw.get("compare_at_price")),
        description=parent.description,
        status=parent.status,
        vendor=parent.vendor,
        options=tuple(o for o in (text(raw.get(f"option{i}")) for i in (1, 2, 3)) if o),
        inventory_quantity=int_or_raw(raw.get("inventory_quantity")),
        position=int_or_raw(raw.get("position")),
        created_at=utc_timestamp(raw.get("created_at")),
        updated_at=utc_timestamp(raw.get("updated_at")),
    )


def _display_name(product_title: str | None, variant_title: str | None) -> str | None:
    if not variant_title or variant_title == _DEFAULT_VARIANT_TITLE:
        return product_title or variant_title
    if not product_title:
        return variant_title
    return f"{product_title} - {variant_title}"


# -- orders ----------------------------------------------------------------------


def _order_records(raw: dict[str, Any]) -> Iterator[tuple[str, CanonicalRecord]]:
    guest = guest_customer(raw)
    record = order(raw, guest.key if guest else None)
    if guest is not None:
        # The guest comes first so that, within one staged order, its Account exists before the Order.
        yield "customer", guest
    yield "order", record
    for line in record.lines:
        yield "order_line", line
    for refund in record.refunds:
        yield "refund", refund


def order(raw: dict[str, Any], guest_key: str | None = None) -> Order:
    key = ident(raw.get("id")) or _missing_key(raw)
    updated_at, created_at = utc_timestamp(raw.get("updated_at")), utc_timestamp(raw.get("created_at"))
    version = newest_version(updated_at, created_at)
    currency = text(raw.get("currency"))
    customer_id = _customer_id(raw)
    if guest_key is None and customer_id is None:
        guest_key = guest_key_for(raw)
    refunds = tuple(_refund(r, key, version, currency) for r in _dicts(raw.get("refunds")))
    billing_raw, shipping_raw = _dict(raw.get("billing_address")), _dict(raw.get("shipping_address"))
    billing = _address(billing_raw)
    # Most orders ship where they bill: one Address value serves both (records are never mutated).
    shipping = billing if shipping_raw == billing_raw else _address(shipping_raw)
    return Order(
        key=key,
        version=version,
        name=text(raw.get("name")),
        number=int_or_raw(raw.get("order_number") if raw.get("order_number") is not None else raw.get("number")),
        customer_key=customer_id or guest_key,
        is_guest=guest_key is not None,
        email=text(raw.get("email")) or text(raw.get("contact_email")),
        phone=text(raw.get("phone")),
        currency=currency,
        presentment_currency=text(raw.get("presentment_currency")) or currency,
        financial_status=text(raw.get("financial_status")),
        fulfillment_status=text(raw.get("fulfillment_status")),
        cancelled_at=utc_timestamp(raw.get("cancelled_at")),
        cancel_reason=text(raw.get("cancel_reason")),
        closed_at=utc_timestamp(raw.get("closed_at")),
        processed_at=utc_timestamp(raw.get("processed_at")) or created_at,
        processed_on=_local_date(raw.get("processed_at") or raw.get("created_at")),
        created_at=created_at,
        updated_at=updated_at,
        note=text(raw.get("note")),
        tags=tags(raw.get("tags")),
        source_name=text(raw.get("source_name")),
        test=raw.get("test") is True,
        total_price=_shop_money(raw, "total_price"),
        subtotal_price=_shop_money(raw, "subtotal_price"),
        total_tax=_shop_money(raw, "total_tax"),
        total_discounts=_shop_money(raw, "total_discounts"),
        total_refunded=_total_refunded(refunds),
        presentment_total_price=_presentment_money(raw, "total_price"),
        billing_address=billing,
        shipping_address=shipping,
        lines=tuple(_line(li, key, version, updated_at) for li in _dicts(raw.get("line_items"))),
        refunds=refunds,
    )


def guest_key_for(raw_order: dict[str, Any]) -> str:
    """``guest:<email lowercased>``, or ``guest:order:<order id>`` when the order has no email."""
    email = text(raw_order.get("email")) or text(raw_order.get("contact_email"))
    if email:
        return f"guest:{email.lower()}"
    return f"guest:order:{ident(raw_order.get('id')) or _missing_key(raw_order)}"


def guest_customer(raw: dict[str, Any]) -> Customer | None:
    """The customer a guest checkout implies (None when the order has a real customer)."""
    if _customer_id(raw) is not None:
        return None
    address = _address(_dict(raw.get("billing_address")) or _dict(raw.get("shipping_address")))
    first = address.first_name if address else None
    last = address.last_name if address else None
    flag = raw.get("buyer_accepts_marketing")
    return Customer(
        key=guest_key_for(raw),
        version=version_of(raw.get("updated_at"), raw.get("created_at")),
        source_id=None,
        email=text(raw.get("email")) or text(raw.get("contact_email")),
        first_name=first,
        last_name=last,
        full_name=_full_name(first, last),
        company=address.company if address else None,
        phone=text(raw.get("phone")) or (address.phone if address else None),
        accepts_marketing=flag if isinstance(flag, bool) else None,
        currency=text(raw.get("currency")),
        address=address,
        is_guest=True,
        created_at=utc_timestamp(raw.get("created_at")),
        updated_at=utc_timestamp(raw.get("updated_at")),
    )


def _customer_id(raw: dict[str, Any]) -> str | None:
    cust = raw.get("customer")
    return ident(cust.get("id")) if isinstance(cust, dict) else None


def _line(raw: dict[str, Any], order_key: str, version: str, updated_at: str | None) -> OrderLine:
    # The busiest builder (2-3 per order): one bound lookup, and the name read once.
    get = raw.get
    variant_key = ident(get("variant_id"))
    name = text(get("name"))
    price = money(get("price"))
    price_set = get("price_set")
    return OrderLine(
        key=ident(get("id")) or _missing_key(raw),
        version=version,
        order_key=order_key,
        variant_key=variant_key,
        product_key=ident(get("product_id")),
        sku=text(get("sku")),
        title=text(get("title")) or name,
        variant_title=text(get("variant_title")),
        name=name,
        vendor=text(get("vendor")),
        quantity=int_or_raw(get("quantity")),
        unit_price=price or _bag_amount(price_set, "shop_money"),
        presentment_unit_price=_bag_amount(price_set, "presentment_money") or price,
        total_discount=_shop_money(raw, "total_discount"),
        is_custom=variant_key is None,
        is_gift_card=get("gift_card") is True,
        updated_at=updated_at,
    )


def _refund(raw: dict[str, Any], order_key: str, version: str, currency: str | None) -> Refund:
    return Refund(
        key=ident(raw.get("id")) or _missing_key(raw),
        version=version,
        order_key=order_key,
        created_at=utc_timestamp(raw.get("created_at")),
        processed_at=utc_timestamp(raw.get("processed_at")),
        amount=_refund_amount(raw, currency),
        currency=currency,
        note=text(raw.get("note")),
        restock=raw["restock"] if isinstance(raw.get("restock"), bool) else None,
        line_keys=tuple(
            k for k in (ident(rli.get("line_item_id")) for rli in _dicts(raw.get("refund_line_items"))) if k
        ),
    )


def _refund_amount(raw: dict[str, Any], shop_currency: str | None) -> str | None:
    """Sum of successful refund transactions in shop currency; None if one's shop amount is unknown."""
    total = Decimal("0.00")  # keeps two decimals in the text form ("209.00") however the parts are written
    for tx in _dicts(raw.get("transactions")):
        if tx.get("kind") != "refund" or tx.get("status") != "success":
            continue
        amount = decimal_or_none(_transaction_shop_amount(tx, shop_currency))
        if amount is None:
            return None
        total += amount
    return str(total)


def _transaction_shop_amount(tx: dict[str, Any], shop_currency: str | None) -> str | None:
    shop_amount = _bag_amount(tx.get("amount_set"), "shop_money")
    if shop_amount is not None:
        return shop_amount
    # A transaction's plain amount is in the currency it was charged in; only count it when that is the shop's.
    tx_currency = text(tx.get("currency"))
    if tx_currency is None or shop_currency is None or tx_currency.upper() == shop_currency.upper():
        return money(tx.get("amount"))
    return None


def _total_refunded(refunds: tuple[Refund, ...]) -> str | None:
    total = Decimal("0.00")
    for r in refunds:
        amount = decimal_or_none(r.amount)
        if amount is None:
            return None
        total += amount
    return str(total)


# -- helpers ---------------------------------------------------------------------


def _shop_money(raw: dict[str, Any], name: str) -> str | None:
    return money(raw.get(name)) or _bag_amount(raw.get(f"{name}_set"), "shop_money")


def _presentment_money(raw: dict[str, Any], name: str) -> str | None:
    return _bag_amount(raw.get(f"{name}_set"), "presentment_money") or money(raw.get(name))


def _bag_amount(bag: Any, side: str) -> str | None:
    if not isinstance(bag, dict):
        return None
    inner = bag.get(side)
    return money(inner.get("amount")) if isinstance(inner, dict) else None


def _local_date(value: Any) -> str | None:
    """The calendar date in the timestamp's own offset (the shop's day), not UTC's."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip()).date().isoformat()
    except ValueError:
        return None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, dict)]


def _missing_key(raw: dict[str, Any]) -> str:
    # Deterministic, so a re-read of the same id-less record gets the same key (and never collides with a
    # real id). The validator refuses this prefix as an external id, so the record is dead-lettered, not lost.
    digest = hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode(), usedforsecurity=False)
    return f"{MISSING_KEY_PREFIX}{digest.hexdigest()[:16]}"
