"""What stands in front of every Admin API call: version check, token auth, the REST leaky bucket, stats.

A plain ASGI middleware (no per-request task or body buffering), because the benchmarks push
hundreds of pages per second through it. Routes outside ``/admin/api/`` pass untouched.
"""

from __future__ import annotations

import hmac
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferry.sandbox.shopify.errors import THROTTLED, UNAUTHORIZED, ApiError
from ferry.sandbox.shopify.ratelimit import Buckets

_API_PATH = re.compile(r"^/admin/api/(?P<version>\d{4}-\d{2}|unstable)(?P<rest>/.*)$")
_NUMERIC_SEGMENT = re.compile(r"/\d+(?=/|\.json$|$)")


@dataclass
class Stats:
    api_calls: int = 0
    throttled: int = 0
    unauthorized: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)

    def record(self, method: str, rest: str) -> None:
        self.api_calls += 1
        self.by_endpoint[f"{method} /admin/api/{{version}}{_NUMERIC_SEGMENT.sub('/{id}', rest)}"] += 1


class ApiGate:
    def __init__(self, app: ASGIApp, *, token: str, buckets: Buckets, stats: Stats) -> None:
        self.app = app
        self.token = token.encode()
        self.buckets = buckets
        self.stats = stats
        self._request_ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/admin/api/"):
            await self.app(scope, receive, send)
            return
        match = _API_PATH.match(scope["path"])
        if match is None:
            await ApiError(404, "Not Found").response()(scope, receive, send)
            return
        version, rest = match["version"], match["rest"]
        self.stats.record(scope["method"], rest)
        common = {"X-Shopify-API-Version": version, "X-Request-Id": f"sandbox-{next(self._request_ids):08d}"}
        token = _header(scope, b"x-shopify-access-token")
        if token is None or not hmac.compare_digest(token, self.token):
            self.stats.unauthorized += 1
            await ApiError(401, UNAUTHORIZED, common).response()(scope, receive, send)
            return
        if rest == "/graphql.json":  # GraphQL has its own, cost-based limit (graphql/cost.py), no REST bucket
            extra = [(k.lower().encode(), v.encode()) for k, v in common.items()]
            await self.app(scope, receive, _with_headers(send, extra))
            return
        decision = self.buckets.take(token.decode("latin-1"))
        common["X-Shopify-Shop-Api-Call-Limit"] = decision.header
        if not decision.allowed:
            self.stats.throttled += 1
            headers = {**common, "Retry-After": str(decision.retry_after)}  # a float, e.g. "0.5" or "2.0"
            await ApiError(429, THROTTLED, headers).response()(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in common.items()]
        await self.app(scope, receive, _with_headers(send, extra))


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_headers


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None
