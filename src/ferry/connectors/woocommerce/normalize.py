"""WooCommerce REST (wc/v3) JSON -> canonical records.

How WooCommerce's shapes become the canonical model (``ferry.model.canonical``):

* Times: only the ``*_gmt`` fields are read (``date_modified_gmt``, ...). They carry no offset and are
  UTC; the plain ``date_modified`` is the same instant in the store's timezone, also without an offset,
  so reading it as UTC would shift every version by the store's offset. The one exception is the
  order's ``processed_on``, the calendar day the shop saw: the local ``date_created``'s date.
* Versions: a record's ``date_modified_gmt`` (``date_created_gmt`` when missing). A product's version is
  the newest of its own and its variations' (``_variations``, embedded by the source): a variant
  carries product fields, and a variation can change without its parent.
* Variants: each *variation* of a variable product is a ProductVariant keyed by the variation id; a
  simple (or external) product is one ProductVariant keyed by the product id itself; a variable product
  (the parent) and a grouped product (a bundle of other products) are not sold as such and have none.
  WordPress gives products and variations ids from one sequence (both are posts), so these keys are
  unique across the store and stable: the Product2 external id of what an order line sold. An order
  line points at ``variation_id`` when set, else ``product_id``: the same key.
* Guests: an order with ``customer_id`` 0 is a guest checkout. Its customer is keyed as Shopify's guests
  are, ``guest:<billing email lowercased>`` (``guest:order:<order id>`` without an email), so repeat
  guest buyers are one Account.
* Refunds: the order lists each refund as ``{id, reason, total}`` with a negative total; ``amount`` is its
  absolute value, and the order's ``total_refunded`` their sum. Their dates and lines are not in the
  order: the source does not fetch each refund (one call per refund) for fields no mapping needs yet.
* Messy data never raises: ids 0/""/null mean "none", unparseable values pass through for the validator.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from ferry.core.contracts import Normalized
from ferry.model.canonical import Address, Customer, Order, OrderLine, Product, ProductVariant, Refund
from ferry.model.values import (
    MISSING_KEY_PREFIX,
    SEEN_KEY,
    decimal_or_none,
    int_or_raw,
    money,
    newest_version,
    offset_shape_parses,
    settle_versions,
    strip_html,
    tags,
    text,
    utc_timestamp,
)
from ferry.model.values import mark_unsettled as values_mark_unsettled

STREAMS = ("customers", "products", "orders")
VARIATIONS_KEY = "_variations"  # where the source embeds a variable product's variation records
# WordPress post statuses -> the canonical product status (active | draft | archived).
_PRODUCT_STATUS = {"publish": "active", "draft": "draft", "pending": "draft", "future": "draft", "private": "archived"}
_UNSOLD_TYPES = frozenset({"variable", "grouped"})
_CENTS = Decimal("0.01")


def normalize(stream: str, raw: dict[str, Any]) -> Normalized:
    """``(entity, record)`` pairs for one raw record of a WooCommerce stream, in load order."""
    out = _normalized(stream, raw)
    if SEEN_KEY in raw:  # a record seen within its stamp's second (values.unsettled_version)
        settle_versions(raw, out)
    return out


def mark_unsettled(stream: str, records: list[dict[str, Any]], threshold: str | None = None,
                   seen: float | None = None) -> int:
    """``values.mark_unsettled`` by the record's version (``date_modified_gmt`` is to the second, like Shopify's
    updated_at: two changes in one second share it)."""
    return values_mark_unsettled(records, lambda raw: record_version(stream, raw), threshold, seen)


def _normalized(stream: str, raw: dict[str, Any]) -> Normalized:
    if stream == "customers":
        return [("customer", customer(raw))]
    if stream == "products":
        parent = product(raw)
        variants = product_variants(raw, parent)
        parent.variant_keys = tuple(v.key for v in variants)
        out: Normalized = [("product", parent)]
        out += [("product_variant", v) for v in variants]
        return out
    if stream == "orders":
        return _order_records(raw)
    raise ValueError(f"unknown WooCommerce stream {stream!r}; expected one of {', '.join(STREAMS)}")


def record_key(raw: dict[str, Any]) -> str:
    """A raw record's key: its id, or a content hash when it has none (never a valid external id)."""
    return _id(raw.get("id")) or missing_key(raw)


