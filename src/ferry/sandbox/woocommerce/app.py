"""The FastAPI app: ``/wp-json/wc/v3/...`` routes answering as WooCommerce's REST controllers do, and ``/__sandbox``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ferry.sandbox.shopify.faults import Faults
from ferry.sandbox.woocommerce import writes
from ferry.sandbox.woocommerce.auth import Stats
from ferry.sandbox.woocommerce.errors import WpError, invalid_id, json_response, no_route
from ferry.sandbox.woocommerce.query import link_header, page_of, parse_list, php_params, select
from ferry.sandbox.woocommerce.records import links
from ferry.sandbox.woocommerce.state import StoreState
from ferry.sandbox.woocommerce.store import CHILDREN, POST_TYPES, RESOURCES, TOP_LEVEL, Record

API = "/wp-json/wc/v3"
Handler = Callable[..., Awaitable[Response]]

# What an anonymous call gets, by action (WC_REST_*_Controller permission callbacks; status 401 when not
# logged in: rest_authorization_required_code()).
DENIED = {
    "list": ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
    "view": ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."),
    "create": ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
    "edit": ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
    "delete": ("woocommerce_rest_cannot_delete", "Sorry, you are not allowed to delete this resource."),
    "batch": ("woocommerce_rest_cannot_batch", "Sorry, you are not allowed to batch manipulate this resource."),
}


def build_app(state: StoreState, stats: Stats, faults: Faults | None = None) -> FastAPI:
    app = FastAPI(title="ferry WooCommerce sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    for resource in TOP_LEVEL:
        _collection_routes(app, state, resource, f"{API}/{resource}")
    _collection_routes(app, state, "variations", f"{API}/products/{{parent:int}}/variations")
    _collection_routes(app, state, "refunds", f"{API}/orders/{{parent:int}}/refunds")
    _admin_routes(app, state, stats)
    if faults is not None:
        _fault_routes(app, faults)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WpError)
    async def wp_error(_: Request, exc: WpError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # WordPress has no 405: a known path with a method it does not serve is "no route" too.
        if request.url.path.startswith("/wp-json/") and exc.status_code in (404, 405):
            return no_route().response()
        return json_response({"error": str(exc.detail)}, exc.status_code)


def require(request: Request, action: str) -> None:
    """The endpoint's permission check: an anonymous call is refused as WooCommerce refuses it."""
    if not request.scope.get("state", {}).get("woo_auth"):
        code, message = DENIED[action]
        raise WpError(code, message, 401)


def base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


def render(request: Request, resource: str, record: Record, parent: int | None = None) -> Record:
    """A record as served: ``_links`` added, ``_fields`` applied."""
    out = with_links(base_url(request), resource, record, parent)
    fields = request.query_params.get("_fields")
    if fields:
        wanted = {f.strip().split(".")[0] for f in fields.split(",") if f.strip()} | {"id"}
        out = {k: v for k, v in out.items() if k in wanted}
    return out


def with_links(base: str, resource: str, record: Record, parent: int | None = None) -> Record:
    """A record as ``GET`` answers it from the site at ``base`` (also the payload of a webhook)."""
    if resource == "variations":
        out = {**record, "_links": links(base, f"products/{parent}/variations", record["id"],
                                         {"up": f"{base}{API}/products/{parent}"})}
    elif resource == "refunds":
        out = {**record, "_links": links(base, f"orders/{parent}/refunds", record["id"],
                                         {"up": f"{base}{API}/orders/{parent}"})}
    else:
        extra = {"customer": f"{base}{API}/customers/{record['customer_id']}"} \
            if resource == "orders" and record.get("customer_id") else None
        out = {**record, "_links": links(base, resource, record["id"], extra)}
    return out


def _collection_routes(app: FastAPI, state: StoreState, resource: str, path: str) -> None:
    def lookup(rid: int, parent: int | None, status: int = 404) -> Record:
        record = state.get(resource, rid)
        if record is None:
            raise _missing(resource, status)
        if parent is not None and state.parent_of[resource].get(rid) != parent:
            raise _wrong_parent(state, resource, parent)
        return record

    async def list_records(request: Request, parent: int | None = None) -> Response:
        # A list under a parent that does not exist is simply empty (WP_Query finds no children).
        require(request, "list")
        items = list(request.query_params.multi_items())
        q = parse_list(resource, php_params(items), state.st)
        rows = select(resource, state.records(resource, parent), q)
        page, total, pages = page_of(rows, q)
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        link = link_header(f"{base_url(request)}{request.url.path}", items, q.page, pages)
        if link:
            headers["Link"] = link
        return json_response([render(request, resource, r, parent) for r in page], headers=headers)

    async def get_record(request: Request, rid: int, parent: int | None = None) -> Response:
        if state.get(resource, rid) is not None:  # WooCommerce checks permissions only on an object that exists
            require(request, "view")
        return json_response(render(request, resource, lookup(rid, parent), parent))

    async def create_record(request: Request, parent: int | None = None) -> Response:
        require(request, "create")
        record = writes.create(state, resource, await json_body(request), parent)
        location = f"{base_url(request)}{path.replace('{parent:int}', str(parent))}/{record['id']}"
        return json_response(render(request, resource, record, parent), 201, {"Location": location})

    async def update_record(request: Request, rid: int, parent: int | None = None) -> Response:
        require(request, "edit")
        lookup(rid, parent, status=400)
        record = writes.update(state, resource, rid, await json_body(request), parent)
        return json_response(render(request, resource, record, parent))

    async def delete_record(request: Request, rid: int, parent: int | None = None) -> Response:
        require(request, "delete")
        if parent is not None:
            lookup(rid, parent)
        force = writes.truthy(request.query_params.get("force"))
        before = writes.delete(state, resource, rid, force, parent)
        return json_response(render(request, resource, before, parent))

    async def batch(request: Request, parent: int | None = None) -> Response:
        require(request, "batch")
        result = writes.batch(state, resource, await json_body(request), parent)
        return json_response({action: [r if "error" in r else render(request, resource, r, parent) for r in rows]
                              for action, rows in result.items()})

    app.add_api_route(path, list_records, methods=["GET"])
    app.add_api_route(path, create_record, methods=["POST"])
    if resource != "refunds":  # refunds are created and deleted, never edited, and have no batch endpoint
        app.add_api_route(f"{path}/batch", batch, methods=["POST", "PUT", "PATCH"])
    app.add_api_route(f"{path}/{{rid:int}}", get_record, methods=["GET"])
    if resource != "refunds":
        app.add_api_route(f"{path}/{{rid:int}}", update_record, methods=["PUT", "PATCH", "POST"])
    app.add_api_route(f"{path}/{{rid:int}}", delete_record, methods=["DELETE"])


