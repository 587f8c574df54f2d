"""Shopify Admin REST JSON -> canonical records.

Real store data is messy: keys go missing, values are null, ids arrive as ints
or strings. Nothing here raises on a value; what cannot be made canonical is
kept as is for the mapping validator to judge (so a bad record is dead-lettered
with a reason instead of crashing a run or vanishing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from ferry.core.contracts import Reference
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
from ferry.model.values import (
    MISSING_KEY_PREFIX,
    SEEN_KEY,
    decimal_or_none,
    ident,
    int_or_raw,
    money,
    newest_version,
    offset_shape_parses,
    seen_version,
    settle_versions,
    strip_html,
    tags,
    text,
    utc_timestamp,
    version_of,
)
from ferry.model.values import mark_unsettled as values_mark_unsettled

STREAMS = ("customers", "products", "orders")
_DEFAULT_VARIANT_TITLE = "Default Title"  # Shopify's title for the only variant of a product without options


Normalized = list[tuple[str, CanonicalRecord]]

# Every entity ``normalize`` can yield per stream (the StreamEntities capability): an order without a customer
# brings its guest customer, so ``orders`` feeds the customer objects too. Keep in step with ``normalize``.
STREAM_ENTITIES: dict[str, tuple[str, ...]] = {
    "customers": ("customer",),
    "products": ("product", "product_variant"),
    "orders": ("customer", "order", "order_line", "refund"),
}


def mark_unsettled(stream: str, records: list[dict[str, Any]], threshold: str | None = None,
                   seen: float | None = None) -> int:
    """``values.mark_unsettled`` by the stamps that version the stream's records (a product's variants' too)."""
    return values_mark_unsettled(records, lambda raw: _newest_stamp(stream, raw), threshold, seen)


def _newest_stamp(stream: str, raw: dict[str, Any]) -> str:
    version = version_of(raw.get("updated_at"), raw.get("created_at"))
    if stream == "products":
        version = max([version, *(version_of(v.get("updated_at")) for v in _dicts(raw.get("variants")))])
    return version


def normalize(stream: str, raw: dict[str, Any]) -> Normalized:
    """``(entity, record)`` for one raw record of a Shopify stream, in load order.

    A list, built at once: cheaper than two nested generators on the per-record path, and every
    caller takes all of them anyway.
    """
    if stream == "customers":
        out: Normalized = [("customer", customer(raw))]
    elif stream == "products":
        product_record = product(raw)
        out = [("product", product_record)]
        out += [("product_variant", product_variant(raw, v, product_record)) for v in _dicts(raw.get("variants"))]
    elif stream == "orders":
        out = _order_records(raw)
    else:
        raise ValueError(f"unknown Shopify stream {stream!r}; expected one of {', '.join(STREAMS)}")
    if SEEN_KEY in raw:  # a record seen within its stamp's second (values.unsettled_version)
        settle_versions(raw, out)
    return out


def references(stream: str, raw: dict[str, Any]) -> list[Reference]:
    """An order's customer (a guest checkout's customer is the order's own record) and each line item's variant,
    which the products stream yields with its product; other streams refer to nothing."""
    if stream != "orders":
        return []
    out: list[Reference] = []
    customer_id = _customer_id(raw)
    if customer_id is not None:
        out.append(Reference("customer", customer_id, "customers", customer_id))
    for line in _dicts(raw.get("line_items")):
        variant, product_id = ident(line.get("variant_id")), ident(line.get("product_id"))
        if variant is not None and product_id is not None:  # a custom line sells no catalog product
            out.append(Reference("product_variant", variant, "products", product_id))
    return out


def record_key(stream: str, raw: dict[str, Any]) -> str:
    """The staging key of a raw record: its id, or a content hash when the id is missing."""
    return ident(raw.get("id")) or _missing_key(raw)


def record_version(stream: str, raw: dict[str, Any]) -> str:
    """The raw record's own updated_at as a version (also the stream cursor Shopify filters on)."""
    return version_of(raw.get("updated_at"), raw.get("created_at"))


def identify(stream: str, raw: dict[str, Any]) -> tuple[str, str]:
    """``(record_key, record_version)`` in one call: the engine stages every record read by it."""
    return ident(raw.get("id")) or _missing_key(raw), seen_version(raw, version_of(raw.get("updated_at"),
                                                                                   raw.get("created_at")))