def record_version(stream: str, raw: dict[str, Any]) -> str:
    """A raw record's version: its ``date_modified_gmt`` (a product's: with its embedded variations')."""
    own = modified_version(raw)
    if stream != "products":
        return own
    return newest_version(own, *(modified_version(v) for v in _dicts(raw.get(VARIATIONS_KEY))))


def modified_version(raw: dict[str, Any]) -> str:
    """The record's own ``date_modified_gmt`` (else ``date_created_gmt``) as a version: what the store sorts on."""
    return newest_version(_gmt(raw, "date_modified_gmt"), _gmt(raw, "date_created_gmt"))


# -- customers -------------------------------------------------------------------


def customer(raw: dict[str, Any]) -> Customer:
    source_id = _id(raw.get("id"))
    return _person(raw, source_id or missing_key(raw), source_id, None)


def guest_key_for(raw_order: dict[str, Any]) -> str:
    """``guest:<email lowercased>``, or ``guest:order:<order id>`` when the order has no email (as Shopify's)."""
    billing = _dict(raw_order.get("billing"))
    email = text(billing.get("email")) if billing else None
    if email:
        return f"guest:{email.lower()}"
    return f"guest:order:{record_key(raw_order)}"


def guest_customer(raw_order: dict[str, Any], version: str) -> Customer:
    """The customer a guest checkout implies: the order's billing person, at the order's version."""
    return _person(raw_order, guest_key_for(raw_order), None, version)


def _person(raw: dict[str, Any], key: str, source_id: str | None, version: str | None) -> Customer:
    """A customer record's or a guest order's person: names fall back to (for a guest: are) the billing's."""
    billing = _dict(raw.get("billing"))
    address = _address(billing or _dict(raw.get("shipping")))
    first = text(raw.get("first_name")) or (address.first_name if address else None)
    last = text(raw.get("last_name")) or (address.last_name if address else None)
    created_at, updated_at = _gmt(raw, "date_created_gmt"), _gmt(raw, "date_modified_gmt")
    is_guest = source_id is None and version is not None
    return Customer(
        key=key,
        version=version or newest_version(updated_at, created_at),
        source_id=source_id,
        # A registered customer's own email first; an order has none of its own, only the billing's.
        email=text(raw.get("email")) or text(billing.get("email") if billing else None),
        first_name=first,
        last_name=last,
        full_name=_full_name(first, last),
        company=address.company if address else None,
        phone=address.phone if address else None,
        state=None if is_guest else text(raw.get("role")),
        currency=text(raw.get("currency")) if is_guest else None,
        address=address,
        is_guest=is_guest,
        created_at=created_at,
        updated_at=updated_at,
    )


# -- products --------------------------------------------------------------------


def product(raw: dict[str, Any]) -> Product:
    categories = [text(c.get("name")) for c in _dicts(raw.get("categories"))]
    return Product(
        key=record_key(raw),
        version=record_version("products", raw),
        title=text(raw.get("name")),
        product_type=next((c for c in categories if c), None),
        status=_product_status(raw.get("status")),
        handle=text(raw.get("slug")),
        description=strip_html(raw.get("description")) or strip_html(raw.get("short_description")),
        tags=tags([name for x in _dicts(raw.get("tags")) if (name := text(x.get("name")))]),
        created_at=_gmt(raw, "date_created_gmt"),
        updated_at=_gmt(raw, "date_modified_gmt"),
    )