def _missing(resource: str, status: int = 404) -> WpError:
    if resource == "customers":
        return WpError("woocommerce_rest_invalid_id", "Invalid resource ID.", status)
    return invalid_id(POST_TYPES[resource], status)


def _wrong_parent(state: StoreState, resource: str, parent: int) -> WpError:
    """A child asked for under another parent (the refunds controller's own codes; variations: invalid id)."""
    if resource == "refunds":
        if state.get("orders", parent) is None:
            return writes.int_data_error("woocommerce_rest_invalid_order_id", "Invalid order ID.", 404)
        return WpError("woocommerce_rest_invalid_order_refund_id", "Invalid order refund ID.", 404)
    return _missing(resource)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise WpError("rest_invalid_json", "Invalid JSON body passed.", 400,
                      {"json_error_code": 4, "json_error_message": "Syntax error"}) from None
    return doc if isinstance(doc, dict) else {}


def _admin_routes(app: FastAPI, state: StoreState, stats: Stats) -> None:
    """Outside the API: no auth, no faults. Never part of WooCommerce; for tests and the demo."""

    async def records(resource: str, offset: int = 0, limit: int | None = None) -> Response:
        """Every record of a resource as stored (or ``limit`` of them from ``offset``), in id order; a child
        carries its parent's id (``product_id``/``order_id``)."""
        if resource not in RESOURCES:
            raise WpError("rest_no_route", f"unknown resource {resource!r}", 404)
        if resource in CHILDREN:
            key = "product_id" if resource == "variations" else "order_id"
            rows = [{**r, key: pid} for pid, rs in state.store.children(resource).items() for r in rs]
        else:
            rows = list(state.records(resource))
        rows.sort(key=lambda r: r["id"])
        end = len(rows) if limit is None else offset + max(0, limit)
        return json_response(rows[offset:end])

    async def stats_view() -> Response:
        return json_response({
            "api_calls": stats.api_calls,
            "unauthorized": stats.unauthorized,
            "by_endpoint": dict(sorted(stats.by_endpoint.items())),
            "records": {name: len(state.by_id[name]) for name in RESOURCES},
            "timezone": state.store.timezone,
        })

    async def anomalies() -> Response:
        counts = Counter(tag for tags in state.store.anomalies.values() for tag in tags)
        return json_response({"counts": dict(sorted(counts.items())), "records": state.store.anomalies})

    async def edit(request: Request, resource: str, rid: int) -> Response:
        """Change a record server-side, as an admin in wp-admin would: the body's fields are merged, and
        ``date_modified`` is bumped unless the body sets it (``{"touch": false}`` leaves it as it was)."""
        if resource not in RESOURCES or state.get(resource, rid) is None:
            raise WpError("rest_no_route", "no such record", 404)
        body = await json_body(request)
        return json_response(writes.admin_edit(state, resource, rid, body))

    app.add_api_route("/__sandbox/records/{resource}", records, methods=["GET"])
    app.add_api_route("/__sandbox/records/{resource}/{rid:int}", edit, methods=["PATCH", "POST"])
    app.add_api_route("/__sandbox/stats", stats_view, methods=["GET"])
    app.add_api_route("/__sandbox/anomalies", anomalies, methods=["GET"])


def _fault_routes(app: FastAPI, faults: Faults) -> None:
    """``/__sandbox/faults``: GET what is configured and what fired, POST replaces, PATCH merges, DELETE clears."""

    def configure(apply: Callable[[dict[str, Any]], None]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                apply(orjson.loads(await request.body() or b"{}"))
            except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
                return json_response({"error": str(exc)}, 400)
            return json_response(faults.describe())

        return handler

    async def get_faults() -> Response:
        return json_response(faults.describe())

    async def clear_faults() -> Response:
        faults.clear()
        return json_response(faults.describe())

    app.add_api_route("/__sandbox/faults", get_faults, methods=["GET"])
    app.add_api_route("/__sandbox/faults", configure(faults.configure), methods=["POST"])
    app.add_api_route("/__sandbox/faults", configure(faults.update), methods=["PATCH"])
    app.add_api_route("/__sandbox/faults", clear_faults, methods=["DELETE"])
