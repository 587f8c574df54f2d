"""The executable schema: ``admin.graphql`` (SDL) built by graphql-core, with resolvers bound to its root fields."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from graphql import GraphQLResolveInfo, GraphQLSchema, build_schema

from ferry.sandbox.shopify.graphql import mutations
from ferry.sandbox.shopify.graphql.connections import (
    BadRequest,
    Connection,
    list_connection,
    make_connection,
    table_page,
)
from ferry.sandbox.shopify.graphql.context import LOCATION_ID, Context, parse_gid
from ferry.sandbox.shopify.graphql.search import SearchError, compile_fields, compile_search
from ferry.sandbox.shopify.graphql.views import (
    LOCATION,
    CustomerView,
    InventoryItemView,
    OrderView,
    ProductView,
    RefundView,
    VariantView,
    View,
    WebhookSubscriptionView,
    shop_view,
)
from ferry.sandbox.shopify.subscriptions import TOPICS


@cache
def admin_schema() -> GraphQLSchema:
    sdl = files("ferry.sandbox.shopify.graphql").joinpath("admin.graphql").read_text(encoding="utf-8")
    schema = build_schema(sdl)
    for name in ("Node", "LegacyInteroperability", "WebhookSubscriptionEndpoint"):
        schema.get_type(name).resolve_type = _type_name  # type: ignore[union-attr]
    _bind(schema, "QueryRoot", QUERY_RESOLVERS)
    _bind(schema, "Mutation", mutations.RESOLVERS)
    return schema


def _type_name(value: Any, info: GraphQLResolveInfo, abstract: Any) -> str | None:
    return value.get("__typename") if isinstance(value, dict) else getattr(value, "typename", None)


def _bind(schema: GraphQLSchema, type_name: str, resolvers: dict[str, Any]) -> None:
    obj = schema.get_type(type_name)
    for field_name, fn in resolvers.items():
        obj.fields[field_name].resolve = fn  # type: ignore[union-attr]


def _ctx(info: GraphQLResolveInfo) -> Context:
    ctx: Context = info.context
    return ctx


def resolve_node(ctx: Context, value: str) -> Any:
    parsed = parse_gid(value)
    if parsed is None:
        return None
    kind, ident = parsed
    state = ctx.state
    if kind in ("Customer", "Product", "Order"):
        resource = {"Customer": "customers", "Product": "products", "Order": "orders"}[kind]
        rec = state.table(resource).peek(ident)
        view = {"Customer": CustomerView, "Product": ProductView, "Order": OrderView}[kind]
        return None if rec is None else view(rec, ctx)
    if kind in ("ProductVariant", "InventoryItem"):
        found = ctx.variant(ident) if kind == "ProductVariant" else ctx.inventory_item(ident)
        cls = VariantView if kind == "ProductVariant" else InventoryItemView
        return None if found is None else cls(found[1], found[0], ctx)
    if kind == "Refund":
        order = _order_of_refund(ctx, ident)
        refund = next((r for r in (order or {}).get("refunds") or () if r.get("id") == ident), None)
        return None if order is None or refund is None else RefundView(refund, order, ctx)
    if kind == "BulkOperation":
        return ctx.bulk.view(ident)
    if kind == "WebhookSubscription":
        sub = state.subscriptions.get(ident)
        return None if sub is None else WebhookSubscriptionView(sub, ctx)
    if kind == "Location" and ident == LOCATION_ID:
        return {**LOCATION, "__typename": "Location"}
    return None


def _order_of_refund(ctx: Context, refund_id: int) -> Any:
    """The order holding a refund: refunds live inside their orders, indexed until an order is written."""
    order_id = ctx.bulk.refund_orders().get(refund_id)
    return None if order_id is None else ctx.state.table("orders").peek(order_id)


# ---------------------------------------------------------------------- root connections
def _root_connection(resource: str, make: Any) -> Any:
    def resolve(_: Any, info: GraphQLResolveInfo, **args: Any) -> Connection:
        ctx = _ctx(info)
        table = ctx.state.table(resource)
        bulk_page = ctx.bulk_page if info.path.prev is None else None
        page = table_page(info, args, table, resource, ctx.warnings, bulk_page=bulk_page)
        if bulk_page is not None:
            ctx.bulk_next = (page.has_next, page.cursors[-1] if page.cursors else None)
        views = [make(table.records[pos], ctx) for pos in page.positions]
        return make_connection(views, page.cursors, page.has_next, page.has_prev)

    return resolve


def _root_count(resource: str) -> Any:
    """``ordersCount``/``customersCount``/``productsCount``: how many records match ``query``, up to ``limit``
    (``precision: AT_LEAST`` beyond it; ``limit: null`` counts them all), as Shopify's Count answers."""

    def resolve(_: Any, info: GraphQLResolveInfo, query: str | None = None, limit: int | None = 10000) -> Any:
        table = _ctx(info).state.table(resource)
        try:
            compiled = compile_search(query, resource, table)
        except SearchError as exc:
            raise BadRequest(str(exc), info) from None
        count = table.count(compiled.predicate)
        if limit is not None and count > limit:
            return {"count": limit, "precision": "AT_LEAST"}
        return {"count": count, "precision": "EXACT"}

    return resolve


