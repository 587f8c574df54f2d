"""Mutations, written through the same functions REST writes use, so both APIs change the same records.

Business failures come back as Shopify sends them: HTTP 200, the payload's object ``null`` and
``userErrors [{field: [path], message}]`` (typed ``code`` on bulk and inventory errors); only schema,
cost and auth problems use the top-level ``errors``.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from ferry.sandbox.shopify import writes
from ferry.sandbox.shopify.errors import ApiError
from ferry.sandbox.shopify.graphql.context import LOCATION_ID, Context, parse_gid
from ferry.sandbox.shopify.graphql.views import (
    LOCATION,
    CustomerView,
    InventoryItemView,
    OrderView,
    WebhookSubscriptionView,
    utc,
)
from ferry.sandbox.shopify.ids import gid
from ferry.sandbox.shopify.subscriptions import TOPICS, SubscriptionError

# Reasons inventorySetQuantities accepts (Shopify's documented list).
INVENTORY_REASONS = frozenset({
    "correction", "cycle_count_available", "damaged", "movement_created", "movement_updated", "movement_received",
    "movement_canceled", "other", "promotion", "quality_control", "received", "reservation_created",
    "reservation_deleted", "reservation_updated", "restock", "safety_stock", "shrinkage",
})


def _ctx(info: GraphQLResolveInfo) -> Context:
    ctx: Context = info.context
    return ctx


def user_error(field: list[str] | None, message: str, code: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"field": field, "message": message}
    if code is not None:
        err["code"] = code
    return err


def _numeric(value: Any, kind: str) -> int | None:
    parsed = parse_gid(value, kind) if isinstance(value, str) else None
    return None if parsed is None else parsed[1]


def _rest_errors(exc: ApiError, prefix: list[str]) -> list[dict[str, Any]]:
    """A REST 422 body ({field: [messages]}) as userErrors: ``Email has already been taken`` on ``["email"]``."""
    if not isinstance(exc.errors, dict):
        return [user_error(None, str(exc.errors))]
    out = []
    for field, messages in exc.errors.items():
        camel = _camel(field)
        for message in messages if isinstance(messages, list) else [messages]:
            text = message if field in ("base", "customer") else f"{field.replace('_', ' ').capitalize()} {message}"
            out.append(user_error([*prefix, camel], text))
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


# ---------------------------------------------------------------------- customers and orders
def _address_body(raw: dict[str, Any]) -> dict[str, Any]:
    keys = {"address1": "address1", "address2": "address2", "city": "city", "company": "company",
            "countryCode": "country_code", "firstName": "first_name", "lastName": "last_name", "phone": "phone",
            "provinceCode": "province_code", "zip": "zip"}
    return {rest: raw[g] for g, rest in keys.items() if g in raw}


def _consent(raw: dict[str, Any] | None, sms: bool) -> dict[str, Any] | None:
    if raw is None:
        return None
    out = {"state": str(raw["marketingState"]).lower(),
           "opt_in_level": str(raw.get("marketingOptInLevel") or "single_opt_in").lower(),
           "consent_updated_at": raw.get("consentUpdatedAt")}
    if sms:
        out["consent_collected_from"] = "OTHER"
    return out


def customer_update(_: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    ctx = _ctx(info)
    cid = _numeric(input.get("id"), "Customer")
    if cid is None or ctx.state.table("customers").get(cid) is None:
        return {"customer": None, "userErrors": [user_error(["id"], "Customer does not exist")]}
    try:
        rec = writes.update_customer(ctx.state, cid, _customer_body(input))
    except ApiError as exc:
        return {"customer": None, "userErrors": _rest_errors(exc, [])}
    return {"customer": CustomerView(rec, ctx), "userErrors": []}


def customer_create(_: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    """``customerCreate``: the same checks as REST's POST (a taken or malformed email/phone, no identity at all),
    answered as userErrors (``["email"]`` "Email has already been taken")."""
    ctx = _ctx(info)
    if input.get("id") is not None:
        return {"customer": None, "userErrors": [user_error(["id"], "Id must be blank when creating a customer")]}
    try:
        rec = writes.create_customer(ctx.state, _customer_body(input))
    except ApiError as exc:
        return {"customer": None, "userErrors": _rest_errors(exc, [])}
    return {"customer": CustomerView(rec, ctx), "userErrors": []}


def _customer_body(input: dict[str, Any]) -> dict[str, Any]:
    """A ``CustomerInput`` as the REST body the shared writes take (only the fields the input names)."""
    body: dict[str, Any] = {}
    for gql_name, rest_name in (("email", "email"), ("phone", "phone"), ("firstName", "first_name"),
                                ("lastName", "last_name"), ("note", "note"), ("taxExempt", "tax_exempt"),
                                ("taxExemptions", "tax_exemptions")):
        if gql_name in input:
            body[rest_name] = input[gql_name]
    if "tags" in input:
        body["tags"] = ", ".join(input["tags"] or [])
    if "addresses" in input:
        body["addresses"] = [_address_body(a) for a in input["addresses"] or []]
    if "emailMarketingConsent" in input:
        body["email_marketing_consent"] = _consent(input["emailMarketingConsent"], sms=False)
    if "smsMarketingConsent" in input:
        body["sms_marketing_consent"] = _consent(input["smsMarketingConsent"], sms=True)
    return body


def order_update(_: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    ctx = _ctx(info)
    oid = _numeric(input.get("id"), "Order")
    if oid is None or ctx.state.table("orders").get(oid) is None:
        return {"order": None, "userErrors": [user_error(["id"], "Order does not exist")]}
    body: dict[str, Any] = {k: input[k] for k in ("email", "phone", "note") if k in input}
    if "tags" in input:
        body["tags"] = ", ".join(input["tags"] or [])
    if "shippingAddress" in input:
        body["shipping_address"] = _address_body(input["shippingAddress"] or {})
    if "customAttributes" in input:
        body["note_attributes"] = [{"name": a["key"], "value": a["value"]} for a in input["customAttributes"] or []]
    try:
        rec = writes.update_order(ctx.state, oid, body)
    except ApiError as exc:
        return {"order": None, "userErrors": _rest_errors(exc, [])}
    if "poNumber" in input:  # GraphQL-only in the sandbox's REST writes, which keep Shopify's REST field list
        rec["po_number"] = input["poNumber"]
    return {"order": OrderView(rec, ctx), "userErrors": []}


# ---------------------------------------------------------------------- inventory
def inventory_set_quantities(_: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    """Compare-and-set of ``available`` (or ``on_hand``) at the store's one location (2025-07 input shape)."""
    ctx = _ctx(info)
    errors: list[dict[str, Any]] = []
    name, reason = input["name"], input["reason"]
    if name not in ("available", "on_hand"):
        errors.append(user_error(["input", "name"], "The quantity name must be either 'available' or 'on_hand'.",
                                 "INVALID_NAME"))
    if reason not in INVENTORY_REASONS:
        errors.append(user_error(["input", "reason"], "The specified reason is invalid.", "INVALID_REASON"))
    ignore_compare = bool(input.get("ignoreCompareQuantity"))
    targets = []
    for n, q in enumerate(input["quantities"]):
        path = ["input", "quantities", str(n)]
        iid = _numeric(q["inventoryItemId"], "InventoryItem")
        found = ctx.inventory_item(iid) if iid is not None else None
        if found is None:
            errors.append(user_error([*path, "inventoryItemId"], "The specified inventory item could not be found.",
                                     "INVALID_INVENTORY_ITEM"))
            continue
        if _numeric(q["locationId"], "Location") != LOCATION_ID:
            errors.append(user_error([*path, "locationId"], "The specified location could not be found.",
                                     "INVALID_LOCATION"))
            continue
        current = int(found[1].get("inventory_quantity") or 0)
        if not ignore_compare and q.get("compareQuantity") is None:
            errors.append(user_error([*path, "compareQuantity"], "The compareQuantity argument must be given to each "
                                     "quantity or ignored using ignoreCompareQuantity.", "COMPARE_QUANTITY_REQUIRED"))
        elif not ignore_compare and q["compareQuantity"] != current:
            errors.append(user_error([*path, "compareQuantity"], "The compareQuantity value does not match the "
                                     "current quantity.", "COMPARE_QUANTITY_STALE"))
        targets.append((found[0]["id"], found[1]["id"], q["quantity"], current))
    if errors:
        return {"inventoryAdjustmentGroup": None, "userErrors": errors}
    changes = []
    products = ctx.state.table("products")
    for pid, vid, quantity, before in targets:
        product = products.get(pid)  # the live (pinned) record, so the change is kept
        assert product is not None
        variant = next(v for v in product["variants"] if v["id"] == vid)
        variant["old_inventory_quantity"] = before
        variant["inventory_quantity"] = quantity
        changes.append({"name": name, "delta": quantity - before, "quantityAfterChange": quantity,
                        "item": InventoryItemView(variant, product, ctx), "location": LOCATION,
                        "ledgerDocumentUri": None})
    ctx.forget_variants()
    group_id = ctx.state.ids["inventory_item"].next()
    return {"inventoryAdjustmentGroup": {
        "__typename": "InventoryAdjustmentGroup", "id": gid("InventoryAdjustmentGroup", group_id),
        "createdAt": _now_utc(ctx), "reason": reason, "referenceDocumentUri": input.get("referenceDocumentUri"),
        "changes": lambda info, **_: changes}, "userErrors": []}


