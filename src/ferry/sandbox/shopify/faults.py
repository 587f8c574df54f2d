"""Fault injection for the Shopify sandbox: the ways a real store (or the network in front of it) misbehaves.

Configured through ``POST /__sandbox/faults`` (or ``ShopifySandbox.faults.configure``), in the same shape
as the Salesforce sandbox's faults:

    {"seed": 1,
     "rules": [{"status": 503, "rate": 0.05},                          # 5xx with Shopify's error body
               {"status": 429, "rate": 0.01, "retry_after": 1, "burst": 5},   # a burst of 5 throttled calls
               {"reset": true, "rate": 0.02},                          # connection dropped mid-response
               {"timeout_seconds": 3, "rate": 0.01, "path": "orders"},  # no answer for 3 s, then dropped
               {"latency_ms": 200, "rate": 0.5}]}

A rule applies to Admin API calls whose path (after ``/admin/api/<version>/``) contains ``path`` and whose
method matches; ``rate`` is the share of those calls it hits, ``count`` bounds how often it fires, and
``burst`` makes each hit last that many consecutive matching calls. Counters per kind (``5xx``, ``429``,
``reset``, ``timeout``, ``latency``) are in ``GET /__sandbox/faults``. Routes outside ``/admin/api/``
(the sandbox's admin routes) are never faulted.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ferry.sandbox.shopify.errors import THROTTLED, ApiError

_API_PATH = re.compile(r"^/admin/api/[^/]+/(?P<rest>.*)$")
_BODIES = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    429: THROTTLED,
}
KINDS = ("5xx", "429", "reset", "timeout", "latency")


@dataclass
class FaultRule:
    status: int | None = None
    rate: float = 1.0
    path: str = ""
    method: str = ""
    count: int | None = None
    burst: int = 1
    retry_after: float | None = None
    reset: bool = False
    timeout_seconds: float = 0.0
    latency_ms: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method.upper() == method) and self.path.lower() in path.lower()

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.count <= 0

    @property
    def kind(self) -> str:
        if self.timeout_seconds:
            return "timeout"
        if self.reset:
            return "reset"
        if self.status == 429:
            return "429"
        if self.status is not None:
            return "5xx" if self.status >= 500 else str(self.status)
        return "latency"


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self.rng = random.Random(0)
        self.fired: Counter[str] = Counter()
        self._bursting: dict[int, int] = {}  # rule index -> calls left in its current burst

    def configure(self, config: dict[str, Any]) -> None:
        known = {f.name for f in fields(FaultRule)}
        rules = []
        for r in config.get("rules", []):
            unknown = set(r) - known
            if unknown:
                raise ValueError(f"unknown fault rule field(s): {', '.join(sorted(unknown))}")
            rules.append(FaultRule(**r))
        for r in rules:
            if not 0.0 <= r.rate <= 1.0:
                raise ValueError("rates must be between 0 and 1")
            if r.burst < 1 or r.timeout_seconds < 0 or r.latency_ms < 0:
                raise ValueError("burst must be >= 1; timeout_seconds and latency_ms >= 0")
            if r.status is not None and not 400 <= r.status <= 599:
                raise ValueError("status must be an HTTP error status (400-599)")
        self.rules = rules
        self.rng = random.Random(config.get("seed", 0))
        self._bursting = {}

    def reset_counters(self) -> None:
        self.fired = Counter()

    def describe(self) -> dict[str, Any]:
        return {
            "rules": [asdict(r) for r in self.rules],
            "fired": sum(self.fired.values()),
            "fired_by_kind": {k: self.fired.get(k, 0) for k in KINDS} | dict(self.fired),
        }

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The rule that hits this call, if any (the first one, in configured order)."""
        for i, rule in enumerate(self.rules):
            if not rule.matches(method, path):
                continue
            left = self._bursting.get(i, 0)
            if left > 0:  # a burst runs its length even once the rule's count is used up
                self._bursting[i] = left - 1
            elif not rule.exhausted and self.rng.random() < rule.rate:
                if rule.count is not None:
                    rule.count -= 1
                self._bursting[i] = rule.burst - 1
            else:
                continue
            self.fired[rule.kind] += 1
            return rule
        return None


class FaultGate:
    """ASGI middleware in front of the API gate: applies the configured faults to Admin API calls."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _API_PATH.match(scope["path"]) if scope["type"] == "http" else None
        rule = self.faults.pick(scope["method"], match["rest"]) if match and self.faults.rules else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.latency_ms:
            await asyncio.sleep(rule.latency_ms / 1000)
        if rule.timeout_seconds:
            await asyncio.sleep(rule.timeout_seconds)
            await _drop(send)
        elif rule.reset:
            await _drop(send)
        elif rule.status is not None:
            headers = {"Retry-After": _seconds(rule.retry_after)} if rule.retry_after is not None else {}
            await ApiError(rule.status, _BODIES.get(rule.status, "Injected fault"), headers).response()(
                scope, receive, send
            )
        else:
            await self.app(scope, receive, send)


async def _drop(send: Send) -> None:
    """End the connection mid-response: the client reads a promised body that never comes."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4096")]})
    await send({"type": "http.response.body", "body": b'{"errors', "more_body": True})
    # Returning with the body unfinished makes the server close the socket.


def _seconds(value: float) -> str:
    return f"{float(value):.1f}"  # Shopify sends a float, e.g. "2.0"