def _product_variants(_: Any, info: GraphQLResolveInfo, **args: Any) -> Connection:
    """Variants live inside products: listed from a flat id-ordered view (sortKey ID; others are refused)."""
    ctx = _ctx(info)
    if (args.get("sortKey") or "ID") not in ("ID", "RELEVANCE"):
        raise BadRequest(f"The sandbox does not sort productVariants by {args['sortKey']}; use ID.", info)
    rows = sorted(((v["id"], p, v) for p in ctx.state.table("products").records for v in p.get("variants") or ()),
                  key=lambda row: row[0])
    query = (args.get("query") or "").strip()
    if query:
        rows = [r for r in rows if _variant_matches(query, r[1], r[2])]
    views = [VariantView(v, p, ctx) for _, p, v in rows]
    if ctx.bulk_page is not None and info.path.prev is None:
        after, size = ctx.bulk_page
        args = {**args, "first": size, "after": after}
        conn = list_connection(info, args, views, lambda v: v.rec["id"], bulk=False)
        ctx.bulk_next = (conn["pageInfo"]["hasNextPage"], conn["pageInfo"]["endCursor"])
        return conn
    return list_connection(info, args, views, lambda v: v.rec["id"], bulk=False)


def _variant_matches(query: str, product: dict[str, Any], variant: dict[str, Any]) -> bool:
    """The few variant filters the sandbox knows (``sku:``, ``product_id:``, ``id:``), ANDed."""
    for term in query.replace(" AND ", " ").split():
        field, _, value = term.partition(":")
        value = value.strip("'\"")
        if field == "sku" and (variant.get("sku") or "") != value:
            return False
        if field == "product_id" and str(product["id"]) != value.rsplit("/", 1)[-1]:
            return False
        if field == "id" and str(variant["id"]) != value.rsplit("/", 1)[-1]:
            return False
    return True


def _by_id(kind: str) -> Any:
    def resolve(_: Any, info: GraphQLResolveInfo, id: str) -> Any:
        parsed = parse_gid(id, kind)
        return None if parsed is None else resolve_node(_ctx(info), id)

    return resolve


def _node(_: Any, info: GraphQLResolveInfo, id: str) -> Any:
    return resolve_node(_ctx(info), id)


def _nodes(_: Any, info: GraphQLResolveInfo, ids: list[str]) -> list[Any]:
    if len(ids) > 250:
        # Shopify caps input arrays at 250 (https://shopify.dev/docs/api/usage/limits); message text unverified.
        raise BadRequest(f"The input array size of {len(ids)} is greater than the maximum allowed of 250.", info)
    return [resolve_node(_ctx(info), i) for i in ids]


