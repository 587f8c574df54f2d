"""Bulk Operations (https://shopify.dev/docs/api/usage/bulk-operations/queries, reference §4).

``bulkOperationRunQuery`` checks the inner query as Shopify does (one top-level connection, at most 5
connections, at most 2 levels of nesting below the root, no connection inside a list field, a parent of a
nested connection must select ``id``), then returns a ``CREATED`` operation and runs it in the background
on the server's event loop: ``RUNNING`` while it pages through the root connection, ``objectCount`` growing
as lines are written, then ``COMPLETED`` with a signed-looking ``url`` to the JSONL file, which the sandbox
serves itself (unauthenticated, as Shopify's pre-signed storage URLs are). Each line is one node; a node of a
nested connection is its own line with ``__parentId`` (the id of its parent node), after its parent:
directly after it when objects are grouped (``groupObjects: true``, the default before 2026-01), else after
the page of root lines it belongs to.

The run takes time in proportion to its size (``seconds_per_object``, the wall pace of the whole run, the
sandbox's own execution time included), so clients really poll. One query
operation at a time per app and shop (token). ``bulkOperationCancel`` goes ``CANCELING`` -> ``CANCELED``
with ``partialDataUrl``; ``fail_after_objects`` makes the next operations fail with ``errorCode`` and
``partialDataUrl``. Every finished operation records a ``bulk_operations/finish`` webhook event (delivery
comes with the event work; ``/__sandbox/events`` lists them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlencode

import orjson
from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    execute,
    get_named_type,
    parse,
    validate,
)

from ferry.sandbox.shopify.graphql.context import Context
from ferry.sandbox.shopify.graphql.cost import collect_fields, is_connection, is_list
from ferry.sandbox.shopify.graphql.lean import LeanExecutor, Unsupported
from ferry.sandbox.shopify.graphql.messages import undefined_field
from ferry.sandbox.shopify.ids import gid
from ferry.sandbox.shopify.state import ShopState

ACTIVE = ("CREATED", "RUNNING", "CANCELING")
URL_LIFETIME = 7 * 86_400  # result URLs are valid seven days
# Bulk query operations an app may run at once per shop: one before API version 2026-01, up to five from it
# (shopify.dev bulk-operations/queries: "In API versions 2026-01 and higher apps can run up to five bulk query
# operations at a time per shop").
CONCURRENT_QUERIES = {"before-2026-01": 1, "2026-01": 5}
MAX_CONNECTIONS = 5
MAX_NESTING = 2


@dataclass
class BulkSettings:
    seconds_per_object: float = 0.0005  # pace of a run: 2,000 objects a second
    start_delay: float = 0.05  # CREATED -> RUNNING
    page_size: int = 100  # root objects read per step
    fail_after_objects: int | None = None  # fail runs once they have written this many objects
    fail_error_code: str = "INTERNAL_SERVER_ERROR"
    # Pages executed by ``lean.LeanExecutor`` (same data, a fraction of graphql-core's CPU); False: graphql-core
    # for every page (to compare them).
    lean: bool = True

    def update(self, raw: dict[str, Any]) -> None:
        for key, value in raw.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown bulk setting {key!r}")
            setattr(self, key, value)
        if self.seconds_per_object < 0 or self.start_delay < 0 or self.page_size < 1:
            raise ValueError("bulk pace and delay must be >= 0 and page_size >= 1")


@dataclass
class BulkOperation:
    id: int
    token: str
    query: str
    group_objects: bool
    base_url: str
    created_at: float
    status: str = "CREATED"
    type: str = "QUERY"
    error_code: str | None = None
    completed_at: float | None = None
    object_count: int = 0
    root_object_count: int = 0
    file_size: int | None = None
    url: str | None = None
    partial_data_url: str | None = None
    key: str = field(default_factory=lambda: secrets.token_hex(16))
    cancel_requested: bool = False
    failure: str | None = None  # why an unplanned failure happened (sandbox diagnostics, never served)
    task: asyncio.Task[None] | None = None

    @property
    def gid(self) -> str:
        return gid("BulkOperation", self.id)


class BulkOperations:
    def __init__(self, state: ShopState, schema: Callable[[], GraphQLSchema], directory: Path) -> None:
        self.state = state
        self._schema = schema
        self.directory = directory
        self.settings = BulkSettings()
        self.ops: dict[int, BulkOperation] = {}
        self.events: list[dict[str, Any]] = []
        self._secret = secrets.token_bytes(32)
        self._next_id = 4_476_008_693_000
        # Bumped by every product write: a bulk run keeps its variant index from page to page until one.
        self._products_rev = 0
        state.listeners.append(self._on_change)

        self._refund_orders: dict[int, int] | None = None  # refund id -> order id, until an order write
        self._variant_products: dict[int, int] | None = None  # variant id -> product id, until a product write
        self.pages_by_executor = {"lean": 0, "graphql-core": 0}  # diagnostics: which executor ran each page

    def _on_change(self, resource: str, event: str, rec: dict[str, Any]) -> None:
        if resource == "products":
            self._products_rev += 1
            self._variant_products = None
        elif resource == "orders":
            self._refund_orders = None

    def variant_products(self) -> dict[int, int]:
        """Variant id -> product id over the whole store, kept across requests until a product is written: a line
        item's ``variant { id }`` needs only to know its variant exists. (Each bulk operation's own variant index
        held every product decoded: ~8 MiB per 1,000 products, per operation, and a decode of each.)"""
        if self._variant_products is None:
            self._variant_products = {v["id"]: p["id"] for p in self.state.table("products").records
                                      for v in p.get("variants") or ()}
        return self._variant_products

    def refund_orders(self) -> dict[int, int]:
        """Refund id -> order id over the whole store, kept across requests until an order is written (built per
        request, a query of aliased Refund nodes scanned every order: ~2 s a query at 300,000 orders)."""
        if self._refund_orders is None:
            orders = self.state.table("orders").records
            self._refund_orders = {r["id"]: o["id"] for o in orders for r in o.get("refunds") or () if "id" in r}
        return self._refund_orders

    # ------------------------------------------------------------------ GraphQL-facing
    def view(self, ident: int) -> dict[str, Any] | None:
        op = self.ops.get(ident)
        return None if op is None else _view(op)

    def listed(self, token: str, match: Callable[[dict[str, Any]], bool], *, by: str = "createdAt",
               newest_first: bool = True) -> list[dict[str, Any]]:
        """``bulkOperations`` (API 2026-01+): the app's operations ``match`` keeps, newest first by default (as
        Shopify lists them: "Defaults to sorting by created_at, with newest operations first")."""
        views = [_view(op) for op in self.ops.values() if op.token == token]
        views = [v for v in views if match(v)]
        return sorted(views, key=lambda v: (v[by] or "", int(v["id"].rsplit("/", 1)[1])), reverse=newest_first)

    def current(self, token: str, op_type: str) -> dict[str, Any] | None:
        mine = [op for op in self.ops.values() if op.token == token and op.type == op_type]
        return _view(max(mine, key=lambda op: op.id)) if mine else None

    def run_query(self, token: str, query: str, *, group_objects: bool, base_url: str, api_version: str = "2025-07"
                  ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        running = [op for op in self.ops.values() if op.token == token and op.type == "QUERY" and op.status in ACTIVE]
        limit = concurrent_queries(api_version)
        if len(running) >= limit:
            # The pre-2026-01 text is Shopify's as received (reference §4.1); the five-at-once one is the sandbox's.
            message = (f"A bulk query operation for this app and shop is already in progress: {running[0].gid}."
                       if limit == 1 else f"Up to {limit} bulk query operations for this app and shop can run at "
                                          f"once; in progress: {', '.join(op.gid for op in running)}.")
            return None, [{"code": "OPERATION_IN_PROGRESS", "field": None, "message": message}]
        problem = check_bulk_query(self._schema(), query)
        if problem is not None:
            return None, [{"code": "INVALID", "field": ["query"], "message": problem}]
        self._next_id += 1 + secrets.randbelow(4096)
        op = BulkOperation(self._next_id, token, query, group_objects, base_url.rstrip("/"), time.time())
        self.ops[op.id] = op
        op.task = asyncio.get_running_loop().create_task(self._run(op))
        return _view(op), []

    def cancel(self, token: str, ident: int | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        op = self.ops.get(ident) if ident is not None else None
        if op is None or op.token != token:
            return None, [{"field": ["id"], "message": "Bulk operation does not exist"}]
        if op.status not in ACTIVE:
            return _view(op), [{"field": None, "message": f"A bulk operation cannot be canceled when it is "
                                                          f"{op.status.lower()}"}]
        op.status, op.cancel_requested = "CANCELING", True
        return _view(op), []

    # ------------------------------------------------------------------ the run
    async def _run(self, op: BulkOperation) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{op.key}.jsonl"
        try:
            await asyncio.sleep(self.settings.start_delay)
            if not op.cancel_requested:
                op.status = "RUNNING"
            with path.open("wb") as out:
                await self._write_lines(op, out)
        except Exception as exc:  # a bug or a store problem: Shopify reports these as INTERNAL_SERVER_ERROR
            op.status, op.error_code, op.failure = "FAILED", "INTERNAL_SERVER_ERROR", repr(exc)
        op.file_size = path.stat().st_size if path.exists() else None
        op.completed_at = time.time()
        if op.cancel_requested:
            op.status = "CANCELED"
        if op.status in ("CANCELED", "FAILED"):
            op.partial_data_url = self._signed_url(op) if op.object_count else None
        elif op.status == "RUNNING":
            op.status = "COMPLETED"
            op.url = self._signed_url(op) if op.object_count else None  # null when nothing matched
        self._record_finish(op)

    async def _write_lines(self, op: BulkOperation, out: Any) -> None:
        schema = self._schema()
        document = parse(op.query)
        operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        flattener = _Flattener(schema, fragments, operation.selection_set)
        lean = _lean(schema, document) if self.settings.lean else None
        after: str | None = None
        began = time.monotonic()
        index: tuple[int, Any] | None = None  # (products revision, variant index) of the page before
        while True:
            revision = self._products_rev
            ctx = self._page_context(op, after, index if index is not None and index[0] == revision else None)
            data: dict[str, Any] | None = None
            if lean is not None:
                try:
                    data = lean.execute(ctx)
                    self.pages_by_executor["lean"] += 1
                except Unsupported:  # graphql-core runs this page, with its own result and errors
                    ctx = self._page_context(op, after, index if index is not None and index[0] == revision else None)
            if data is None:
                # Every resolver is synchronous: telling the executor so spares it an awaitable check per field
                # (~10% of a bulk run's CPU).
                result = execute(schema, document, context_value=ctx, is_awaitable=_never_awaitable)
                self.pages_by_executor["graphql-core"] += 1
                assert isinstance(result, ExecutionResult)
                if result.errors:
                    raise RuntimeError(result.errors[0].message)
                data = result.data
            built = ctx.variant_index()
            index = (revision, built) if built is not None else None
            roots, lines = flattener.lines(data or {}, grouped=op.group_objects)
            if lines:
                out.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
                out.flush()
            op.root_object_count += roots
            op.object_count += len(lines)
            limit = self.settings.fail_after_objects
            if limit is not None and op.object_count >= limit:
                op.status, op.error_code = "FAILED", self.settings.fail_error_code
                return
            # The modeled pace is Shopify's wall pace: the time this process spent executing the page counts
            # toward it (it used to come on top, so a run took its modeled time plus the sandbox's own CPU).
            due = began + self.settings.seconds_per_object * op.object_count - time.monotonic()
            await asyncio.sleep(max(0.0, due))
            has_next, after = ctx.bulk_next
            if op.cancel_requested or not has_next:
                return

    def _page_context(self, op: BulkOperation, after: str | None, index: Any) -> Context:
        ctx = Context(self.state, self, "bulk", op.token, op.base_url, bulk_page=(after, self.settings.page_size))
        if index is not None:
            # Rebuilding it each page scanned every variant per 100 orders: quadratic in the store's size.
            ctx.adopt_variant_index(index[1])
        return ctx

    # ------------------------------------------------------------------ results
    def _signed_url(self, op: BulkOperation) -> str:
        expires = int(time.time()) + URL_LIFETIME
        name = f"bulk-{op.id}.jsonl"
        query = urlencode({
            "GoogleAccessId": "ferry-sandbox@shopify-tiers.iam.gserviceaccount.com",
            "Expires": expires,
            "Signature": self._signature(op.key, expires),
            "response-content-disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}",
            "response-content-type": "application/jsonl",
        })
        return f"{op.base_url}/bulk-operation-outputs/{op.key}-final?{query}"

    def _signature(self, key: str, expires: int) -> str:
        mac = hmac.new(self._secret, f"{key}:{expires}".encode(), hashlib.sha256).digest()
        return base64.b64encode(mac).decode("ascii")

    def result_file(self, name: str, expires: str | None, signature: str | None) -> Path | None:
        """The JSONL file behind a result URL, if the URL's signature holds and it has not expired."""
        key = name.removesuffix("-final")
        try:
            exp = int(expires or "")
        except ValueError:
            return None
        good = hmac.compare_digest(self._signature(key, exp), signature or "")
        path = self.directory / f"{key}.jsonl"
        if not good or exp < time.time() or not path.exists():
            return None
        return path

    def _record_finish(self, op: BulkOperation) -> None:
        payload = {"admin_graphql_api_id": op.gid, "completed_at": _iso(op.completed_at)
                   if op.status == "COMPLETED" else None, "created_at": _iso(op.created_at),
                   "error_code": op.error_code.lower() if op.error_code else None,
                   "status": op.status.lower(), "type": op.type.lower()}
        self.events.append({"topic": "bulk_operations/finish", "created_at": _iso(op.completed_at or time.time()),
                            "payload": payload})
        self.state.changed("bulk_operations", "finish", payload)  # delivered to bulk_operations/finish subscribers


