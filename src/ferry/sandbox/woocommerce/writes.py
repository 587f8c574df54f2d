"""Writes through the API: create, update, delete (trash or ``force``), batch, and the admin-side edit.

Each save stamps ``date_modified``/``date_modified_gmt`` from the write clock, as WooCommerce's data
stores do. Codes and messages: WC_REST_CRUD_Controller (invalid id, trash), WC_REST_Controller
(batch limit), the customers controller (no trash), the refunds controller and ``wc_create_refund``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from ferry.sandbox.woocommerce import records as rec
from ferry.sandbox.woocommerce.errors import WpError, invalid_id, invalid_params, missing_params
from ferry.sandbox.woocommerce.state import StoreState
from ferry.sandbox.woocommerce.store import POST_TYPES, Record

BATCH_LIMIT = 100
# Fields a client can never set (WooCommerce ignores them on write).
READ_ONLY = {"id", "date_created", "date_created_gmt", "date_modified", "date_modified_gmt", "_links", "refunds",
             "number", "order_key", "variations", "permalink", "avatar_url", "is_paying_customer", "parent_id"}
_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-']+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+$")
TRASHABLE = ("products", "orders", "coupons")
_ORDER_CREATE_HANDLED = ("status", "currency", "set_paid", "customer_id", "line_items", "shipping_lines")


def truthy(value: Any) -> bool:
    """A boolean request parameter as WordPress reads it (``rest_sanitize_boolean``)."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on") if value is not None else False


# -- create -------------------------------------------------------------------------------------------------

def create(state: StoreState, resource: str, body: dict[str, Any], parent: int | None = None) -> Record:
    if body.get("id"):
        post_type = POST_TYPES.get(resource, "customer")
        raise WpError(f"woocommerce_rest_{post_type}_exists", f"Cannot create existing {post_type}.", 400)
    maker = {"customers": _new_customer, "products": _new_product, "orders": _new_order, "coupons": _new_coupon,
             "variations": _new_variation, "refunds": _new_refund}[resource]
    record = maker(state, body, parent)
    if resource == "refunds":  # woocommerce_order_refunded is one of order.updated's hooks
        _order_changed(state, parent)
    else:
        state.changed(resource, "created", record)
    return record


def _order_changed(state: StoreState, order_id: int | None) -> None:
    order = state.get("orders", order_id or 0)
    if order is not None:
        state.changed("orders", "updated", order)


def _new_customer(state: StoreState, body: dict[str, Any], _: int | None) -> Record:
    email = body.get("email")
    if not email:
        raise missing_params(["email"])
    _check_email(str(email))
    if any(c["email"].lower() == str(email).lower() for c in state.store.customers):
        raise WpError("registration-error-email-exists",
                      'An account is already registered with your email address. <a href="#" class="showlogin">'
                      "Please log in.</a>", 400)
    now = state.clock.tick()
    record = rec.customer(state.st, state.user_id(), now, now, email=str(email),
                          first_name=str(body.get("first_name", "")), last_name=str(body.get("last_name", "")),
                          username=str(body.get("username") or str(email).split("@")[0]),
                          bill=rec.billing(), ship=rec.shipping(), meta=[])
    _merge(state, record, body)
    state.add("customers", record)
    return record


def _new_product(state: StoreState, body: dict[str, Any], _: int | None) -> Record:
    _check_sku(state, body.get("sku"), None)
    now = state.clock.tick()
    pid = state.post_id()
    ptype = str(body.get("type", "simple"))
    record = rec.product(state.st, pid, now, now, name=str(body.get("name", "Product")), slug=f"product-{pid}",
                         ptype=ptype, status=str(body.get("status", "publish")), sku="", regular="", sale="",
                         stock=None, categories=[], attributes=[], meta=[], base_url="https://shop.example")
    _merge(state, record, body)
    _reprice(record)
    state.add("products", record)
    return record


