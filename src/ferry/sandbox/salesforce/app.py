"""The FastAPI app: OAuth, the emulated REST/Bulk API behind one dispatcher, and admin routes."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferry.sandbox.connections import Receive, Scope, Send, drop_connection, expose_transport, hold_connection
from ferry.sandbox.salesforce.auth import OAuthError, bearer_token, parse_basic
from ferry.sandbox.salesforce.cdc import current_origin, origin_for
from ferry.sandbox.salesforce.errors import ApiError, not_found, session_invalid
from ferry.sandbox.salesforce.faults import Drop
from ferry.sandbox.salesforce.routing import (
    JSON_TYPE,
    Call,
    Reply,
    endpoint_name,
    parse_version,
    split_raw_path,
    versions_list,
)

if TYPE_CHECKING:
    from ferry.sandbox.salesforce import SalesforceSandbox

API_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=orjson.dumps(body), status_code=status, headers=headers, media_type=JSON_TYPE)


async def stream_pieces(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Send a large body piece by piece from the event loop, letting other requests run in between."""
    for piece in pieces:
        yield piece
        await asyncio.sleep(0)


def base_url_of(request: Request) -> str:
    return str(request.base_url).rstrip("/")


class SandboxApp(FastAPI):
    """FastAPI that exposes each request's TCP transport, so an injected fault can reset the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        expose_transport(scope, send)
        await super().__call__(scope, receive, send)


async def drop(request: Request, fault: Drop) -> Response:
    """A reset or a read timeout: hold the call (timeout), then kill the connection without an answer."""
    if fault.hold > 0:
        await hold_connection(request.receive, fault.hold)
    await drop_connection(request.scope)
    return Response(status_code=204)  # never reaches the client: the server sees the connection gone


def cut_short(request: Request, reply: Reply, headers: dict[str, str]) -> Response:
    """The answer's status, headers and full Content-Length, then half its body, then a reset connection."""
    body = reply.content()
    half = len(body) // 2

    async def first_half_then_reset() -> AsyncIterator[bytes]:
        yield body[:half]
        await asyncio.sleep(0.05)  # let the first half leave before the reset discards what is queued
        await drop_connection(request.scope)

    return StreamingResponse(first_half_then_reset(), status_code=reply.status, media_type=reply.content_type,
                             headers={**headers, "Content-Length": str(len(body))})


async def endpoint_fault(sandbox: SalesforceSandbox, request: Request) -> Response | None:
    """Faults for an endpoint outside the data API (OAuth token, /cometd): rules with an absolute path.

    Returns the response to send instead of the real one (an error reply, or a dropped connection), or None.
    Such endpoints fail before their handler runs (`processed` is not honoured).
    """
    decision = await sandbox.faults.before_call(request.method, "", request.url.path, api=False)
    if decision is None:
        return None
    if decision.drop is not None:
        return await drop(request, decision.drop)
    if decision.reply is not None:
        return json_response(decision.reply.body, decision.reply.status, decision.reply.headers)
    return None


