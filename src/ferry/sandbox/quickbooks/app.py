"""The FastAPI app: Intuit's OAuth endpoints, ``/v3/company/{realm}/...`` and ``/__sandbox``.

Every Accounting API call passes, in order: the bearer token (401 with the gateway's ``fault`` body when
missing, unknown or expired), the realm (403 when the token is for another company), the throttles (429),
then the operation. ``minorversion`` is read and recorded but changes nothing: since 2025-08-01 Intuit
ignores values below 75 and answers as 75, which is the shape served here. A write with ``?requestid=``
answers a repeat of that id with the first answer, byte for byte, and does nothing else.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from ferry.sandbox.quickbooks import api, errors
from ferry.sandbox.quickbooks.company import ENTITIES, Company
from ferry.sandbox.quickbooks.faults import Faults
from ferry.sandbox.quickbooks.oauth import OAuthServer, TokenError, discovery_document
from ferry.sandbox.quickbooks.ratelimit import RateLimits
from ferry.sandbox.quickbooks.writes import Writer

V3 = "/v3/company/{realm}"
KEPT_STATUSES = (200, 400)  # a processed call's answer (a success or a Fault) is what a requestid replays


@dataclass
class Stats:
    api_calls: int = 0
    unauthorized: int = 0
    replayed: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    minor_versions: Counter[str] = field(default_factory=Counter)


@dataclass
class SandboxState:
    company: Company
    oauth: OAuthServer
    limits: RateLimits
    faults: Faults
    stats: Stats = field(default_factory=Stats)
    requestid_window: float = 86400.0
    on_change: Callable[[], None] = lambda: None


def build_app(state: SandboxState) -> FastAPI:
    app = FastAPI(title="ferry QuickBooks Online sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    _error_handlers(app)
    _oauth_routes(app, state)
    _api_routes(app, state)
    _admin_routes(app, state)
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.QboFault)
    async def fault(_: Request, exc: errors.QboFault) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v3/"):
            return errors.QboFault("500", "Unsupported Operation",
                                   f"Operation {request.method} {request.url.path} is not supported.",
                                   status=exc.status_code).response()
        return errors.json_response({"error": str(exc.detail)}, exc.status_code)


def base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


# -- OAuth -----------------------------------------------------------------------------------------------------


def _oauth_routes(app: FastAPI, state: SandboxState) -> None:
    async def discovery(request: Request) -> Response:
        return errors.json_response(discovery_document(base_url(request)))

    for path in ("/.well-known/openid_configuration", "/.well-known/openid_sandbox_configuration"):
        app.add_api_route(path, discovery, methods=["GET"])
        app.add_api_route(f"{path}/", discovery, methods=["GET"])

    @app.get("/connect/oauth2")
    async def authorize(request: Request) -> Response:
        """The consent screen, consented at once: back to ``redirect_uri`` with code, state and realmId."""
        q = request.query_params
        try:
            code = state.oauth.authorize(q.get("client_id", ""), q.get("redirect_uri", ""),
                                         q.get("response_type", ""))
        except TokenError as exc:
            return errors.oauth_error(exc.error, exc.description, exc.status)
        params = {"code": code.code, "state": q.get("state", ""), "realmId": code.realm_id}
        separator = "&" if "?" in code.redirect_uri else "?"
        return RedirectResponse(f"{code.redirect_uri}{separator}{urlencode(params)}", status_code=302)

    @app.post("/oauth2/v1/tokens/bearer")
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        client_id, client_secret = _client_credentials(request, form)
        try:
            app_id = state.oauth.check_client(client_id, client_secret)
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                answer = state.oauth.exchange_code(form.get("code"), form.get("redirect_uri"), app_id)
            elif grant_type == "refresh_token":
                answer = state.oauth.refresh(form.get("refresh_token"), app_id)
            else:
                raise TokenError("unsupported_grant_type")
        except TokenError as exc:
            return errors.oauth_error(exc.error, exc.description, exc.status)
        state.on_change()
        return errors.json_response(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.post("/v2/oauth2/tokens/revoke")
    async def revoke(request: Request) -> Response:
        client_id, client_secret = _client_credentials(request, {})
        try:
            state.oauth.check_client(client_id, client_secret)
        except TokenError as exc:
            return errors.oauth_error(exc.error, exc.description, exc.status)
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            body = {}
        state.oauth.revoke(body.get("token") if isinstance(body, dict) else None)
        state.on_change()
        return Response(status_code=200)

    @app.get("/op/v1/jwks")
    async def jwks() -> Response:
        return errors.json_response({"keys": []})


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            user, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, None
        return user, secret
    return form.get("client_id"), form.get("client_secret")


# -- Accounting API --------------------------------------------------------------------------------------------

Operation = Callable[[Request], Awaitable[tuple[dict[str, Any], bool]]]


async def _guarded(request: Request, state: SandboxState, endpoint: str, operation: Operation,
                   *, batch: bool = False) -> Response:
    """Authentication, realm, throttles, ``requestid`` replay, then the operation (and persistence)."""
    state.stats.api_calls += 1
    state.stats.by_endpoint[endpoint] += 1
    state.stats.minor_versions[request.query_params.get("minorversion", "")] += 1
    token = state.oauth.bearer(request.headers.get("authorization"))
    if token is None:
        state.stats.unauthorized += 1
        return errors.authentication_failed()
    realm = request.path_params["realm"]
    if realm != token.realm_id or realm != state.company.realm_id:
        return errors.QboFault("3100", "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                               "", fault_type="AuthorizationFault", status=403).response()
    if not state.limits.admit(batch, token.client_id):
        return errors.throttled()
    state.limits.in_flight += 1
    try:
        return await _run(request, state, operation)
    finally:
        state.limits.in_flight -= 1


async def _run(request: Request, state: SandboxState, operation: Operation) -> Response:
    # Read the body first: from the requestid lookup to keeping the answer nothing then awaits real I/O, so two
    # calls with one requestid arriving together cannot both miss the lookup and both write.
    await request.body()
    request_id = request.query_params.get("requestid") if request.method == "POST" else None
    if request_id:
        kept = state.company.kept_answer(request_id, state.requestid_window)
        if kept is not None:
            state.stats.replayed += 1
            return Response(kept.body, kept.status, media_type=errors.JSON)
    try:
        body, changed = await operation(request)
        response = errors.json_response(body)
    except errors.QboFault as fault:
        response, changed = fault.response(), False
    if request_id and response.status_code in KEPT_STATUSES:
        state.company.keep_answer(request_id, response.status_code, bytes(response.body))
        changed = True
    if changed:
        state.on_change()
    return response


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise errors.QboFault("2010", "Request has invalid or unsupported property",
                              "Request has invalid or unsupported property : invalid JSON") from None


def _api_routes(app: FastAPI, state: SandboxState) -> None:
    async def read_one(request: Request, realm: str, entity: str, rid: str) -> Response:
        async def operation(_: Request) -> tuple[dict[str, Any], bool]:
            if entity.lower() == "companyinfo":
                return api.company_info(state.company), False
            return api.read(state.company, api.entity_of(entity), rid), False
        return await _guarded(request, state, f"GET {entity.lower()}", operation)

    async def write_one(request: Request, realm: str, entity: str) -> Response:
        async def operation(req: Request) -> tuple[dict[str, Any], bool]:
            name = api.entity_of(entity)
            q = req.query_params
            return api.write(state.company, name, await _json(req), q.get("operation"), q.get("include")), True
        return await _guarded(request, state, f"POST {entity.lower()}", operation)

    async def run_query(request: Request, realm: str) -> Response:
        async def operation(req: Request) -> tuple[dict[str, Any], bool]:
            text = req.query_params.get("query")
            if text is None:
                text = (await req.body()).decode(errors="replace")
            return api.query(state.company, text), False
        return await _guarded(request, state, "query", operation)

    async def run_batch(request: Request, realm: str) -> Response:
        async def operation(req: Request) -> tuple[dict[str, Any], bool]:
            return api.batch(state.company, await _json(req))
        return await _guarded(request, state, "batch", operation, batch=True)

    async def run_cdc(request: Request, realm: str) -> Response:
        async def operation(req: Request) -> tuple[dict[str, Any], bool]:
            q = req.query_params
            return api.cdc(state.company, q.get("entities"), q.get("changedSince"), time.time()), False
        return await _guarded(request, state, "cdc", operation)

    app.add_api_route(f"{V3}/query", run_query, methods=["GET", "POST"])
    app.add_api_route(f"{V3}/batch", run_batch, methods=["POST"])
    app.add_api_route(f"{V3}/cdc", run_cdc, methods=["GET"])
    app.add_api_route(f"{V3}/{{entity}}/{{rid}}", read_one, methods=["GET"])
    app.add_api_route(f"{V3}/{{entity}}", write_one, methods=["POST"])


# -- admin -----------------------------------------------------------------------------------------------------


def _admin_routes(app: FastAPI, state: SandboxState) -> None:
    """Outside the API: no auth, no faults, no throttles. Never part of QuickBooks; for tests and the demo."""

    @app.get("/__sandbox/records/{entity}")
    async def records(entity: str, offset: int = 0, limit: int | None = None, deleted: bool = False) -> Response:
        name = api.entity_of(entity)
        rows = list(state.company.deleted[name].values()) if deleted else state.company.all(name)
        end = len(rows) if limit is None else offset + max(0, limit)
        return errors.json_response(rows[offset:end])

    @app.post("/__sandbox/records/{entity}/{rid}")
    async def edit(request: Request, entity: str, rid: str) -> Response:
        """Change a record as a QuickBooks user would in the web app: a sparse update with the current
        SyncToken (so a client holding the old one then meets ``5010``)."""
        name = api.entity_of(entity)
        current = state.company.get(name, rid)
        if current is None:
            return errors.json_response({"error": f"no {name} {rid}"}, 404)
        body = {**(await _json(request)), "Id": rid, "SyncToken": current["SyncToken"], "sparse": True}
        record = Writer(state.company).update(name, body)
        state.on_change()
        return errors.json_response(record)

    @app.get("/__sandbox/stats")
    async def stats() -> Response:
        return errors.json_response({
            "api_calls": state.stats.api_calls,
            "unauthorized": state.stats.unauthorized,
            "replayed": state.stats.replayed,
            "by_endpoint": dict(sorted(state.stats.by_endpoint.items())),
            "minor_versions": dict(state.stats.minor_versions),
            "records": {e: len(state.company.records[e]) for e in ENTITIES},
            "deleted": {e: len(state.company.deleted[e]) for e in ENTITIES},
            "limits": state.limits.describe(),
            "oauth": state.oauth.describe(),
            "realm_id": state.company.realm_id,
        })

    @app.get("/__sandbox/oauth")
    async def oauth_view() -> Response:
        return errors.json_response(state.oauth.describe())

    @app.patch("/__sandbox/oauth")
    async def oauth_configure(request: Request) -> Response:
        return _configured(lambda body: state.oauth.configure(body), await _json(request), state.oauth.describe)

    @app.post("/__sandbox/oauth/expire")
    async def expire() -> Response:
        return errors.json_response({"expired": state.oauth.expire_access_tokens()})

    @app.post("/__sandbox/oauth/refresh-token")
    async def new_grant() -> Response:
        """A new refresh token for the company, as the OAuth Playground hands one out."""
        grant = state.oauth.issue_grant()
        state.on_change()
        return errors.json_response({"refresh_token": grant.token, "realm_id": grant.realm_id})

    @app.post("/__sandbox/oauth/apps")
    async def new_app() -> Response:
        """Another app connected to the company (its own client id and secret; its calls count as its own)."""
        client_id, client_secret = state.oauth.add_app()
        return errors.json_response({"client_id": client_id, "client_secret": client_secret})

    @app.get("/__sandbox/limits")
    async def limits_view() -> Response:
        return errors.json_response(state.limits.describe())

    @app.patch("/__sandbox/limits")
    async def limits_configure(request: Request) -> Response:
        return _configured(state.limits.configure, await _json(request), state.limits.describe)

    @app.get("/__sandbox/faults")
    async def faults_view() -> Response:
        return errors.json_response(state.faults.describe())

    @app.post("/__sandbox/faults")
    async def faults_set(request: Request) -> Response:
        return _configured(state.faults.configure, await _json(request), state.faults.describe)

    @app.patch("/__sandbox/faults")
    async def faults_merge(request: Request) -> Response:
        return _configured(state.faults.update, await _json(request), state.faults.describe)

    @app.delete("/__sandbox/faults")
    async def faults_clear() -> Response:
        state.faults.clear()
        return errors.json_response(state.faults.describe())


def _configured(apply: Callable[[Any], None], body: Any, describe: Callable[[], dict[str, Any]]) -> Response:
    try:
        apply(body)
    except (TypeError, ValueError) as exc:
        return errors.json_response({"error": str(exc)}, 400)
    return errors.json_response(describe())