def _new_variation(state: StoreState, body: dict[str, Any], parent: int | None) -> Record:
    product = state.get("products", parent or 0)
    if product is None:
        raise WpError("woocommerce_rest_product_invalid_id", "Invalid ID.", 404)
    _check_sku(state, body.get("sku"), None)
    now = state.clock.tick()
    attributes = [{"id": 0, "name": str(a.get("name", "")), "option": str(a.get("option", ""))}
                  for a in body.get("attributes") or [] if isinstance(a, dict)]
    record = rec.variation(state.st, state.post_id(), product, now, now, sku="", regular="", sale="", stock=None,
                           attributes=attributes, menu_order=len(product["variations"]))
    _merge(state, record, {k: v for k, v in body.items() if k != "attributes"})
    _reprice(record)
    state.add("variations", record, product["id"])
    product["variations"].append(record["id"])
    state.stamp(product)
    return record


def _new_coupon(state: StoreState, body: dict[str, Any], _: int | None) -> Record:
    code = str(body.get("code") or "")
    if not code:
        raise missing_params(["code"])
    if any(c["code"].lower() == code.lower() for c in state.store.coupons):
        raise WpError("woocommerce_rest_coupon_code_already_exists", "The coupon code already exists", 400)
    now = state.clock.tick()
    record = rec.coupon(state.st, state.post_id(), now, now, code=code.lower(),
                        amount=rec.money(body.get("amount", 0)),
                        discount_type=str(body.get("discount_type", "fixed_cart")), expires=None, usage_count=0,
                        minimum="0.00", emails=[])
    _merge(state, record, {k: v for k, v in body.items() if k not in ("code", "amount")})
    state.add("coupons", record)
    return record


def _new_order(state: StoreState, body: dict[str, Any], _: int | None) -> Record:
    now = state.clock.tick()
    oid = state.post_id()
    status = str(body.get("status", "pending"))
    currency = str(body.get("currency") or state.store.currency)
    paid = now if truthy(body.get("set_paid")) else None
    if paid is not None and status == "pending":
        status = "processing"  # set_paid runs payment_complete()
    order: Record = {
        "id": oid, "parent_id": int(body.get("parent_id") or 0), "status": status, "currency": currency,
        "version": rec.WC_VERSION, "prices_include_tax": False,
        **rec.dates(state.st, "date_created", now), **rec.dates(state.st, "date_modified", now),
        **rec.order_totals([], Decimal(0), Decimal(0)),
        "customer_id": int(body.get("customer_id") or 0), "order_key": f"wc_order_{oid:012x}",
        "billing": rec.billing(), "shipping": rec.shipping(),
        "payment_method": str(body.get("payment_method", "")),
        "payment_method_title": str(body.get("payment_method_title", "")), "transaction_id": "",
        "customer_ip_address": "", "customer_user_agent": "", "created_via": "rest-api",
        "customer_note": str(body.get("customer_note", "")),
        **rec.dates(state.st, "date_completed", now if status == "completed" else None),
        **rec.dates(state.st, "date_paid", paid), "cart_hash": "", "number": str(oid), "meta_data": [],
        "line_items": [], "tax_lines": [], "shipping_lines": [], "fee_lines": [], "coupon_lines": [], "refunds": [],
        "payment_url": f"https://shop.example/checkout/order-pay/{oid}/?pay_for_order=true&key=wc_order_{oid:012x}",
        "is_editable": status in ("pending", "on-hold"), "needs_payment": status in ("pending", "failed"),
        "needs_processing": True, "currency_symbol": rec.CURRENCY_SYMBOLS.get(currency, currency),
    }
    if order["customer_id"] and state.get("customers", order["customer_id"]) is None:
        raise WpError("woocommerce_rest_invalid_customer_id", "Customer ID is invalid.", 400)
    _merge(state, order, {k: v for k, v in body.items()
                          if k not in _ORDER_CREATE_HANDLED})
    _add_lines(state, order, body.get("line_items") or [])
    _add_shipping(state, order, body.get("shipping_lines") or [])
    _retotal(order)
    state.add("orders", order)
    return order