def product_variants(raw: dict[str, Any], parent: Product | None) -> list[ProductVariant]:
    """What can be sold of a product: its variations, or the product itself; see the module docstring."""
    kind = text(raw.get("type"))
    if kind == "variable" or (kind not in _UNSOLD_TYPES and raw.get(VARIATIONS_KEY)):
        return [_variation(raw, v, parent) for v in _dicts(raw.get(VARIATIONS_KEY))]
    if kind in _UNSOLD_TYPES:
        return []
    return [_variation(raw, raw, parent)]


def _variation(raw_product: dict[str, Any], raw: dict[str, Any], parent: Product | None) -> ProductVariant:
    is_product = raw is raw_product
    product_title = text(raw_product.get("name"))
    options = () if is_product else _options(raw)
    title = None if is_product else (" / ".join(options) or text(raw.get("name")))
    return ProductVariant(
        key=record_key(raw),
        # A variant carries the product's name, description and status: a change to either is a new version.
        version=newest_version(modified_version(raw), modified_version(raw_product)),
        product_key=record_key(raw_product),
        title=title,
        product_title=product_title,
        display_name=f"{product_title} - {title}" if product_title and title else product_title or title,
        sku=text(raw.get("sku")) or (None if is_product else text(raw_product.get("sku"))),
        barcode=text(raw.get("global_unique_id")),
        price=money(raw.get("regular_price")) or money(raw.get("price")),
        compare_at_price=None,
        description=strip_html(raw.get("description")) or (parent.description if parent else None),
        status=_variant_status(raw, raw_product, is_product),
        options=options,
        inventory_quantity=int_or_raw(raw.get("stock_quantity")),
        position=int_or_raw(raw.get("menu_order")),
        created_at=_gmt(raw, "date_created_gmt"),
        updated_at=_gmt(raw, "date_modified_gmt"),
    )


def _options(raw_variation: dict[str, Any]) -> tuple[str, ...]:
    return tuple(o for o in (text(a.get("option")) for a in _dicts(raw_variation.get("attributes"))) if o)


def _product_status(value: Any) -> str | None:
    status = text(value)
    return _PRODUCT_STATUS.get(status, status) if status else None


def _variant_status(raw: dict[str, Any], raw_product: dict[str, Any], is_product: bool) -> str | None:
    """A variation sells only while both it and its product are published."""
    product_status = _product_status(raw_product.get("status"))
    if is_product or product_status != "active":
        return product_status
    return _product_status(raw.get("status")) or product_status


# -- orders ----------------------------------------------------------------------


def _order_records(raw: dict[str, Any]) -> Normalized:
    record = order(raw)
    out: Normalized = []
    if record.is_guest:  # first, so within one staged order its Account exists before the Order
        out.append(("customer", guest_customer(raw, record.version)))
    out.append(("order", record))
    out += [("order_line", line) for line in record.lines]
    out += [("refund", refund) for refund in record.refunds]
    return out


