"""Writes through the API: PUT merges fields, POST creates; both stamp ``updated_at`` from the write clock.

Validation follows Shopify where it matters to an integration: 422 with ``{"errors": {field: [msg]}}``
for a taken or malformed email or phone, a customer without any identity, a blank product title.
Read-only fields in a body (ids, timestamps, counters) are ignored, as Shopify ignores them, so a
client can save back a record it just fetched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ferry.sandbox.shopify.errors import ApiError, not_found, unprocessable
from ferry.sandbox.shopify.ids import gid
from ferry.sandbox.shopify.money import USD, Presentment, dec
from ferry.sandbox.shopify.orders import Lifecycle, LineSpec, OrderInput
from ferry.sandbox.shopify.pools import CURRENCIES
from ferry.sandbox.shopify.state import ShopState
from ferry.sandbox.shopify.store import Record
from ferry.sandbox.shopify.times import shop_offset

Updater = Callable[[ShopState, int, dict[str, Any]], Record]
Creator = Callable[[ShopState, dict[str, Any]], Record]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-.]{6,19}$")
_READ_ONLY = frozenset({"id", "created_at", "updated_at", "admin_graphql_api_id"})
_CUSTOMER_READ_ONLY = _READ_ONLY | {"orders_count", "total_spent", "last_order_id", "last_order_name",
                                    "default_address", "currency"}
_CUSTOMER_FIELDS = frozenset({"email", "first_name", "last_name", "phone", "note", "tags", "state",
                              "verified_email", "tax_exempt", "tax_exemptions", "addresses",
                              "email_marketing_consent", "sms_marketing_consent", "multipass_identifier"})
_PRODUCT_FIELDS = frozenset({"title", "body_html", "vendor", "product_type", "handle", "status", "tags",
                             "published_at", "published_scope", "template_suffix", "options", "images",
                             "variants"})
# Shopify lets an existing order change only these; anything else in the body is ignored.
_ORDER_FIELDS = frozenset({"note", "note_attributes", "email", "phone", "buyer_accepts_marketing", "tags",
                           "shipping_address"})
_PRODUCT_STATUSES = ("active", "draft", "archived")


# ---------------------------------------------------------------------- customers
def update_customer(state: ShopState, rid: int, body: dict[str, Any]) -> Record:
    table = state.table("customers")
    rec = table.get(rid)
    if rec is None:
        raise not_found()
    changes = {k: v for k, v in body.items() if k in _CUSTOMER_FIELDS and k not in _CUSTOMER_READ_ONLY}
    _check_contact(state, changes, rec)
    if "addresses" in changes:
        changes["addresses"] = _addresses(state, rid, changes["addresses"])
    rec.update(changes)
    if "addresses" in changes:
        rec["default_address"] = _default_address(rec["addresses"])
    rec["updated_at"] = state.clock.now_text()
    table.touched(rid)
    state.changed("customers", "update", rec)
    return rec


def delete_customer(state: ShopState, rid: int) -> None:
    """DELETE /customers/{id}.json: Shopify refuses (422) while the customer has orders."""
    table = state.table("customers")
    if table.get(rid) is None:
        raise not_found()
    if any((o.get("customer") or {}).get("id") == rid for o in state.table("orders").records):
        raise unprocessable("base", "Cannot delete a customer with orders")  # body text unverified
    gone = table.remove(rid)
    if gone is not None:
        state.changed("customers", "delete", gone)


def create_customer(state: ShopState, body: dict[str, Any]) -> Record:
    table = state.table("customers")
    fields = {k: v for k, v in body.items() if k in _CUSTOMER_FIELDS}
    if not any(fields.get(k) for k in ("email", "phone", "first_name", "last_name")):
        raise unprocessable("customer", "Customer must have a name, phone number or email address")
    _check_contact(state, fields, None)
    cid = state.ids["customer"].next()
    now = state.clock.now_text()
    addresses = _addresses(state, cid, fields.pop("addresses", []) or [])
    rec: Record = {
        "id": cid, "email": None, "created_at": now, "updated_at": now, "first_name": None, "last_name": None,
        "orders_count": 0, "state": "disabled", "total_spent": "0.00", "last_order_id": None, "note": None,
        "verified_email": False, "multipass_identifier": None, "tax_exempt": False, "tags": "",
        "last_order_name": None, "currency": "USD", "phone": None, "addresses": addresses, "tax_exemptions": [],
        "email_marketing_consent": None, "sms_marketing_consent": None,
        "admin_graphql_api_id": gid("Customer", cid), "default_address": _default_address(addresses),
    }
    rec.update(fields)
    table.append(rec)
    state.changed("customers", "create", rec)
    return rec


def _check_contact(state: ShopState, fields: dict[str, Any], current: Record | None) -> None:
    """422 for a malformed or taken email/phone, checked only when the value changes.

    Generated data holds malformed and shared emails on purpose (imports do that to real shops);
    saving such a customer back unchanged must keep working.
    """
    errors: dict[str, list[str]] = {}
    for key, pattern in (("email", _EMAIL), ("phone", _PHONE)):
        value = fields.get(key)
        if not value or (current is not None and _same(current.get(key), value)):
            continue
        if not isinstance(value, str) or not pattern.match(value.strip()):
            errors[key] = ["is invalid"]
        elif _taken(state, key, value, None if current is None else current["id"]):
            errors[key] = ["has already been taken"]
    if errors:
        raise ApiError(422, errors)


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.strip().lower() == b.strip().lower()


def _taken(state: ShopState, key: str, value: str, own_id: int | None) -> bool:
    return any(_same(rec.get(key), value) and rec["id"] != own_id for rec in state.store.customers)


def _addresses(state: ShopState, cid: int, raw: Any) -> list[Record]:
    if not isinstance(raw, list):
        raise unprocessable("addresses", "is invalid")
    out = []
    for addr in raw:
        if not isinstance(addr, dict):
            raise unprocessable("addresses", "is invalid")
        item = {**addr, "customer_id": cid}
        if not isinstance(item.get("id"), int):
            item["id"] = state.ids["address"].next()
        out.append(item)
    if out and not any(a.get("default") for a in out):
        out[0]["default"] = True
    return out


def _default_address(addresses: list[Record]) -> Record | None:
    return next((a for a in addresses if a.get("default")), addresses[0] if addresses else None)


# ---------------------------------------------------------------------- products
def update_product(state: ShopState, rid: int, body: dict[str, Any]) -> Record:
    table = state.table("products")
    rec = table.get(rid)
    if rec is None:
        raise not_found()
    changes = {k: v for k, v in body.items() if k in _PRODUCT_FIELDS}
    if "title" in changes and not (isinstance(changes["title"], str) and changes["title"].strip()):
        raise unprocessable("title", "can't be blank")
    if "status" in changes and changes["status"] not in _PRODUCT_STATUSES:
        raise unprocessable("status", "is not included in the list")
    now = state.clock.now_text()
    if "variants" in changes:
        changes["variants"] = _merge_variants(state, rec, changes["variants"], now)
    rec.update(changes)
    rec["updated_at"] = now
    table.touched(rid)
    state.changed("products", "update", rec)
    return rec


def _merge_variants(state: ShopState, product: Record, raw: Any, now: str) -> list[Record]:
    """Shopify semantics: the list given is the new set; known ids merge, new entries get ids."""
    if not isinstance(raw, list) or not raw:
        raise unprocessable("variants", "is invalid")
    existing = {v["id"]: v for v in product.get("variants") or []}
    out: list[Record] = []
    for pos, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise unprocessable("variants", "is invalid")
        changes = {k: v for k, v in item.items() if k not in _READ_ONLY and k != "product_id"}
        old = existing.get(item["id"]) if isinstance(item.get("id"), int) else None
        if old is None:
            vid = state.ids["variant"].next()
            old = {"id": vid, "product_id": product["id"], "title": "Default Title", "price": "0.00",
                   "sku": None, "position": pos, "created_at": now, "grams": 0,
                   "inventory_item_id": state.ids["inventory_item"].next(),
                   "admin_graphql_api_id": gid("ProductVariant", vid)}
        merged = {**old, **changes, "updated_at": now}
        out.append(merged)
    return out


# ---------------------------------------------------------------------- orders
def update_order(state: ShopState, rid: int, body: dict[str, Any]) -> Record:
    table = state.table("orders")
    rec = table.get(rid)
    if rec is None:
        raise not_found()
    changes = {k: v for k, v in body.items() if k in _ORDER_FIELDS}
    email = changes.get("email")
    if email and not _same(rec.get("email"), email) and not (isinstance(email, str) and _EMAIL.match(email)):
        raise unprocessable("email", "is invalid")
    rec.update(changes)
    if "email" in changes:
        rec["contact_email"] = changes["email"]
    rec["updated_at"] = state.clock.now_text()
    table.touched(rid)
    state.changed("orders", "update", rec)
    return rec


def create_order(state: ShopState, body: dict[str, Any]) -> Record:
    lines = _line_specs(state, body.get("line_items"))
    customer, email = _order_customer(state, body)
    created = state.clock.tick()
    financial = body.get("financial_status") or "paid"
    if financial not in ("paid", "pending", "authorized"):
        raise unprocessable("financial_status", "is not included in the list")
    orders = state.table("orders")
    number = 1 + max((o.get("order_number") or 1000 for o in state.store.orders), default=1000)
    address = body.get("shipping_address") or body.get("billing_address")
    if address is None and customer is not None:
        address = customer.get("default_address")
    order_in = OrderInput(
        id=state.ids["order"].next(), number=number, created=created, offset=shop_offset(created), email=email,
        phone=body.get("phone"), customer=customer,
        billing=body.get("billing_address") or address, shipping=address, lines=lines,
        presentment=_presentment(body.get("presentment_currency")), tax_bp=0,  # API orders are not taxed unless told
        lifecycle=Lifecycle(financial_status=financial), note=body.get("note"), tags=body.get("tags") or "",
        token=f"{int(state.random() * 2**64):016x}{int(state.random() * 2**64):016x}",
    )
    order, _ = state.builder.build(order_in)
    orders.append(order)
    state.changed("orders", "create", order)
    if customer is not None:
        _count_order(state, customer["id"], order)
    return order


def _line_specs(state: ShopState, raw: Any) -> list[LineSpec]:
    if not isinstance(raw, list) or not raw:
        raise unprocessable("line_items", "can't be blank")
    variants = {v["id"]: (p, v) for p in state.store.products for v in p.get("variants") or ()}
    specs = []
    for item in raw:
        if not isinstance(item, dict):
            raise unprocessable("line_items", "is invalid")
        qty = item.get("quantity", 1)
        if not isinstance(qty, int) or qty < 1:
            raise unprocessable("line_items", "quantity must be greater than 0")
        if item.get("variant_id") is not None:
            found = variants.get(item["variant_id"])
            if found is None:
                raise unprocessable("line_items", f"variant {item['variant_id']} does not exist")
            product, variant = found
            specs.append(LineSpec("catalog", product["title"], _cents(variant["price"]), qty, product, variant,
                                  int(variant.get("grams") or 0)))
        elif item.get("title"):
            specs.append(LineSpec("custom", str(item["title"]), _cents(item.get("price", "0")), qty))
        else:
            raise unprocessable("line_items", "must have a variant_id or a title")
    return specs


def _cents(value: Any) -> int:
    try:
        return int((Decimal(str(value)) * 100).to_integral_value(ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        raise unprocessable("line_items", "price is invalid") from None


def _order_customer(state: ShopState, body: dict[str, Any]) -> tuple[Record | None, str | None]:
    raw = body.get("customer")
    email = body.get("email")
    if isinstance(raw, dict) and raw.get("id") is not None:
        rec = state.table("customers").get(raw["id"])
        if rec is None:
            raise unprocessable("customer", "not found")
        keys = ("id", "email", "created_at", "updated_at", "first_name", "last_name", "state", "note",
                "verified_email", "multipass_identifier", "tax_exempt", "phone", "email_marketing_consent",
                "sms_marketing_consent", "tags", "currency", "tax_exemptions", "admin_graphql_api_id",
                "default_address")
        return {k: rec.get(k) for k in keys}, email or rec.get("email")
    return None, email


def _presentment(code: Any) -> Presentment:
    for cur, rate, digits in CURRENCIES:
        if cur == code:
            return Presentment(cur, rate, digits)
    return USD


def _count_order(state: ShopState, cid: int, order: Record) -> None:
    customers = state.table("customers")
    rec = customers.get(cid)
    if rec is None:
        return
    rec["orders_count"] = int(rec.get("orders_count") or 0) + 1
    rec["total_spent"] = dec(_cents(rec.get("total_spent") or "0") + _cents(order["total_price"]))
    rec["last_order_id"] = order["id"]
    rec["last_order_name"] = order["name"]
    rec["updated_at"] = state.clock.now_text()
    customers.touched(cid)
    state.changed("customers", "update", rec)