def _new_refund(state: StoreState, body: dict[str, Any], parent: int | None) -> Record:
    order = state.get("orders", parent or 0)
    if order is None:
        # The controller passes 404 as the error's data, not as {"status": 404}: WordPress then answers 500.
        raise int_data_error("woocommerce_rest_invalid_order_id", "Invalid order ID.", 404)
    amount = _decimal(body.get("amount", "0"))
    if amount < 0:
        raise int_data_error("woocommerce_rest_invalid_order_refund", "Refund amount must be greater than zero.", 400)
    refunded = sum((Decimal(r["total"]).copy_abs() for r in order["refunds"]), Decimal(0))
    if amount > Decimal(order["total"]) - refunded:
        raise int_data_error("woocommerce_rest_cannot_create_order_refund", "Invalid refund amount.", 500)
    now = state.clock.tick()
    refund: Record = {
        "id": state.post_id(), **rec.dates(state.st, "date_created", now), "amount": rec.money(amount),
        "reason": str(body.get("reason") or ""), "refunded_by": 1,
        "refunded_payment": truthy(body.get("api_refund", True)) and order["payment_method"] == "stripe",
        "meta_data": [{"id": state.meta_id(), "key": str(m.get("key")), "value": m.get("value")}
                      for m in body.get("meta_data") or [] if isinstance(m, dict)],
        "line_items": [], "shipping_lines": [], "tax_lines": [], "fee_lines": [],
    }
    state.add("refunds", refund, order["id"])
    order["refunds"].insert(0, {"id": refund["id"], "reason": refund["reason"], "total": f"-{refund['amount']}"})
    if refunded + amount >= Decimal(order["total"]):
        order["status"] = "refunded"  # wc_create_refund marks a fully refunded order
    state.stamp(order)
    return refund


class IntDataError(WpError):
    """A WP_Error whose data is a bare status number rather than ``{"status": n}``: WordPress then sends 500."""

    def __init__(self, code: str, message: str, data: int) -> None:
        super().__init__(code, message, 500)
        self.data = data

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data}


def int_data_error(code: str, message: str, data: int) -> WpError:
    return IntDataError(code, message, data)


# -- update -------------------------------------------------------------------------------------------------

def update(state: StoreState, resource: str, rid: int, body: dict[str, Any], parent: int | None = None) -> Record:
    record = state.get(resource, rid)
    if record is None:
        raise _invalid(resource, 400)
    if resource == "customers" and "email" in body and body["email"] != record["email"]:
        _check_email(str(body["email"]))
    if resource in ("products", "variations") and "sku" in body:
        _check_sku(state, body.get("sku"), rid)
    if resource == "orders":
        _add_lines(state, record, body.get("line_items") or [])
        _add_shipping(state, record, body.get("shipping_lines") or [])
        if truthy(body.get("set_paid")) and record["date_paid"] is None:
            record.update(rec.dates(state.st, "date_paid", state.clock.tick()))
            if record["status"] in ("pending", "on-hold", "failed"):
                record["status"] = "processing"
        body = {k: v for k, v in body.items() if k not in ("line_items", "shipping_lines", "set_paid")}
    _merge(state, record, body)
    if resource in ("products", "variations"):
        _reprice(record)
    if resource == "orders":
        _retotal(record)
    state.stamp(record)
    state.changed(resource, "updated", record)
    return record


def _merge(state: StoreState, record: Record, body: dict[str, Any]) -> None:
    """Apply the writable fields of ``body``: objects (billing, shipping...) merged key by key, meta upserted."""
    for key, value in body.items():
        if key in READ_ONLY or key not in record:
            continue
        if key == "meta_data" and isinstance(value, list):
            _upsert_meta(state, record["meta_data"], value)
        elif isinstance(record[key], dict) and isinstance(value, dict):
            record[key].update({k: v for k, v in value.items() if k in record[key]})
        elif key in ("regular_price", "sale_price", "amount") and value not in (None, ""):
            record[key] = rec.money(_decimal(value))
        else:
            record[key] = value


def _upsert_meta(state: StoreState, meta: list[Record], changes: list[Any]) -> None:
    for change in changes:
        if not isinstance(change, dict) or "key" not in change:
            continue
        found = next((m for m in meta if (change.get("id") and m["id"] == change["id"]) or m["key"] == change["key"]),
                     None)
        if found is not None:
            found["value"] = change.get("value")
        else:
            meta.append({"id": state.meta_id(), "key": str(change["key"]), "value": change.get("value")})


def _reprice(record: Record) -> None:
    if record.get("type") == "variable":
        return
    record["price"] = record["sale_price"] or record["regular_price"]
    record["on_sale"] = bool(record["sale_price"])