def order(raw: dict[str, Any]) -> Order:
    key = record_key(raw)
    created_at, updated_at = _gmt(raw, "date_created_gmt"), _gmt(raw, "date_modified_gmt")
    version = newest_version(updated_at, created_at)
    currency = text(raw.get("currency"))
    customer_id = _id(raw.get("customer_id"))
    billing_raw, shipping_raw = _dict(raw.get("billing")), _dict(raw.get("shipping"))
    billing = _address(billing_raw)
    line_items = _dicts(raw.get("line_items"))
    lines = tuple([_line(li, key, version, updated_at) for li in line_items])
    refunds = tuple(_refund(r, key, version, currency) for r in _dicts(raw.get("refunds")))
    number = text(raw.get("number")) or key
    status = text(raw.get("status"))
    paid_at = _gmt(raw, "date_paid_gmt")
    # Positional, in Order's field order, each argument named in its comment: the busiest record, and a
    # keyword call of 33 arguments costs several times as much (see the Shopify normalizer).
    return Order(
        key,
        version,
        f"#{number}",  # name
        int_or_raw(number),  # number
        customer_id or guest_key_for(raw),  # customer_key
        customer_id is None,  # is_guest
        text(billing_raw.get("email")) if billing_raw else None,  # email
        text(billing_raw.get("phone")) if billing_raw else None,  # phone
        currency,
        currency,  # presentment_currency: WooCommerce charges in one currency, the one it reports
        _financial_status(status, paid_at, refunds),  # financial_status
        "fulfilled" if status == "completed" else None,  # fulfillment_status
        updated_at if status == "cancelled" else None,  # cancelled_at: the order's last change made it so
        None,  # cancel_reason
        _gmt(raw, "date_completed_gmt"),  # closed_at
        paid_at or created_at,  # processed_at
        _local_date(raw.get("date_created")),  # processed_on
        created_at,
        updated_at,
        text(raw.get("customer_note")),  # note
        (),  # tags
        text(raw.get("created_via")),  # source_name
        False,  # test
        money(raw.get("total")),  # total_price
        _sum([li.get("subtotal") for li in line_items]),  # subtotal_price
        money(raw.get("total_tax")),  # total_tax
        money(raw.get("discount_total")),  # total_discounts
        _sum([r.amount for r in refunds]) if refunds else "0.00",  # total_refunded
        money(raw.get("total")),  # presentment_total_price
        billing,  # billing_address
        billing if _same_place(billing_raw, shipping_raw) else _address(shipping_raw),  # shipping_address
        lines,
        refunds,
    )


def _financial_status(status: str | None, paid_at: str | None, refunds: tuple[Refund, ...]) -> str | None:
    """Shopify's financial statuses, read off WooCommerce's one order status and its refunds."""
    if status == "refunded":
        return "refunded"
    if refunds:
        return "partially_refunded"
    if status in ("processing", "completed") or paid_at:
        return "paid"
    if status in ("cancelled", "failed"):
        return "voided"
    return "pending" if status in ("pending", "on-hold", "checkout-draft") else status


def _line(raw: dict[str, Any], order_key: str, version: str, updated_at: str | None) -> OrderLine:
    product_key = _id(raw.get("product_id"))
    variant_key = _id(raw.get("variation_id")) or product_key
    quantity = int_or_raw(raw.get("quantity"))
    subtotal, total = money(raw.get("subtotal")), money(raw.get("total"))
    name = text(raw.get("name"))
    unit_price = _unit_price(subtotal, quantity) or money(raw.get("price"))
    # Positional, in OrderLine's field order (2-3 per order; a keyword call costs ~3.5x as much).
    return OrderLine(
        record_key(raw),  # key
        version,
        order_key,
        variant_key,
        product_key,
        text(raw.get("sku")),  # sku
        name,  # title
        " / ".join(_meta_options(raw)) or None,  # variant_title
        name,
        None,  # vendor
        quantity,
        unit_price,
        unit_price,  # presentment_unit_price: one currency
        _difference(subtotal, total),  # total_discount
        variant_key is None,  # is_custom
        False,  # is_gift_card
        updated_at,
    )


def _meta_options(raw_line: dict[str, Any]) -> list[str]:
    # A variation's attributes are listed in the line's meta_data as {key, value, display_value}.
    values = [m.get("display_value") or m.get("value") for m in _dicts(raw_line.get("meta_data"))
              if not str(m.get("key", "")).startswith("_")]  # "_reduced_stock" and the like are internal
    return [t for t in (text(v) for v in values if not isinstance(v, dict | list)) if t]


def _refund(raw: dict[str, Any], order_key: str, version: str, currency: str | None) -> Refund:
    amount = decimal_or_none(money(raw.get("total")))
    return Refund(
        key=record_key(raw),
        version=version,
        order_key=order_key,
        amount=str(abs(amount)) if amount is not None else money(raw.get("total")),
        currency=currency,
        note=text(raw.get("reason")),
    )


