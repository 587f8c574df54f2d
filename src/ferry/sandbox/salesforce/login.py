"""Login routes besides the token endpoint: SOAP `login()` and OAuth token revocation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request, Response

from ferry.sandbox.salesforce import soap

if TYPE_CHECKING:
    from ferry.sandbox.salesforce.state import OrgState

_XML = "text/xml;charset=UTF-8"


def register_login_routes(app: FastAPI, state: OrgState, after_change: Callable[[], None] = lambda: None) -> None:
    """`after_change` runs after a revocation (the sandbox persists its token table then)."""

    async def soap_call(request: Request, version: str) -> Response:
        action = request.headers.get("soapaction", "").strip().strip('"')
        body = await request.body()
        login = soap.parse_login(body)
        if login is None or (action and action != "login"):
            return Response(soap.fault("INVALID_OPERATION", "INVALID_OPERATION: the sandbox emulates only the "
                                       "SOAP login() call; use the REST API"), 500, media_type=_XML)
        user_id = state.oauth.check_password(login.username, login.password)
        if user_id is None:
            return Response(soap.fault("INVALID_LOGIN", soap.INVALID_LOGIN), 500, media_type=_XML)
        session = state.oauth.new_session(user_id)
        user = state.store.table("User").rows.get(user_id, {})
        base_url = str(request.base_url).rstrip("/")
        xml = soap.login_response(
            base_url=base_url, version=version, org_id=state.org_id, user_id=user_id, session_id=session.token,
            username=str(user.get("Username", login.username)), email=str(user.get("Email", "")),
            full_name=" ".join(str(user[k]) for k in ("FirstName", "LastName") if user.get(k)),
            session_seconds=int(state.oauth.session_ttl), profile_id=str(user.get("ProfileId", "")),
        )
        return Response(xml, 200, media_type=_XML)

    async def revoke(request: Request) -> Response:
        # RFC 7009 as the org implements it: token in the form (POST) or the query string (GET)
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
        token = form.get("token") or request.query_params.get("token", "")
        if not state.oauth.revoke(token):
            return Response(orjson.dumps({"error": "invalid_token", "error_description": "invalid token"}), 400,
                            media_type="application/json;charset=UTF-8")
        after_change()
        return Response(status_code=200)

    app.add_api_route("/services/Soap/u/{version}", soap_call, methods=["POST"])
    app.add_api_route("/services/Soap/u/{version}/{org}", soap_call, methods=["POST"])
    app.add_api_route("/services/oauth2/revoke", revoke, methods=["POST", "GET"])