def _add_lines(state: StoreState, order: Record, lines: list[Any]) -> None:
    for line in lines:
        if not isinstance(line, dict):
            continue
        existing = next((li for li in order["line_items"] if line.get("id") and li["id"] == line["id"]), None)
        if existing is not None:
            qty = int(line.get("quantity", existing["quantity"]))
            if qty <= 0:
                order["line_items"].remove(existing)  # quantity 0 removes the line
                continue
            unit = Decimal(existing["subtotal"]) / existing["quantity"]
            existing.update(_line(state, existing["product_id"], existing["variation_id"], qty, unit,
                                  existing["id"], existing["name"], existing["sku"]))
            continue
        product = state.get("products", int(line.get("product_id") or 0))
        variation = state.get("variations", int(line.get("variation_id") or 0))
        item = variation or product
        if item is None:
            raise WpError("woocommerce_rest_invalid_product_id", "Invalid product ID.", 400)  # unverified wording
        qty = int(line.get("quantity", 1))
        unit = _decimal(line["price"]) if line.get("price") is not None else _decimal(item.get("price") or 0)
        parent_id = state.parent_of["variations"].get(variation["id"], 0) if variation else _id(product)
        name = str(line.get("name") or (f"{state.by_id['products'][parent_id]['name']} - {item['name']}"
                                        if variation and parent_id in state.by_id["products"] else item["name"]))
        order["line_items"].append(_line(state, parent_id, variation["id"] if variation else 0, qty, unit,
                                         state.item_id(), name, item["sku"]))


def _id(record: Record | None) -> int:
    return int(record["id"]) if record else 0


def _line(state: StoreState, product_id: int, variation_id: int, qty: int, unit: Decimal, line_id: int, name: str,
          sku: str) -> Record:
    del state
    return rec.line_item(line_id, name=name, product_id=product_id, variation_id=variation_id, quantity=qty,
                         unit=unit, tax_rate=Decimal(0), tax_rate_id=0, discount=Decimal(0), sku=sku)


def _add_shipping(state: StoreState, order: Record, lines: list[Any]) -> None:
    for line in lines:
        if isinstance(line, dict) and not line.get("id"):
            order["shipping_lines"].append({
                "id": state.item_id(), "method_title": str(line.get("method_title", "")),
                "method_id": str(line.get("method_id", "")), "instance_id": "",
                "total": rec.money(line.get("total") or 0), "total_tax": "0.00", "taxes": [], "tax_status": "taxable",
                "meta_data": []})


def _retotal(order: Record) -> None:
    shipping = sum((Decimal(s["total"]) for s in order["shipping_lines"]), Decimal(0))
    shipping_tax = sum((Decimal(s["total_tax"]) for s in order["shipping_lines"]), Decimal(0))
    order.update(rec.order_totals(order["line_items"], shipping, shipping_tax))


def _check_email(email: str) -> None:
    if not _EMAIL.match(email):
        raise invalid_params({"email": ("rest_invalid_email", "Invalid email address.", None)})


def _check_sku(state: StoreState, sku: Any, own_id: int | None) -> None:
    if not sku:
        return
    for resource in ("products", "variations"):
        for r in state.records(resource):
            if r["sku"] == sku and r["id"] != own_id:
                raise WpError("product_invalid_sku", "Invalid or duplicated SKU.", 400,
                              {"resource_id": r["id"], "unique_sku": f"{sku}-1"})


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


# -- delete -------------------------------------------------------------------------------------------------