# -- helpers ---------------------------------------------------------------------


def _id(value: Any) -> str | None:
    """An id as text; None for WooCommerce's "none" (0, "0", "", null) and anything that is not an id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    candidate = text(value)
    if candidate is None or candidate == "0":
        return None
    return candidate


def _gmt(raw: dict[str, Any], field: str) -> str | None:
    """A ``*_gmt`` time (no offset, UTC) in the canonical form. Its usual shape, ``2026-07-21T21:13:41``, is
    checked by the same table lookups as an offset timestamp's and extended by text; anything else goes through
    ``utc_timestamp``, which reads a naive time as UTC and passes junk through for the validator."""
    value = raw.get(field)
    if value.__class__ is str and len(value) == 19 and offset_shape_parses(value + "+00:00"):
        return value + ".000000Z"
    return utc_timestamp(value)


def _local_date(value: Any) -> str | None:
    """The store's calendar day of a local (offset-less) timestamp: its first ten characters, when a date."""
    day = text(value)
    return day[:10] if day and len(day) >= 10 and day[4] == "-" and day[7] == "-" and day[:4].isdigit() else None


def _address(raw: dict[str, Any] | None) -> Address | None:
    """WooCommerce's billing/shipping block; None when it has nothing in it (WooCommerce sends every key, blank)."""
    if not raw:
        return None
    get = raw.get
    line1, line2 = text(get("address_1")), text(get("address_2"))
    state, country = text(get("state")), text(get("country"))
    city, postcode, phone = text(get("city")), text(get("postcode")), text(get("phone"))
    company, first, last = text(get("company")), text(get("first_name")), text(get("last_name"))
    if not (line1 or line2 or state or country or city or postcode or phone or company or first or last):
        return None
    # Positional, in Address's field order (1-2 per order; a keyword call costs ~3x as much).
    return Address(
        f"{line1}, {line2}" if line1 and line2 else line1 or line2,  # street
        city,
        state,  # province: WooCommerce sends the state's code ("CA"), not its name
        state,  # province_code
        postcode,  # zip
        country,  # country: the ISO code ("US"), WooCommerce never sends the name
        country,  # country_code
        phone,
        company,
        first,
        last,
    )


_PLACE = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state", "postcode", "country",
          "phone")


def _same_place(billing: dict[str, Any] | None, shipping: dict[str, Any] | None) -> bool:
    """Whether shipping repeats billing (most orders): one Address serves both. Billing alone has an email."""
    if billing is None or shipping is None:
        return billing is shipping
    return all(billing.get(k) == shipping.get(k) for k in _PLACE)


def _full_name(first: str | None, last: str | None) -> str | None:
    return f"{first} {last}" if first and last else first or last


def _unit_price(subtotal: str | None, quantity: int | str | None) -> str | None:
    """The line's price per unit before discounts (``subtotal / quantity``), to the cent; None if unknown."""
    amount = decimal_or_none(subtotal)
    if amount is None or not isinstance(quantity, int) or quantity <= 0:
        return None
    return str((amount / quantity).quantize(_CENTS))


def _difference(subtotal: str | None, total: str | None) -> str | None:
    before, after = decimal_or_none(subtotal), decimal_or_none(total)
    return None if before is None or after is None else str(before - after)


def _sum(amounts: list[Any]) -> str | None:
    total = Decimal("0.00")
    for value in amounts:
        amount = decimal_or_none(money(value))
        if amount is None:
            return None
        total += amount
    return str(total)


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def missing_key(raw: dict[str, Any]) -> str:
    # Deterministic, so a re-read of the same id-less record gets the same key; the validator refuses the
    # prefix as an external id, so the record is dead-lettered, not lost.
    digest = hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode(), usedforsecurity=False)
    return f"{MISSING_KEY_PREFIX}{digest.hexdigest()[:16]}"