def _lean(schema: GraphQLSchema, document: Any) -> LeanExecutor | None:
    try:
        return LeanExecutor(schema, document)
    except Unsupported:
        return None


def _never_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    return False


def concurrent_queries(api_version: str) -> int:
    """How many bulk query operations one app may run at once on a shop, by the request's API version."""
    if api_version == "unstable" or api_version >= "2026-01":
        return CONCURRENT_QUERIES["2026-01"]
    return CONCURRENT_QUERIES["before-2026-01"]


def _direct_fields(node: FieldNode) -> list[FieldNode]:
    return [f for f in node.selection_set.selections if isinstance(f, FieldNode)] if node.selection_set else []


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _view(op: BulkOperation) -> dict[str, Any]:
    return {
        "__typename": "BulkOperation", "id": op.gid, "status": op.status, "type": op.type,
        "errorCode": op.error_code, "createdAt": _iso(op.created_at), "completedAt": _iso(op.completed_at),
        "objectCount": str(op.object_count), "rootObjectCount": str(op.root_object_count),
        "fileSize": None if op.file_size is None else str(op.file_size), "url": op.url,
        "partialDataUrl": op.partial_data_url, "query": op.query,
    }


# ---------------------------------------------------------------------- checking the inner query
def check_bulk_query(schema: GraphQLSchema, query: str) -> str | None:
    """Shopify's reason to refuse a bulk query, or None. Message texts are the sandbox's own unless noted."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return f"Invalid bulk query: {exc.message}"
    errors = validate(schema, document)
    if errors:
        renamed = undefined_field(errors[0].message)
        return f"Invalid bulk query: {renamed[0] if renamed else errors[0].message}"
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(ops) != 1 or ops[0].operation != OperationType.QUERY:
        return "Bulk queries must contain exactly one query operation."
    if ops[0].variable_definitions:
        return "Bulk queries cannot use variables."
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    root = schema.query_type
    assert root is not None
    top = collect_fields(schema, fragments, root, ops[0].selection_set)
    if len(top) != 1:
        return "Bulk queries must contain exactly one top-level field."
    fdef = root.fields[top[0].name.value]
    if top[0].name.value in ("node", "nodes") or not is_connection(get_named_type(fdef.type)):
        return "Bulk queries must contain at least one connection."
    counter = [0]
    return _check_connection(schema, fragments, top[0], get_named_type(fdef.type), 0, counter)


def _check_connection(schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], node: FieldNode,
                      conn: Any, depth: int, counter: list[int]) -> str | None:
    counter[0] += 1
    if counter[0] > MAX_CONNECTIONS:
        return f"Bulk queries cannot contain more than {MAX_CONNECTIONS} connections."
    if depth > MAX_NESTING:
        return f"Bulk queries cannot contain connections with a nesting depth greater than {MAX_NESTING}."
    node_type = get_named_type(conn.fields["nodes"].type)
    for selection in _node_selections(schema, fragments, conn, node):
        fields = collect_fields(schema, fragments, node_type, selection)
        problem = _check_node(schema, fragments, node_type, fields, depth, counter)
        if problem is not None:
            return problem
    return None


def _check_node(schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], node_type: GraphQLObjectType,
                fields: list[FieldNode], depth: int, counter: list[int]) -> str | None:
    nested = []
    for f in fields:
        fdef = node_type.fields.get(f.name.value)
        if fdef is None:
            continue
        named = get_named_type(fdef.type)
        if is_connection(named):
            nested.append(f.name.value)
            problem = _check_connection(schema, fragments, f, named, depth + 1, counter)
            if problem is not None:
                return problem
        elif isinstance(named, GraphQLObjectType) and f.selection_set is not None:
            inner = collect_fields(schema, fragments, named, f.selection_set)
            if _has_connection(schema, fragments, named, inner):
                if is_list(fdef.type):
                    # Shopify's own message (reference §4.2).
                    return "Queries that contain a connection field within a list field are not currently supported."
                return (f"The sandbox supports nested connections only directly on a connection's nodes "
                        f"(found one under '{f.name.value}').")
    if nested and not any(f.name.value == "id" for f in fields):
        return (f"The parent 'node' field for a nested connection must select the 'id' field. "
                f"Connection fields without 'id': {', '.join(nested)}.")
    return None


def _has_connection(schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], obj: GraphQLObjectType,
                    fields: list[FieldNode]) -> bool:
    for f in fields:
        fdef = obj.fields.get(f.name.value)
        if fdef is None:
            continue
        named = get_named_type(fdef.type)
        if is_connection(named):
            return True
        if isinstance(named, GraphQLObjectType) and f.selection_set is not None and _has_connection(
                schema, fragments, named, collect_fields(schema, fragments, named, f.selection_set)):
            return True
    return False


def _node_selections(schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], conn: Any,
                     node: FieldNode) -> list[SelectionSetNode]:
    """The selection sets that apply to the connection's nodes: ``nodes { … }`` and ``edges { node { … } }``."""
    out: list[SelectionSetNode] = []
    if node.selection_set is None:
        return out
    edge_type = get_named_type(conn.fields["edges"].type)
    for sub in collect_fields(schema, fragments, conn, node.selection_set):
        if sub.name.value == "nodes" and sub.selection_set is not None:
            out.append(sub.selection_set)
        elif sub.name.value == "edges" and sub.selection_set is not None:
            for inner in collect_fields(schema, fragments, edge_type, sub.selection_set):
                if inner.name.value == "node" and inner.selection_set is not None:
                    out.append(inner.selection_set)
    return out