def delete(state: StoreState, resource: str, rid: int, force: bool, parent: int | None = None) -> Record:
    """Trash, or with ``force`` delete for good; returns the record as it was before (what WooCommerce answers)."""
    record = state.get(resource, rid)
    if resource == "customers":
        # The customers controller checks ``force`` first, then the id (and answers a missing one with 400).
        if not force:
            raise WpError("woocommerce_rest_trash_not_supported", "Customers do not support trashing.", 501)
        if record is None:
            raise WpError("woocommerce_rest_invalid_id", "Invalid resource id.", 400)
    if record is None:
        raise _invalid(resource, 404)
    before = copy.deepcopy(record)
    if resource == "refunds":
        force = True  # the refunds route's ``force`` defaults to true; refunds cannot be trashed
    if not force:
        if resource not in TRASHABLE:
            post_type = POST_TYPES[resource]
            raise WpError("woocommerce_rest_trash_not_supported", f"The {post_type} does not support trashing.", 501)
        if record.get("status") == "trash":
            post_type = POST_TYPES[resource]
            raise WpError("woocommerce_rest_already_trashed", f"The {post_type} has already been deleted.", 410)
        record["status"] = "trash"
        state.stamp(record)
        state.changed(resource, "deleted", record)  # wp_trash_post: the hook of order/product/coupon.deleted
        return before
    state.remove(resource, rid)
    if resource == "variations" and parent is not None:
        product = state.get("products", parent)
        if product is not None and rid in product["variations"]:
            product["variations"].remove(rid)
    if resource == "refunds" and parent is not None:
        order = state.get("orders", parent)
        if order is not None:
            order["refunds"] = [r for r in order["refunds"] if r["id"] != rid]
            state.stamp(order)
            _order_changed(state, parent)  # woocommerce_delete_order_refund: an order.updated hook
    if resource == "customers":  # delete_user: customer.deleted (deleting a post for good has no topic)
        state.changed(resource, "deleted", record)
    return before


def _invalid(resource: str, status: int) -> WpError:
    if resource == "customers":
        return WpError("woocommerce_rest_invalid_id", "Invalid resource ID.", status)
    return invalid_id(POST_TYPES[resource], status)


# -- batch --------------------------------------------------------------------------------------------------

def batch(state: StoreState, resource: str, body: dict[str, Any], parent: int | None = None) -> dict[str, list[Record]]:
    """WC_REST_Controller::batch_items: at most 100 items in all; a failed item carries its error, the call is 200."""
    return run_batch(body, lambda item: create(state, resource, item, parent),
                     lambda rid, item: update(state, resource, rid, item, parent),
                     lambda rid: delete(state, resource, rid, True, parent))


def run_batch(body: dict[str, Any], create_one: Callable[[dict[str, Any]], Record],
              update_one: Callable[[int, dict[str, Any]], Record],
              delete_one: Callable[[int], Record]) -> dict[str, list[Record]]:
    """The batch loop any controller shares: the 100-item limit, then creates, updates and deletes in turn."""
    items = {k: v for k, v in body.items() if k in ("create", "update", "delete") and v}
    total = sum(len(v) for v in items.values() if isinstance(v, list))
    if total > BATCH_LIMIT:
        raise WpError("woocommerce_rest_request_entity_too_large",
                      f"Unable to accept more than {BATCH_LIMIT} items for this request.", 413)
    out: dict[str, list[Record]] = {}
    for item in items.get("create") or []:
        out.setdefault("create", []).append(_attempt(0, create_one, _dict(item)))
    for item in items.get("update") or []:
        rid = int(item.get("id") or 0) if isinstance(item, dict) else 0
        out.setdefault("update", []).append(_attempt(rid, update_one, rid, _dict(item)))
    for raw in items.get("delete") or []:
        rid = int(raw) if str(raw).isdigit() else 0
        if rid:  # WooCommerce skips ids that are not positive integers
            out.setdefault("delete", []).append(_attempt(rid, delete_one, rid))
    return out


def _dict(item: Any) -> dict[str, Any]:
    return dict(item) if isinstance(item, dict) else {}


def _attempt(rid: int, action: Callable[..., Record], *args: Any) -> Record:
    try:
        result = action(*args)
    except WpError as exc:
        body = exc.body()
        return {"id": rid, "error": {"code": body["code"], "message": body["message"], "data": body["data"]}}
    return result


# -- the admin side -----------------------------------------------------------------------------------------

def admin_edit(state: StoreState, resource: str, rid: int, body: dict[str, Any]) -> Record:
    """An edit made in wp-admin (not through the API): any field may be set, ``date_modified`` bumps unless given."""
    record = state.get(resource, rid)
    assert record is not None
    touch = body.pop("touch", True)
    for key, value in body.items():
        if isinstance(record.get(key), dict) and isinstance(value, dict):
            record[key].update(value)
        else:
            record[key] = value
    if touch and not ({"date_modified", "date_modified_gmt"} & set(body)) and "date_modified" in record:
        state.stamp(record)
    state.changed(resource, "updated", record)
    return record