def build_app(sandbox: SalesforceSandbox) -> FastAPI:
    app = SandboxApp(title="ferry Salesforce sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    state = sandbox.state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return json_response(not_found().body(), 404)
        return json_response([{"message": str(exc.detail), "errorCode": "METHOD_NOT_ALLOWED"}], exc.status_code)

    @app.get("/services/data")
    @app.get("/services/data/")
    async def versions() -> Response:
        # The versions list needs no session and does not count against the API budget.
        return json_response(versions_list())

    @app.post("/services/oauth2/token")
    async def token(request: Request) -> Response:
        faulted = await endpoint_fault(sandbox, request)
        if faulted is not None:
            return faulted
        # The token endpoint takes x-www-form-urlencoded; parse it directly (no multipart dependency needed).
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True))
        try:
            body = state.oauth.token(form, parse_basic(request.headers.get("authorization")), base_url_of(request))
        except OAuthError as err:
            return json_response(err.body(), err.status)
        return json_response(body)

    @app.get("/services/oauth2/userinfo")
    async def userinfo(request: Request) -> Response:
        session = state.oauth.session(bearer_token(request.headers.get("authorization")) or "")
        if session is None:
            return json_response({"error": "invalid_token", "error_description": "Bad_OAuth_Token"}, 403)
        user = state.store.table("User").rows.get(session.user_id, {})
        return json_response({
            "sub": f"{base_url_of(request)}/id/{state.org_id}/{session.user_id}", "user_id": session.user_id,
            "organization_id": state.org_id, "preferred_username": user.get("Username"), "name": user.get("Name"),
            "email": user.get("Email"), "email_verified": True, "active": True, "user_type": "STANDARD",
        })

    @app.api_route("/services/data/{version}", methods=API_METHODS)
    @app.api_route("/services/data/{version}/{rest:path}", methods=API_METHODS)
    async def api(request: Request) -> Response:
        ticket = state.budget.long_running.enter()
        try:
            reply = await sandbox_call(sandbox, request)
            sandbox.flush()  # with persist=True, the call is durable before it is answered
            if isinstance(reply, Drop) and reply.reply is None:
                return await drop(request, reply)
        finally:
            state.budget.long_running.leave(ticket)
        if isinstance(reply, Drop):
            assert reply.reply is not None
            return cut_short(request, reply.reply, {"Sforce-Limit-Info": state.budget.header(), **reply.reply.headers})
        headers = {"Sforce-Limit-Info": state.budget.header(), **reply.headers}
        if reply.stream is not None:
            return StreamingResponse(stream_pieces(reply.stream), status_code=reply.status, headers=headers,
                                     media_type=reply.content_type)
        if reply.status == 204 or (reply.body is None and reply.raw is None):
            return Response(status_code=reply.status, headers=headers)
        return Response(content=reply.content(), status_code=reply.status, headers=headers,
                        media_type=reply.content_type)

    register_admin_routes(app, sandbox)
    sandbox.register_event_and_login_routes(app)
    return app


async def sandbox_call(sandbox: SalesforceSandbox, request: Request) -> Reply | Drop:
    """Authenticate, charge the API budget, apply injected faults, then dispatch to the handler.

    A `Drop` means: answer nothing and kill the connection (an injected reset or read timeout); with
    `processed` set, the handler ran first (the write happened, the client never learns it).
    """
    state = sandbox.state
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    segments = split_raw_path(raw_path.decode("latin-1"))[2:]
    method = "GET" if request.method == "HEAD" else request.method
    try:
        version = parse_version(segments[0])
        token = bearer_token(request.headers.get("authorization")) or ""
        session = state.oauth.session(token)
        if session is None:
            raise session_invalid()
        if sandbox.faults.session_expires():
            state.oauth.sessions.pop(token, None)
            raise session_invalid()
        state.budget.long_running.check()
        # who writes, for Change Data Capture's changeOrigin/commitUser (Bulk jobs inherit it: tasks copy context)
        api = "bulkapi" if segments[1:2] == ["jobs"] else "rest"
        current_origin.set(origin_for(api, version, request.headers.get("sforce-call-options"), session.user_id))
        try:
            route, params = sandbox.router.find(method, segments[1:])
        except ApiError:
            state.budget.charge(endpoint_name(method, None))
            raise
        state.budget.charge(endpoint_name(method, route))
        body = await request.body()
        decision = await sandbox.faults.before_call(method, "/".join(segments[1:]), request.url.path, body=body)
        if decision is not None:
            if decision.expire_session:
                state.oauth.sessions.pop(token, None)
            if decision.reply is not None:
                return decision.reply
            if decision.drop is not None and not decision.drop.processed:
                return decision.drop
        call = Call(method, version, segments[1:], dict(request.query_params), request.headers,
                    body, raw_query=request.url.query)
        try:
            reply = route.handler(call, params)
        except ApiError as err:
            reply = Reply(err.status, err.body())
        await sandbox.faults.after_call(method, route.template, len(call.body), reply)
        if decision is not None and decision.drop is not None:
            return dataclasses.replace(decision.drop, reply=reply) if decision.drop.kind == "cut" else decision.drop
        return reply
    except ApiError as err:
        return Reply(err.status, err.body())


