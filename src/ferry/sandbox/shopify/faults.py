"""Fault injection for the Shopify sandbox: the ways a real store (or the network in front of it) misbehaves.

Same configuration shape as the Salesforce sandbox's faults (sandbox/salesforce/faults.py), three ways in:
`ferry sandbox serve shopify --fault 503:0.05 --fault reset:0.02` (or `--faults-file`), `POST
/__sandbox/faults` (`PATCH` merges, `DELETE` clears) and `ShopifySandbox.faults.configure(...)`:

    {"seed": 1,
     "rules": [{"kind": "503", "rate": 0.05},                       # 5xx with Shopify's error body
               {"kind": "429", "rate": 0.01, "retry_after": 1, "burst": 5},   # a burst of 5 throttled calls
               {"kind": "reset", "rate": 0.02},                     # TCP RST, no status line
               {"kind": "timeout", "rate": 0.01, "hold_seconds": 3, "path": "orders"},  # no answer, then RST
               {"kind": "latency", "rate": 0.5, "latency_ms": 200}],
     "timeout_hold_seconds": 30}

A rule applies to Admin API calls whose path (after `/admin/api/<version>/`) contains `path` and whose
method matches; `rate` is the share of those calls it hits, `count` bounds how often it fires, and `burst`
(Shopify only: its throttling comes in runs) makes each hit last that many consecutive matching calls.
A latency rule delays the call and lets the next rule run. Every injected fault is counted by kind
(`injected` in `GET /__sandbox/faults`). The sandbox's own routes (`/__sandbox/...`) are never faulted.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ferry.sandbox.connections import drop_connection, expose_transport, hold_connection
from ferry.sandbox.shopify.errors import THROTTLED, ApiError

_API_PATH = re.compile(r"^/admin/api/[^/]+/(?P<rest>.*)$")
STATUS_FAULTS: dict[str, tuple[int, str]] = {
    "500": (500, "Internal Server Error"),
    "502": (502, "Bad Gateway"),
    "503": (503, "Service Unavailable"),
    "504": (504, "Gateway Timeout"),
    "429": (429, THROTTLED),
}
CONNECTION_FAULTS = ("reset", "timeout")
KINDS = (*STATUS_FAULTS, *CONNECTION_FAULTS, "latency")
MAX_HOLD_SECONDS = 600.0
DEFAULT_HOLD_SECONDS = 30.0


@dataclass
class FaultRule:
    kind: str = ""  # one of KINDS; "" means: derived from `status` (or "latency" when only latency_ms is set)
    rate: float = 1.0
    path: str = ""
    method: str = ""
    count: int | None = None
    status: int | None = None
    latency_ms: int = 0
    retry_after: float | None = None
    hold_seconds: float | None = None
    burst: int = 1
    # Accepted for the Salesforce sandbox's shape; a Shopify read has nothing to "process" before a drop.
    processed: bool = False
    error_code: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = str(self.status) if self.status is not None else "latency" if self.latency_ms else ""
        if self.kind not in KINDS and not (self.kind.isdigit() and self.status is not None):
            raise ValueError(f"unknown fault kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        if self.burst < 1 or (self.count is not None and self.count < 0):
            raise ValueError("burst must be >= 1 and count >= 0")
        if self.kind == "latency" and self.latency_ms <= 0:
            raise ValueError("a latency fault needs latency_ms > 0")
        if self.hold_seconds is not None and not 0 < self.hold_seconds <= MAX_HOLD_SECONDS:
            raise ValueError(f"hold_seconds must be in (0, {MAX_HOLD_SECONDS:g}]")
        self.method = self.method.upper()

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method == method) and self.path.lower() in path.lower()

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.count <= 0


_RULE_FIELDS = {f.name for f in fields(FaultRule)}
_SALESFORCE_ONLY = ("lock_row_rate", "lock_rate", "expire_session_every")


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self.seed = 0
        self.rng = random.Random(0)
        self.timeout_hold_seconds = DEFAULT_HOLD_SECONDS
        self.injected: Counter[str] = Counter()
        self._bursting: dict[int, int] = {}  # rule index -> calls left in its current burst

    def configure(self, config: dict[str, Any]) -> None:
        """Replace the whole configuration; counts are kept."""
        self._apply(config, merge=False)

    def update(self, config: dict[str, Any]) -> None:
        """Merge: `rules` are appended, the other keys given are replaced."""
        self._apply(config, merge=True)

    def clear(self) -> None:
        self.configure({})

    def reset_counts(self) -> None:
        self.injected.clear()

    def _apply(self, config: dict[str, Any], *, merge: bool) -> None:
        if not isinstance(config, dict):
            raise ValueError("the fault configuration must be a JSON object")
        unknown = set(config) - {"seed", "rules", "timeout_hold_seconds", "reset_counts", *_SALESFORCE_ONLY}
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        if any(config.get(k) for k in _SALESFORCE_ONLY):
            raise ValueError("row locks and session expiry are Salesforce faults; the Shopify sandbox has neither")
        rules = [self._rule(r) for r in config.get("rules", [])]
        hold = float(config.get("timeout_hold_seconds", self.timeout_hold_seconds if merge else DEFAULT_HOLD_SECONDS))
        if not 0 < hold <= MAX_HOLD_SECONDS:
            raise ValueError(f"timeout_hold_seconds must be in (0, {MAX_HOLD_SECONDS:g}]")
        self.rules = [*self.rules, *rules] if merge else rules
        self.timeout_hold_seconds = hold
        if "seed" in config or not merge:
            self.seed = int(config.get("seed", 0))
            self.rng = random.Random(self.seed)
        if not merge:
            self._bursting = {}
        if config.get("reset_counts"):
            self.reset_counts()

    @staticmethod
    def _rule(raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise ValueError(f"a fault rule must be an object, got {raw!r}")
        unknown = set(raw) - _RULE_FIELDS
        if unknown:
            raise ValueError(f"unknown fault rule keys: {', '.join(sorted(unknown))}")
        return FaultRule(**raw)

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rules": [asdict(r) for r in self.rules],
            "timeout_hold_seconds": self.timeout_hold_seconds,
            "injected": dict(sorted(self.injected.items())),
            "fired": sum(self.injected.values()),
        }

    async def pick(self, method: str, path: str) -> FaultRule | None:
        """The rule deciding this call's fate, if any (latency rules delay it and let the next rule run)."""
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
            self.injected[rule.kind] += 1
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
            if rule.kind == "latency":
                continue
            return rule
        return None


