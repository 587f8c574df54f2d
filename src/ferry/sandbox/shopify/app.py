"""The FastAPI app: Admin REST routes (2025-07 paths, any ``YYYY-MM`` accepted) and ``/__sandbox`` admin routes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ferry.sandbox.shopify import writes
from ferry.sandbox.shopify.compact import CompactRecords
from ferry.sandbox.shopify.errors import ApiError, json_response, not_found
from ferry.sandbox.shopify.faults import Faults
from ferry.sandbox.shopify.gate import Stats
from ferry.sandbox.shopify.graphql import GraphQLApi
from ferry.sandbox.shopify.pagination import Cursor, check_page_info_request, decode, link_header
from ferry.sandbox.shopify.query import parse_filters, parse_limit, parse_list, project
from ferry.sandbox.shopify.state import ShopState
from ferry.sandbox.shopify.store import RESOURCES
from ferry.sandbox.shopify.subscriptions import SubscriptionError, rest_view
from ferry.sandbox.shopify.tables import Table

SINGULAR = {"customers": "customer", "products": "product", "orders": "order"}
API = "/admin/api/{version}"


def build_app(state: ShopState, stats: Stats, faults: Faults | None = None,
              graphql: GraphQLApi | None = None) -> FastAPI:
    app = FastAPI(title="ferry Shopify sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    _webhook_routes(app, state)  # before the resource routes: webhooks/count.json is not a record id
    for resource in RESOURCES:
        _resource_routes(app, state, resource)
    _child_routes(app, state)
    _write_routes(app, state)
    _admin_routes(app, state, stats)
    if graphql is not None:
        _graphql_routes(app, graphql)
    if faults is not None:
        _fault_routes(app, faults)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        text = "Not Found" if exc.status_code == 404 else str(exc.detail)
        return json_response({"errors": text}, exc.status_code)


def _record_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise not_found() from None


def _resource_routes(app: FastAPI, state: ShopState, resource: str) -> None:
    table = state.table(resource)
    singular = SINGULAR[resource]

    async def list_records(request: Request) -> Response:
        return list_page(request, table, resource)

    async def count_records(request: Request) -> Response:
        filters = parse_filters(resource, dict(request.query_params))
        return json_response({"count": table.count(table.matcher(filters))})

    async def get_record(request: Request, rid: str) -> Response:
        rec = table.get(_record_id(rid))
        if rec is None:
            raise not_found()
        return json_response({singular: project([rec], request.query_params.get("fields"))[0]})

    # count.json is registered before {rid}.json so "count" is never taken for an id.
    app.add_api_route(f"{API}/{resource}.json", list_records, methods=["GET"])
    app.add_api_route(f"{API}/{resource}/count.json", count_records, methods=["GET"])
    app.add_api_route(f"{API}/{resource}/{{rid}}.json", get_record, methods=["GET"])


def list_page(request: Request, table: Table, resource: str) -> Response:
    """One page of a list endpoint, in the order asked for (id ascending by default), with Shopify's Link header.

    The boundary of a page is the sort key of its last (next) or first (previous) record, so pages are keyset
    ranges: in updated_at order, a record edited after its page was served sorts after it and comes again."""
    params = dict(request.query_params)
    req = parse_list(resource, params)
    bound: tuple[int, int] | None
    if req.page_info:
        check_page_info_request(params)
        cursor = decode(req.page_info, resource)
        filters, order, direction, bound = cursor.filters, cursor.order, cursor.direction, cursor.key
    else:
        filters, order, direction = req.filters, req.order, "next"
        bound = table.first_bound(order, filters)
    match = table.matcher(filters)
    if direction == "next":
        idx = table.after(order, match, bound, req.limit + 1)
        has_next, page = len(idx) > req.limit, idx[: req.limit]
        has_prev = bool(req.page_info) and bool(page) and bool(table.before(order, match, table.key(order, page[0]), 1))
    else:
        assert bound is not None  # a previous-page cursor always holds its boundary
        idx = table.before(order, match, bound, req.limit + 1)
        has_prev, page = len(idx) > req.limit, idx[-req.limit:]
        has_next = bool(page) and bool(table.after(order, match, table.key(order, page[-1]), 1))
    recs = table.records
    if isinstance(recs, CompactRecords) and not req.fields:  # full records: their stored JSON as it is
        body = b'{"' + resource.encode() + b'":' + recs.json_of(page) + b"}"
    else:
        body = orjson.dumps({resource: project([recs[i] for i in page], req.fields)})
    links: list[tuple[str, Cursor]] = []
    if has_prev:
        links.append(("previous", _cursor(table, resource, filters, order, "previous", page[0])))
    if has_next:
        links.append(("next", _cursor(table, resource, filters, order, "next", page[-1])))
    base = str(request.url.replace(query=""))
    link = link_header(base.rstrip("?"), req.limit, req.fields, links)
    headers = {"Link": link} if link else None
    return Response(content=body, headers=headers, media_type="application/json; charset=utf-8")


def _cursor(table: Table, resource: str, filters: dict[str, Any], order: str, direction: str, pos: int) -> Cursor:
    value, rid = table.key(order, pos)
    return Cursor(resource, filters, direction, rid, order, value if order.startswith("updated_at") else None)


def _child_routes(app: FastAPI, state: ShopState) -> None:
    orders, products = state.table("orders"), state.table("products")

    async def order_refunds(oid: str) -> Response:
        order = orders.get(_record_id(oid))
        if order is None:
            raise not_found()
        return json_response({"refunds": order.get("refunds") or []})

    async def product_variants(pid: str) -> Response:
        product = products.get(_record_id(pid))
        if product is None:
            raise not_found()
        return json_response({"variants": product.get("variants") or []})

    app.add_api_route(f"{API}/orders/{{oid}}/refunds.json", order_refunds, methods=["GET"])
    app.add_api_route(f"{API}/products/{{pid}}/variants.json", product_variants, methods=["GET"])


async def _body(request: Request, key: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
        raise ApiError(400, {key: "Required parameter missing or invalid"})
    return doc[key]


def _write_routes(app: FastAPI, state: ShopState) -> None:
    updaters: dict[str, writes.Updater] = {
        "customers": writes.update_customer, "products": writes.update_product, "orders": writes.update_order}
    creators: dict[str, writes.Creator] = {"customers": writes.create_customer, "orders": writes.create_order}
    for resource, update in updaters.items():
        app.add_api_route(f"{API}/{resource}/{{rid}}.json", _put_handler(state, SINGULAR[resource], update),
                          methods=["PUT"])
    app.add_api_route(f"{API}/customers/{{rid}}.json", _delete_customer_handler(state), methods=["DELETE"])
    for resource, create in creators.items():
        app.add_api_route(f"{API}/{resource}.json", _post_handler(state, SINGULAR[resource], create),
                          methods=["POST"])


def _put_handler(state: ShopState, singular: str, update: writes.Updater) -> Callable[..., Awaitable[Response]]:
    async def put(request: Request, rid: str) -> Response:
        body = await _body(request, singular)
        return json_response({singular: update(state, _record_id(rid), body)})

    return put


def _delete_customer_handler(state: ShopState) -> Callable[..., Awaitable[Response]]:
    async def delete(rid: str) -> Response:
        writes.delete_customer(state, _record_id(rid))
        return json_response({})

    return delete


def _post_handler(state: ShopState, singular: str, create: writes.Creator) -> Callable[..., Awaitable[Response]]:
    async def post(request: Request) -> Response:
        body = await _body(request, singular)
        return json_response({singular: create(state, body)}, 201)

    return post


def _admin_routes(app: FastAPI, state: ShopState, stats: Stats) -> None:
    """Outside the API: no token, no rate limit. Never part of Shopify; for tests and the demo."""

    async def records(resource: str, offset: int = 0, limit: int | None = None) -> Response:
        """All records, or the ``limit`` records from position ``offset`` in id order (large stores)."""
        if resource not in RESOURCES:
            raise not_found()
        recs = state.store.records(resource)
        if isinstance(recs, CompactRecords):
            end = len(recs) if limit is None else offset + max(0, limit)
            return Response(content=recs.json_array(offset, end), media_type="application/json")
        if offset or limit is not None:
            end = len(recs) if limit is None else offset + max(0, limit)
            return Response(content=orjson.dumps(list(recs[offset:end])), media_type="application/json")
        return Response(content=orjson.dumps(list(recs)), media_type="application/json")

    async def stats_view() -> Response:
        return json_response({
            "api_calls": stats.api_calls,
            "by_endpoint": dict(sorted(stats.by_endpoint.items())),
            "throttled": stats.throttled,
            "unauthorized": stats.unauthorized,
            "records": {name: len(state.table(name)) for name in RESOURCES},
        })

    async def anomalies() -> Response:
        counts = Counter(tag for tags in state.store.anomalies.values() for tag in tags)
        return json_response({"counts": dict(sorted(counts.items())), "records": state.store.anomalies})

    app.add_api_route("/__sandbox/records/{resource}", records, methods=["GET"])
    app.add_api_route("/__sandbox/stats", stats_view, methods=["GET"])
    app.add_api_route("/__sandbox/anomalies", anomalies, methods=["GET"])


def _fault_routes(app: FastAPI, faults: Faults) -> None:
    """``/__sandbox/faults``: GET what is configured and what fired, POST replaces, PATCH merges, DELETE clears."""

    async def get_faults() -> Response:
        return json_response(faults.describe())

    async def set_faults(request: Request) -> Response:
        try:
            faults.configure(orjson.loads(await request.body() or b"{}"))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(faults.describe())

    async def merge_faults(request: Request) -> Response:
        try:
            faults.update(orjson.loads(await request.body() or b"{}"))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(faults.describe())

    async def clear_faults() -> Response:
        faults.clear()
        return json_response(faults.describe())

    app.add_api_route("/__sandbox/faults", get_faults, methods=["GET"])
    app.add_api_route("/__sandbox/faults", set_faults, methods=["POST"])
    app.add_api_route("/__sandbox/faults", merge_faults, methods=["PATCH"])
    app.add_api_route("/__sandbox/faults", clear_faults, methods=["DELETE"])


def _webhook_routes(app: FastAPI, state: ShopState) -> None:
    """REST webhook subscriptions (``webhooks.json``), the same list GraphQL's webhookSubscription* use."""
    subs = state.subscriptions

    async def list_webhooks(request: Request) -> Response:
        params = request.query_params
        found = subs.matching(topics=[params["topic"]] if params.get("topic") else None,
                              address=params.get("address") or None)
        if (since := params.get("since_id")) and since.isdigit():
            found = [r for r in found if r["id"] > int(since)]
        limit = parse_limit(params.get("limit"))
        return json_response({"webhooks": project([rest_view(r) for r in found[:limit]], params.get("fields"))})

    async def count_webhooks(request: Request) -> Response:
        params = request.query_params
        found = subs.matching(topics=[params["topic"]] if params.get("topic") else None,
                              address=params.get("address") or None)
        return json_response({"count": len(found)})

    async def get_webhook(rid: str) -> Response:
        rec = subs.get(_record_id(rid))
        if rec is None:
            raise not_found()
        return json_response({"webhook": rest_view(rec)})

    async def create_webhook(request: Request, version: str) -> Response:
        body = await _body(request, "webhook")
        try:
            rec = subs.create(topic=str(body.get("topic") or ""), address=str(body.get("address") or ""),
                              fmt=str(body.get("format") or "json"), fields=list(body.get("fields") or []),
                              namespaces=list(body.get("metafield_namespaces") or []), api_version=version,
                              now=state.clock.now_text())
        except SubscriptionError as exc:
            raise ApiError(422, {exc.field: [exc.message]}) from None
        return json_response({"webhook": rest_view(rec)}, 201)

    async def update_webhook(request: Request, rid: str) -> Response:
        body = await _body(request, "webhook")
        try:
            rec = subs.update(_record_id(rid), body, state.clock.now_text())
        except SubscriptionError as exc:
            raise ApiError(422, {exc.field: [exc.message]}) from None
        if rec is None:
            raise not_found()
        return json_response({"webhook": rest_view(rec)})

    async def delete_webhook(rid: str) -> Response:
        if not subs.delete(_record_id(rid)):
            raise not_found()
        return json_response({})

    app.add_api_route(f"{API}/webhooks.json", list_webhooks, methods=["GET"])
    app.add_api_route(f"{API}/webhooks.json", create_webhook, methods=["POST"])
    app.add_api_route(f"{API}/webhooks/count.json", count_webhooks, methods=["GET"])
    app.add_api_route(f"{API}/webhooks/{{rid}}.json", get_webhook, methods=["GET"])
    app.add_api_route(f"{API}/webhooks/{{rid}}.json", update_webhook, methods=["PUT"])
    app.add_api_route(f"{API}/webhooks/{{rid}}.json", delete_webhook, methods=["DELETE"])


def _graphql_routes(app: FastAPI, graphql: GraphQLApi) -> None:
    async def endpoint(request: Request, version: str) -> Response:
        return await graphql.handle(request, version)

    async def bulk_result(request: Request, name: str) -> Response:
        # Shopify serves results from pre-signed storage URLs: no token, the signature is the credential.
        return graphql.result_response(name, request)

    async def settings() -> Response:
        return json_response(graphql.describe())

    async def configure(request: Request) -> Response:
        try:
            graphql.configure(orjson.loads(await request.body() or b"{}"))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(graphql.describe())

    async def events() -> Response:
        return json_response({"events": graphql.bulk.events})

    app.add_api_route(f"{API}/graphql.json", endpoint, methods=["POST"])
    app.add_api_route("/bulk-operation-outputs/{name}", bulk_result, methods=["GET"])
    app.add_api_route("/__sandbox/graphql", settings, methods=["GET"])
    app.add_api_route("/__sandbox/graphql", configure, methods=["PATCH"])
    app.add_api_route("/__sandbox/events", events, methods=["GET"])