# ---------------------------------------------------------------------- JSONL lines
class _Flattener:
    """Turns a page of the root connection's result into JSONL lines: connections become lines of their own."""

    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode],
                 selection: SelectionSetNode) -> None:
        self.schema = schema
        self.fragments = fragments
        root = schema.query_type
        assert root is not None
        self.root_field = collect_fields(schema, fragments, root, selection)[0]
        self.root_conn = get_named_type(root.fields[self.root_field.name.value].type)
        self._layouts: dict[tuple[str, int], Any] = {}
        self._root_fields: list[FieldNode] | None = None

    def lines(self, data: dict[str, Any], *, grouped: bool) -> tuple[int, list[dict[str, Any]]]:
        key = self.root_field.alias.value if self.root_field.alias else self.root_field.name.value
        items = self._items(self.root_field, data.get(key))
        node_type = get_named_type(self.root_conn.fields["nodes"].type)
        if self._root_fields is None:  # the same list every page, so the row layouts are found again
            self._root_fields = self._node_fields(self.root_conn, self.root_field, node_type)
        fields = self._root_fields
        parents: list[dict[str, Any]] = []
        children: list[dict[str, Any]] = []
        for item in items:
            rows = self._rows(node_type, fields, item, None)
            if grouped:
                parents += rows
            else:
                parents.append(rows[0])
                children += rows[1:]
        return len(items), parents + children

    def _node_fields(self, conn: Any, node: FieldNode, node_type: GraphQLObjectType) -> list[FieldNode]:
        fields: list[FieldNode] = []
        for sel in _node_selections(self.schema, self.fragments, conn, node):
            fields += collect_fields(self.schema, self.fragments, node_type, sel)
        return fields

    @staticmethod
    def _items(node: FieldNode, value: Any) -> list[dict[str, Any]]:
        """The node dicts of a connection result, merging ``edges.node`` and ``nodes`` selections per position."""
        if not isinstance(value, dict):
            return []
        merged: list[dict[str, Any]] = []
        for sub in node.selection_set.selections if node.selection_set else ():
            if not isinstance(sub, FieldNode):
                continue
            key = sub.alias.value if sub.alias else sub.name.value
            if sub.name.value == "nodes":
                rows = value.get(key) or []
            elif sub.name.value == "edges":
                inner = _direct_fields(sub)
                node_key = next((f.alias.value if f.alias else "node" for f in inner if f.name.value == "node"), "node")
                rows = [e.get(node_key) or {} for e in value.get(key) or [] if isinstance(e, dict)]
            else:
                continue
            for i, row in enumerate(rows):
                if i == len(merged):
                    merged.append({})
                merged[i].update(row)
        return merged

    def _rows(self, node_type: GraphQLObjectType, fields: list[FieldNode], data: dict[str, Any],
              parent_id: str | None) -> list[dict[str, Any]]:
        layout = self._layouts.get((node_type.name, id(fields)))
        if layout is None:
            layout = self._layouts[(node_type.name, id(fields))] = self._layout(node_type, fields)
        keys, nested, id_key = layout
        line = {key: data[key] for key in keys if key in data}
        if parent_id is not None:
            line["__parentId"] = parent_id
        rows = [line]
        own_id = data.get(id_key) if id_key else None
        for f, key, child_type, child_fields in nested:
            for item in self._items(f, data.get(key)):
                rows += self._rows(child_type, child_fields, item, own_id)
        return rows

    def _layout(self, node_type: GraphQLObjectType, fields: list[FieldNode]) -> Any:
        """Per node type and selection, computed once a run (it was per row): the keys a line copies, the
        nested connections (field, key, node type, node fields) and the key of the node's id."""
        keys: list[str] = []
        nested: list[tuple[FieldNode, str, GraphQLObjectType, list[FieldNode]]] = []
        for f in fields:
            key = f.alias.value if f.alias else f.name.value
            fdef = node_type.fields.get(f.name.value)
            named = get_named_type(fdef.type) if fdef is not None else None
            if named is not None and is_connection(named):
                child_type = get_named_type(named.fields["nodes"].type)
                nested.append((f, key, child_type, self._node_fields(named, f, child_type)))
            elif key not in keys:
                keys.append(key)
        id_key = next((f.alias.value if f.alias else "id" for f in fields if f.name.value == "id"), None)
        return keys, nested, id_key