class FaultGate:
    """The outermost ASGI layer: applies the configured faults to Admin API calls.

    Another sandbox reuses it by naming its API paths (``api_path``, a pattern with a ``rest`` group) and
    how its system answers a status fault (``status_response``)."""

    api_path: re.Pattern[str] = _API_PATH

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.api_path.match(scope["path"]) if scope["type"] == "http" and self.faults.rules else None
        rule = await self.faults.pick(scope["method"], match["rest"]) if match else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.kind in CONNECTION_FAULTS:
            expose_transport(scope, send)
            if rule.kind == "timeout":
                await hold_connection(receive, rule.hold_seconds or self.faults.timeout_hold_seconds)
            await drop_connection(scope)
            return
        if match is not None and match["rest"] == "graphql.json":
            await graphql_status_response(rule)(scope, receive, send)
            return
        await self.status_response(rule)(scope, receive, send)

    def status_response(self, rule: FaultRule) -> Response:
        status, text = STATUS_FAULTS.get(rule.kind, (rule.status or 500, "Injected fault"))
        headers = {"Retry-After": f"{float(rule.retry_after):.1f}"} if rule.retry_after is not None else {}
        return ApiError(rule.status or status, rule.message or text, headers).response()


def graphql_status_response(rule: FaultRule) -> Response:
    """A status fault on ``graphql.json``: a GraphQL-shaped body (an ``errors`` list), so GraphQL clients, which
    read the body whatever the status, see the error; a 500 as Shopify's INTERNAL_SERVER_ERROR (reference §1.5)."""
    status, text = STATUS_FAULTS.get(rule.kind, (rule.status or 500, "Injected fault"))
    status = rule.status or status
    headers = {"Retry-After": f"{float(rule.retry_after):.1f}"} if rule.retry_after is not None else {}
    error: dict[str, Any] = {"message": rule.message or text}
    if status == 500:
        request_id = str(uuid.uuid4())
        error = {"message": "Internal error. Looks like something went wrong on our end.\nRequest ID: "
                            f"{request_id} (include this in support requests).",
                 "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}}
    elif status == 429:
        error = {"message": "Throttled", "extensions": {"code": "THROTTLED"}}
    return ApiError(status, [error], headers).response()