def _now_utc(ctx: Context) -> str | None:
    return utc(ctx.state.clock.now_text())


# ---------------------------------------------------------------------- webhooks
def webhook_subscription_create(_: Any, info: GraphQLResolveInfo, topic: str,
                                webhookSubscription: dict[str, Any]) -> dict[str, Any]:
    ctx = _ctx(info)
    sub = webhookSubscription
    address = sub.get("uri") or sub.get("callbackUrl")
    if not address:
        return {"webhookSubscription": None,
                "userErrors": [user_error(["webhookSubscription", "callbackUrl"], "Address can't be blank")]}
    try:
        rec = ctx.state.subscriptions.create(
            topic=TOPICS[topic], address=str(address), fmt=str(sub.get("format") or "JSON").lower(),
            fields=sub.get("includeFields") or [], namespaces=sub.get("metafieldNamespaces") or [],
            api_version=ctx.api_version, now=ctx.state.clock.now_text(), filter_text=sub.get("filter"))
    except SubscriptionError as exc:
        field = "callbackUrl" if exc.field == "address" else exc.field
        return {"webhookSubscription": None,
                "userErrors": [user_error(["webhookSubscription", field], f"Address {exc.message}"
                                          if exc.field == "address" else exc.message)]}
    return {"webhookSubscription": WebhookSubscriptionView(rec, ctx), "userErrors": []}


