"""``POST /admin/api/{version}/graphql.json``: parse and validate (graphql-core), price the query, charge the
token's points bucket, execute, and answer as Shopify does (reference §1, §2).

Every answer to a query that parsed and validated carries ``extensions.cost``. Over the 1,000-point cap:
``MAX_COST_EXCEEDED`` and nothing is charged. Not enough points: ``THROTTLED`` with HTTP 200 (switchable to
429: Shopify does not document which, reference §2.6) and nothing is run. The REST leaky bucket does not
apply to this endpoint (the gate skips it), as on Shopify, where the two limits are separate.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    validate,
)
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ferry.sandbox.shopify.errors import json_response
from ferry.sandbox.shopify.graphql.bulk import BulkOperations
from ferry.sandbox.shopify.graphql.context import Context
from ferry.sandbox.shopify.graphql.cost import MAX_QUERY_COST, PLANS, Buckets, CostCalculator, PointsBucket
from ferry.sandbox.shopify.graphql.messages import undefined_field
from ferry.sandbox.shopify.graphql.schema import admin_schema
from ferry.sandbox.shopify.state import ShopState

RATE_LIMIT_DOCS = "https://shopify.dev/api/usage/rate-limits"


class GraphQLApi:
    def __init__(self, state: ShopState, state_dir: Path, *, plan: str = "standard") -> None:
        self.state = state
        self.schema = admin_schema()
        maximum, rate = plan_limits(plan)
        self.plan = plan
        self.buckets = Buckets(maximum, rate)
        self.throttle_status = 200
        self.bulk = BulkOperations(state, admin_schema, Path(state_dir) / "bulk-operations")
        self.throttled = 0
        self.points = 0

    # ------------------------------------------------------------------ settings (/__sandbox/graphql)
    def describe(self) -> dict[str, Any]:
        return {"plan": self.plan, "maximum_available": self.buckets.maximum,
                "restore_rate": self.buckets.restore_rate, "throttle_status": self.throttle_status,
                "throttled": self.throttled, "points_charged": self.points,
                "bulk": {k: getattr(self.bulk.settings, k) for k in self.bulk.settings.__dataclass_fields__}}

    def configure(self, raw: dict[str, Any]) -> None:
        unknown = set(raw) - {"plan", "maximum_available", "restore_rate", "throttle_status", "bulk"}
        if unknown:
            raise ValueError(f"unknown GraphQL settings: {', '.join(sorted(unknown))}")
        if "throttle_status" in raw:
            if raw["throttle_status"] not in (200, 429):
                raise ValueError("throttle_status must be 200 or 429")
            self.throttle_status = raw["throttle_status"]
        if "plan" in raw or "maximum_available" in raw or "restore_rate" in raw:
            maximum, rate = plan_limits(raw.get("plan", self.plan))
            maximum = float(raw.get("maximum_available", maximum))
            rate = float(raw.get("restore_rate", rate))
            self.buckets.configure(maximum, rate)
            self.plan = raw.get("plan", self.plan)
        if "bulk" in raw:
            self.bulk.settings.update(dict(raw["bulk"]))

    # ------------------------------------------------------------------ the endpoint
    async def handle(self, request: Request, version: str) -> Response:
        token = request.headers.get("x-shopify-access-token", "")
        try:
            query, variables, operation_name = await _read_body(request)
        except ValueError:
            return json_response({"errors": {"query": "Required parameter missing or invalid"}}, 400)
        try:
            document = parse(query)
        except GraphQLError as exc:
            return json_response({"errors": [_format(exc)]})
        errors = validate(self.schema, document)
        if errors:
            return json_response({"errors": [_format(e) for e in errors]})
        return self._run(document, variables, operation_name, token, version, str(request.base_url))

    def _run(self, document: DocumentNode, variables: dict[str, Any], operation_name: str | None, token: str,
             version: str, base_url: str) -> Response:
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            message = (f"No operation named \"{operation_name}\"" if operation_name
                       else "An operation name is required when the document has more than one operation")
            return json_response({"errors": [{"message": message}]})
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        calc = CostCalculator(self.schema, fragments, variables)  # bad variables fail in execute
        requested = calc.operation(operation)
        bucket = self.buckets.get(token)
        if requested > MAX_QUERY_COST:
            return json_response({"errors": [{
                "message": f"Query cost is {requested}, which exceeds the single query max cost limit "
                           f"({MAX_QUERY_COST}).\n\nSee {RATE_LIMIT_DOCS} for more information on how to reduce "
                           "the complexity of this query.",
                "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": MAX_QUERY_COST,
                               "documentation": RATE_LIMIT_DOCS}}],
                "extensions": _cost(requested, None, bucket)})
        if not bucket.reserve(requested):
            self.throttled += 1
            return json_response({"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": RATE_LIMIT_DOCS}}],
                "extensions": _cost(requested, None, bucket)}, self.throttle_status)
        ctx = Context(self.state, self.bulk, version, token, base_url)
        result = execute(self.schema, document, context_value=ctx, variable_values=variables,
                         operation_name=operation_name)
        assert isinstance(result, ExecutionResult)  # every resolver is synchronous
        if operation.operation == OperationType.MUTATION or result.data is None:
            actual = requested
        else:
            actual = min(requested, calc.operation(operation, result.data, actual=True))
        bucket.settle(requested, actual)
        self.points += actual
        body: dict[str, Any] = {}
        if result.errors:
            body["errors"] = [_format(e) for e in result.errors]
        body["data"] = result.data
        extensions = _cost(requested, actual, bucket)
        if ctx.warnings:
            extensions["search"] = ctx.warnings
        body["extensions"] = extensions
        return json_response(body)

    # ------------------------------------------------------------------ bulk results
    def result_response(self, name: str, request: Request) -> Response:
        params = request.query_params
        path = self.bulk.result_file(name, params.get("Expires"), params.get("Signature"))
        if path is None:
            return Response(b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code>"
                            b"</Error>", 403, media_type="application/xml")
        filename = params.get("response-content-disposition") or ""
        response = FileResponse(path, media_type=params.get("response-content-type") or "application/jsonl",
                                headers={"Content-Disposition": filename} if filename else None)
        # Shopify's storage serves the file at network speed; here each chunk waits its turn on the event loop
        # that also executes running bulk operations page by page, so 64 KiB chunks starved a download
        # (a 50,000-customer file took two minutes while an orders operation ran).
        response.chunk_size = RESULT_CHUNK
        return response


RESULT_CHUNK = 4 * 1024 * 1024


def plan_limits(plan: str) -> tuple[float, float]:
    try:
        return PLANS[plan]
    except KeyError:
        raise ValueError(f"unknown plan {plan!r}: choose one of {', '.join(PLANS)}") from None


def _cost(requested: int, actual: int | None, bucket: PointsBucket) -> dict[str, Any]:
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
                     "throttleStatus": bucket.snapshot().status()}}


async def _read_body(request: Request) -> tuple[str, dict[str, Any], str | None]:
    """JSON ``{query, variables, operationName}`` (null, missing or ``{}`` variables alike), or a raw document
    sent as ``application/graphql`` (Airbyte sends its polls that way)."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/graphql":
        text = raw.decode("utf-8", "replace")
        if not text.strip():
            raise ValueError("empty query")
        return text, {}, None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("query"), str) or not doc["query"].strip():
        raise ValueError("no query")
    variables = doc.get("variables") or {}
    if not isinstance(variables, dict):
        raise ValueError("variables must be an object")
    name = doc.get("operationName")
    return doc["query"], variables, name if isinstance(name, str) and name else None


def _format(error: GraphQLError) -> dict[str, Any]:
    """graphql-core's error, in Shopify's words where clients look: ``undefinedField`` for an unknown field;
    an unexpected failure inside a resolver as Shopify's INTERNAL_SERVER_ERROR (never the Python message)."""
    original = error.original_error
    if original is not None and not isinstance(original, GraphQLError):
        request_id = str(uuid.uuid4())
        return {"message": f"Internal error. Looks like something went wrong on our end.\nRequest ID: {request_id} "
                           "(include this in support requests).",
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
                **({"path": error.path} if error.path else {})}
    out = dict(error.formatted)
    renamed = undefined_field(error.message)
    if renamed is not None:
        out["message"], out["extensions"] = renamed
    return out