def _current_bulk_operation(_: Any, info: GraphQLResolveInfo, type: str = "QUERY") -> Any:
    ctx = _ctx(info)
    return ctx.bulk.current(ctx.token, type)


def _since_2026_01(info: GraphQLResolveInfo, name: str) -> Context:
    """The context, for a root field API 2026-01 added (an older version's schema has no such field)."""
    ctx = _ctx(info)
    if ctx.api_version != "unstable" and ctx.api_version < "2026-01":
        raise BadRequest(f"Field '{name}' doesn't exist on type 'QueryRoot'", info, code="undefinedField")
    return ctx


def _compare(have: str, op: str, value: str) -> bool:
    return {":": have == value, "<": have < value, ">": have > value, "<=": have <= value,
            ">=": have >= value}[op]


def _op_number(view: dict[str, Any]) -> int:
    return int(str(view["id"]).rsplit("/", 1)[1])


# ``bulkOperations(query:)`` fields (shopify.dev, 2026-01: created_at, id, operation_type, status).
_BULK_FILTERS: dict[str, Any] = {
    "status": lambda v, _op, value: str(v["status"]).lower() == value.lower(),
    "operation_type": lambda v, _op, value: str(v["type"]).lower() == value.lower(),
    "id": lambda v, op, value: value.isdigit() and _compare(f"{_op_number(v):020d}", op, f"{int(value):020d}"),
    "created_at": lambda v, op, value: _compare(str(v["createdAt"]), op, value),
}


def _bulk_operation(_: Any, info: GraphQLResolveInfo, id: str) -> Any:
    ctx = _since_2026_01(info, "bulkOperation")
    view = resolve_node(ctx, id)
    return view if isinstance(view, dict) and view.get("__typename") == "BulkOperation" else None


def _bulk_operations(_: Any, info: GraphQLResolveInfo, **args: Any) -> Connection:
    """The app's bulk operations, newest first (``reverse`` flips), filtered by ``query``."""
    ctx = _since_2026_01(info, "bulkOperations")
    try:
        match = compile_fields(args.get("query"), _BULK_FILTERS)
    except SearchError as exc:
        raise BadRequest(str(exc), info) from None
    by = "completedAt" if args.get("sortKey") == "COMPLETED_AT" else "createdAt"
    return list_connection(info, args, ctx.bulk.listed(ctx.token, match, by=by), _op_number, bulk=ctx.in_bulk)


def _webhook_subscriptions(_: Any, info: GraphQLResolveInfo, **args: Any) -> Connection:
    ctx = _ctx(info)
    topics = [TOPICS[t] for t in args["topics"]] if args.get("topics") else None
    recs = ctx.state.subscriptions.matching(topics=topics, address=args.get("callbackUrl"))
    if args.get("format"):
        recs = [r for r in recs if str(r.get("format")).upper() == args["format"]]
    views: list[View] = [WebhookSubscriptionView(r, ctx) for r in recs]
    return list_connection(info, args, views, lambda v: v.rec["id"], bulk=ctx.in_bulk)


QUERY_RESOLVERS: dict[str, Any] = {
    "shop": lambda _, info: shop_view(_ctx(info)),
    "node": _node,
    "nodes": _nodes,
    "customer": _by_id("Customer"),
    "customers": _root_connection("customers", CustomerView),
    "product": _by_id("Product"),
    "products": _root_connection("products", ProductView),
    "productVariant": _by_id("ProductVariant"),
    "productVariants": _product_variants,
    "inventoryItem": _by_id("InventoryItem"),
    "order": _by_id("Order"),
    "orders": _root_connection("orders", OrderView),
    "currentBulkOperation": _current_bulk_operation,
    "bulkOperation": _bulk_operation,
    "bulkOperations": _bulk_operations,
    "customersCount": _root_count("customers"),
    "ordersCount": _root_count("orders"),
    "productsCount": _root_count("products"),
    "webhookSubscription": _by_id("WebhookSubscription"),
    "webhookSubscriptions": _webhook_subscriptions,
}