def webhook_subscription_delete(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any]:
    ctx = _ctx(info)
    sid = _numeric(id, "WebhookSubscription")
    if sid is None or not ctx.state.subscriptions.delete(sid):
        return {"deletedWebhookSubscriptionId": None,
                "userErrors": [user_error(["id"], "Webhook subscription does not exist")]}
    return {"deletedWebhookSubscriptionId": id, "userErrors": []}


# ---------------------------------------------------------------------- bulk operations
def bulk_operation_run_query(_: Any, info: GraphQLResolveInfo, query: str, groupObjects: bool = True
                             ) -> dict[str, Any]:
    ctx = _ctx(info)
    if "groupObjects" not in _given_args(info):
        groupObjects = ctx.api_version < "2026-01"  # the default changed to false in 2026-01
    op, errors = ctx.bulk.run_query(ctx.token, query, group_objects=groupObjects, base_url=ctx.base_url,
                                    api_version=ctx.api_version)
    return {"bulkOperation": op, "userErrors": errors}


def bulk_operation_cancel(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any]:
    ctx = _ctx(info)
    parsed = _numeric(id, "BulkOperation")
    op, errors = ctx.bulk.cancel(ctx.token, parsed)
    return {"bulkOperation": op, "userErrors": errors}


def _given_args(info: GraphQLResolveInfo) -> set[str]:
    return {a.name.value for a in info.field_nodes[0].arguments or ()}


RESOLVERS: dict[str, Any] = {
    "customerCreate": customer_create,
    "customerUpdate": customer_update,
    "orderUpdate": order_update,
    "inventorySetQuantities": inventory_set_quantities,
    "webhookSubscriptionCreate": webhook_subscription_create,
    "webhookSubscriptionDelete": webhook_subscription_delete,
    "bulkOperationRunQuery": bulk_operation_run_query,
    "bulkOperationCancel": bulk_operation_cancel,
}