# -- customers -------------------------------------------------------------------


def customer(raw: dict[str, Any]) -> Customer:
    first, last = text(raw.get("first_name")), text(raw.get("last_name"))
    address = _address(_default_address(raw))
    source_id = ident(raw.get("id"))
    created_at, updated_at = utc_timestamp(raw.get("created_at")), utc_timestamp(raw.get("updated_at"))
    # Positional, in Customer's field order (a keyword call costs ~3.5x as much).
    return Customer(
        source_id or _missing_key(raw),  # key
        newest_version(updated_at, created_at),  # version
        source_id,
        text(raw.get("email")),  # email
        first,  # first_name
        last,  # last_name
        _full_name(first, last),  # full_name
        address.company if address else None,  # company
        text(raw.get("phone")) or (address.phone if address else None),  # phone
        text(raw.get("note")),  # note
        tags(raw.get("tags")),  # tags
        text(raw.get("state")),  # state
        _accepts_marketing(raw),  # accepts_marketing
        text(raw.get("currency")),  # currency
        address,
        False,  # is_guest
        created_at,
        updated_at,
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
    # Positional, in Address's field order: a keyword call costs ~3x as much, and this runs 1-2 times an order.
    return Address(
        f"{line1}, {line2}" if line1 and line2 else line1 or line2,  # street
        text(get("city")),
        text(get("province")) or province_code,  # province
        province_code,
        text(get("zip")),
        text(get("country")) or text(get("country_name")) or country_code,  # country
        country_code,
        text(get("phone")),
        text(get("company")),
        text(get("first_name")),
        text(get("last_name")),
    )


# -- products --------------------------------------------------------------------


def product(raw: dict[str, Any]) -> Product:
    # Positional, in Product's field order, each argument named in its comment (a keyword call costs ~3.5x).
    return Product(
        ident(raw.get("id")) or _missing_key(raw),  # key
        version_of(raw.get("updated_at"), raw.get("created_at")),  # version
        text(raw.get("title")),  # title
        text(raw.get("vendor")),  # vendor
        text(raw.get("product_type")),  # product_type
        text(raw.get("status")),  # status
        text(raw.get("handle")),  # handle
        strip_html(raw.get("body_html")),  # description
        tags(raw.get("tags")),  # tags
        tuple([k for v in _dicts(raw.get("variants")) if (k := ident(v.get("id")))]),  # variant_keys
        utc_timestamp(raw.get("created_at")),  # created_at
        utc_timestamp(raw.get("updated_at")),  # updated_at
    )


def product_variant(raw_product: dict[str, Any], raw: dict[str, Any], parent: Product) -> ProductVariant:
    title = text(raw.get("title"))
    options = text(raw.get("option1")), text(raw.get("option2")), text(raw.get("option3"))
    # Positional, in ProductVariant's field order, each argument named in its comment (a keyword call costs ~3.5x).
    return ProductVariant(
        ident(raw.get("id")) or _missing_key(raw),  # key
        # The variant carries product fields (name, description, status): a change to either is a new version.
        version_of(raw.get("updated_at"), raw_product.get("updated_at"), raw.get("created_at")),  # version
        ident(raw.get("product_id")) or parent.key,  # product_key
        title,  # title
        parent.title,  # product_title
        _display_name(parent.title, title),  # display_name
        text(raw.get("sku")),  # sku
        text(raw.get("barcode")),  # barcode
        money(raw.get("price")),  # price
        money(raw.get("compare_at_price")),  # compare_at_price
        parent.description,  # description
        parent.status,  # status
        parent.vendor,  # vendor
        tuple([o for o in options if o]),  # options
        int_or_raw(raw.get("inventory_quantity")),  # inventory_quantity
        int_or_raw(raw.get("position")),  # position
        utc_timestamp(raw.get("created_at")),  # created_at
        utc_timestamp(raw.get("updated_at")),  # updated_at
    )


def _display_name(product_title: str | None, variant_title: str | None) -> str | None:
    if not variant_title or variant_title == _DEFAULT_VARIANT_TITLE:
        return product_title or variant_title
    if not product_title:
        return variant_title
    return f"{product_title} - {variant_title}"


# -- orders ----------------------------------------------------------------------


def _order_records(raw: dict[str, Any]) -> Normalized:
    customer_id = _customer_id(raw)  # read once for the guest test and the order
    guest = None if customer_id is not None else _guest(raw)
    record = _order(raw, guest.key if guest else None, customer_id)
    # The guest comes first so that, within one staged order, its Account exists before the Order.
    out: Normalized = [] if guest is None else [("customer", guest)]
    out.append(("order", record))
    out += [("order_line", line) for line in record.lines]
    out += [("refund", refund) for refund in record.refunds]
    return out


def order(raw: dict[str, Any], guest_key: str | None = None) -> Order:
    return _order(raw, guest_key, _customer_id(raw))


def _order(raw: dict[str, Any], guest_key: str | None, customer_id: str | None) -> Order:
    get = raw.get
    key = ident(get("id")) or _missing_key(raw)
    updated_at, created_at = utc_timestamp(get("updated_at")), utc_timestamp(get("created_at"))
    version = newest_version(updated_at, created_at)
    currency = text(get("currency"))
    if guest_key is None and customer_id is None:
        guest_key = guest_key_for(raw)
    refunds = tuple([_refund(r, key, version, currency) for r in _dicts(get("refunds"))])
    billing_raw, shipping_raw = _dict(get("billing_address")), _dict(get("shipping_address"))
    billing = _address(billing_raw)
    # Most orders ship where they bill: one Address value serves both (records are never mutated).
    shipping = billing if shipping_raw == billing_raw else _address(shipping_raw)
    number = get("order_number")
    total_price, total_price_set = get("total_price"), get("total_price_set")  # read for two fields
    # Positional, in Order's field order (each argument named in its comment): the busiest record, and a
    # keyword call of 33 arguments costs 5-6x as much as this one.
    return Order(
        key,
        version,
        text(get("name")),  # name
        int_or_raw(number if number is not None else get("number")),  # number
        customer_id or guest_key,  # customer_key
        guest_key is not None,  # is_guest
        text(get("email")) or text(get("contact_email")),  # email
        text(get("phone")),  # phone
        currency,
        text(get("presentment_currency")) or currency,  # presentment_currency
        text(get("financial_status")),  # financial_status
        text(get("fulfillment_status")),  # fulfillment_status
        utc_timestamp(get("cancelled_at")),  # cancelled_at
        text(get("cancel_reason")),  # cancel_reason
        utc_timestamp(get("closed_at")),  # closed_at
        utc_timestamp(get("processed_at")) or created_at,  # processed_at
        _local_date(get("processed_at") or get("created_at")),  # processed_on
        created_at,
        updated_at,
        text(get("note")),  # note
        tags(get("tags")),  # tags
        text(get("source_name")),  # source_name
        get("test") is True,  # test
        money(total_price) or _bag_amount(total_price_set, "shop_money"),  # total_price
        _shop_money(get, "subtotal_price", "subtotal_price_set"),  # subtotal_price
        _shop_money(get, "total_tax", "total_tax_set"),  # total_tax
        _shop_money(get, "total_discounts", "total_discounts_set"),  # total_discounts
        # total_refunded: the refunds' sum; a GraphQL read that left refunds out (no object maps them) carries
        # the order's own totalRefundedSet instead (gql_shape.Shaper._refunds).
        _total_refunded(refunds) if refunds or "total_refunded_set" not in raw else _refunded_set(get),
        _bag_amount(total_price_set, "presentment_money") or money(total_price),  # presentment_total_price
        billing,  # billing_address
        shipping,  # shipping_address
        # A list made into a tuple: a generator would be resumed once per line (~1% of the whole path).
        tuple([_line(li, key, version, updated_at) for li in _dicts(get("line_items"))]),  # lines
        refunds,
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
    return _guest(raw)


def _guest(raw: dict[str, Any]) -> Customer:
    address = _address(_dict(raw.get("billing_address")) or _dict(raw.get("shipping_address")))
    first = address.first_name if address else None
    last = address.last_name if address else None
    flag = raw.get("buyer_accepts_marketing")
    # Positional, in Customer's field order (a keyword call costs ~3.5x as much).
    return Customer(
        guest_key_for(raw),  # key
        version_of(raw.get("updated_at"), raw.get("created_at")),  # version
        None,  # source_id
        text(raw.get("email")) or text(raw.get("contact_email")),  # email
        first,  # first_name
        last,  # last_name
        _full_name(first, last),  # full_name
        address.company if address else None,  # company
        text(raw.get("phone")) or (address.phone if address else None),  # phone
        None,  # note
        (),  # tags
        None,  # state
        flag if isinstance(flag, bool) else None,  # accepts_marketing
        text(raw.get("currency")),  # currency
        address,
        True,  # is_guest
        utc_timestamp(raw.get("created_at")),  # created_at
        utc_timestamp(raw.get("updated_at")),  # updated_at
    )


def _customer_id(raw: dict[str, Any]) -> str | None:
    cust = raw.get("customer")
    return ident(cust.get("id")) if isinstance(cust, dict) else None


def _line(raw: dict[str, Any], order_key: str, version: str, updated_at: str | None) -> OrderLine:
    # The busiest builder (2-3 per order): one bound lookup, the name read once, and positional
    # arguments in OrderLine's field order (a keyword call costs ~3.5x as much).
    get = raw.get
    variant_key = ident(get("variant_id"))
    name = text(get("name"))
    price = money(get("price"))
    price_set = get("price_set")
    return OrderLine(
        ident(get("id")) or _missing_key(raw),  # key
        version,
        order_key,
        variant_key,
        ident(get("product_id")),  # product_key
        text(get("sku")),  # sku
        text(get("title")) or name,  # title
        text(get("variant_title")),  # variant_title
        name,
        text(get("vendor")),  # vendor
        int_or_raw(get("quantity")),  # quantity
        price or _bag_amount(price_set, "shop_money"),  # unit_price
        _bag_amount(price_set, "presentment_money") or price,  # presentment_unit_price
        _shop_money(get, "total_discount", "total_discount_set"),  # total_discount
        variant_key is None,  # is_custom
        get("gift_card") is True,  # is_gift_card
        updated_at,
    )


def _refund(raw: dict[str, Any], order_key: str, version: str, currency: str | None) -> Refund:
    # Positional, in Refund's field order, each argument named in its comment (a keyword call costs ~3.5x).
    return Refund(
        ident(raw.get("id")) or _missing_key(raw),  # key
        version,  # version
        order_key,  # order_key
        utc_timestamp(raw.get("created_at")),  # created_at
        utc_timestamp(raw.get("processed_at")),  # processed_at
        _refund_amount(raw, currency),  # amount
        currency,  # currency
        text(raw.get("note")),  # note
        raw["restock"] if isinstance(raw.get("restock"), bool) else None,  # restock
        tuple(  # line_keys
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
    if not refunds:
        return "0.00"  # str(Decimal("0.00")), for the nine orders in ten without a refund
    total = Decimal("0.00")
    for r in refunds:
        amount = decimal_or_none(r.amount)
        if amount is None:
            return None
        total += amount
    return str(total)


def _refunded_set(get: Callable[[str], Any]) -> str | None:
    """``total_refunded_set``'s shop amount, in the form ``_total_refunded``'s Decimal sum gives it."""
    amount = decimal_or_none(_bag_amount(get("total_refunded_set"), "shop_money"))
    return None if amount is None else str(Decimal("0.00") + amount)


# -- helpers ---------------------------------------------------------------------


def _shop_money(get: Callable[[str], Any], name: str, set_name: str) -> str | None:
    """The plain amount ``name``, else the shop side of its money bag ``set_name`` (``<name>_set``).

    Takes the record's bound ``get`` and both keys spelled out: no key is built or looked up per call.
    """
    return money(get(name)) or _bag_amount(get(set_name), "shop_money")


def _bag_amount(bag: Any, side: str) -> str | None:
    if not isinstance(bag, dict):
        return None
    inner = bag.get(side)
    return money(inner.get("amount")) if isinstance(inner, dict) else None


def _local_date(value: Any) -> str | None:
    """The calendar date in the timestamp's own offset (the shop's day), not UTC's."""
    if not isinstance(value, str):
        return None
    if offset_shape_parses(value):
        return value[:10]  # what the parse below gives for this shape, without parsing
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