def _ndjson_rows(table: Any, fields: Any, include_deleted: bool) -> Iterator[bytes]:
    """Rows as NDJSON in batches; ids are listed first, so writes while streaming cannot break the walk."""
    for rows in (table.rows, table.deleted) if include_deleted else (table.rows,):
        ids = list(rows)
        for start in range(0, len(ids), 5000):
            batch = [rows[i] for i in ids[start:start + 5000] if i in rows]
            yield b"".join(orjson.dumps({f: r.get(f) for f in fields}) + b"\n" for r in batch)


def register_admin_routes(app: FastAPI, sandbox: SalesforceSandbox) -> None:
    """Routes outside the emulated API: no auth, not counted."""
    state = sandbox.state

    @app.get("/__sandbox/records/{sobject}")
    async def records(sobject: str, include_deleted: bool = False, ndjson: bool = False) -> Response:
        obj = state.schema.get(sobject)
        if obj is None:
            return json_response(not_found().body(), 404)
        table = state.store.table(obj.name)
        if ndjson:  # one record per line, streamed: a multi-million-record table in bounded memory
            return StreamingResponse(_ndjson_rows(table, obj.fields, include_deleted),
                                     media_type="application/x-ndjson")
        rows = list(table.rows.values())
        if include_deleted:
            rows += list(table.deleted.values())
        return json_response([{f: r.get(f) for f in obj.fields} for r in rows])

    @app.get("/__sandbox/bulk/ingest")
    async def ingest_jobs() -> Response:
        """Every Bulk API 2.0 ingest job: its object, state and the external ids its upload carried (a test counts
        records uploaded in more than one job)."""
        return json_response([_job_summary(job) for job in sandbox.bulk.ingest_jobs.values()])

    @app.get("/__sandbox/stats")
    async def stats() -> Response:
        budget = state.budget
        gate = budget.long_running
        return json_response({
            "api_calls": budget.used,
            "by_endpoint": dict(budget.by_endpoint),
            "composite_subrequests": dict(budget.subrequests),
            "records": state.store.counts(),
            "daily_api_requests": {"used": budget.used, "max": budget.max},
            "concurrent_long_running": {"limit": gate.limit, "in_flight": gate.in_flight(),
                                        "long_running": gate.long_running(), "peak": gate.peak_long_running,
                                        "refused": gate.refused},
            "bulk_jobs": {"ingest": len(sandbox.bulk.ingest_jobs), "query": len(sandbox.bulk.query_jobs)},
            "faults_injected": dict(sorted(sandbox.faults.injected.items())),
        })

    @app.post("/__sandbox/reset")
    async def reset() -> Response:
        sandbox.reset()
        return json_response({"reset": True})

    @app.get("/__sandbox/faults")
    async def get_faults() -> Response:
        return json_response(sandbox.faults.describe())

    @app.post("/__sandbox/faults")
    async def set_faults(request: Request) -> Response:
        return await configure_faults(request, merge=False)

    @app.patch("/__sandbox/faults")
    async def merge_faults(request: Request) -> Response:
        return await configure_faults(request, merge=True)

    async def configure_faults(request: Request, *, merge: bool) -> Response:
        try:
            config = orjson.loads(await request.body() or b"{}")
            if merge:
                sandbox.faults.update(config)
            else:
                sandbox.faults.configure(config)
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            return json_response({"error": str(exc)}, 400)
        return json_response(sandbox.faults.describe())

    @app.delete("/__sandbox/faults")
    async def clear_faults() -> Response:
        sandbox.faults.clear()
        return json_response(sandbox.faults.describe())


def _job_summary(job: Any) -> dict[str, Any]:
    keys: list[str] = []
    ext = job.external_id_field.name if job.external_id_field is not None else None
    if job.data and ext:
        lines = job.data.decode("utf-8").splitlines()
        header = next(csv.reader(lines[:1]), [])
        if ext in header:
            col = header.index(ext)
            keys = [row[col] for row in csv.reader(lines[1:]) if len(row) > col]
    return {"id": job.id, "object": job.sobject.name, "state": job.state, "external_id_field": ext, "keys": keys}
