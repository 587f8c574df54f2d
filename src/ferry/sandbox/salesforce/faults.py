"""Fault injection: make the sandbox misbehave the way a real org (or the network in front of it) does.

Configured through `POST /__sandbox/faults` (or `SalesforceSandbox.faults.configure`):

    {"seed": 1,
     "rules": [{"status": 503, "rate": 0.1, "path": "composite", "method": "PATCH", "count": 5},
               {"status": 429, "rate": 1.0, "retry_after": 2, "count": 1},
               {"latency_ms": 200, "rate": 0.5}],
     "lock_row_rate": 0.02}

A rule applies to calls whose path (after /services/data/vXX.X/) contains `path`
and whose method matches; `count` bounds how many times it fires. `lock_row_rate`
fails that share of record saves with UNABLE_TO_LOCK_ROW (per record in
collections and Bulk, a 400 on single-record calls).

The same hook applies the latency profile (latency.py): `after_call` sleeps for the
profile's per-endpoint delay once the handler has computed the reply.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass
from typing import Any

from ferry.sandbox.salesforce.latency import LatencyProfile
from ferry.sandbox.salesforce.routing import Reply

_BODIES = {
    500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you contact support: "
          "1234567890-12345 (-1234567890)"),
    502: ("SERVER_UNAVAILABLE", "Bad gateway"),
    503: ("SERVER_UNAVAILABLE", "Server is temporarily unavailable; please retry"),
    429: ("REQUEST_LIMIT_EXCEEDED", "Too many requests"),
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    401: ("INVALID_SESSION_ID", "Session expired or invalid"),
    400: ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"),
}


@dataclass
class FaultRule:
    status: int | None = None
    rate: float = 1.0
    path: str = ""
    method: str = ""
    count: int | None = None
    latency_ms: int = 0
    retry_after: int | None = None
    error_code: str | None = None
    message: str | None = None

    def applies(self, method: str, path: str) -> bool:
        return (self.count is None or self.count > 0) and (not self.method or self.method.upper() == method) \
            and self.path.lower() in path.lower()


class Faults:
    def __init__(self, latency: LatencyProfile | None = None) -> None:
        self.latency = latency or LatencyProfile()
        self.rules: list[FaultRule] = []
        self.lock_row_rate = 0.0
        self.rng = random.Random(0)
        self.fired = 0

    def configure(self, config: dict[str, Any]) -> None:
        rules = [FaultRule(**r) for r in config.get("rules", [])]
        rate = float(config.get("lock_row_rate", 0.0))
        if not 0.0 <= rate <= 1.0 or any(not 0.0 <= r.rate <= 1.0 for r in rules):
            raise ValueError("rates must be between 0 and 1")
        self.rules, self.lock_row_rate = rules, rate
        self.rng = random.Random(config.get("seed", 0))

    def describe(self) -> dict[str, Any]:
        return {"rules": [asdict(r) for r in self.rules], "lock_row_rate": self.lock_row_rate, "fired": self.fired}

    def lock_fails(self) -> bool:
        return self.lock_row_rate > 0 and self.rng.random() < self.lock_row_rate

    async def before_call(self, method: str, path: str) -> Reply | None:
        for rule in self.rules:
            if not rule.applies(method, path) or self.rng.random() >= rule.rate:
                continue
            if rule.count is not None:
                rule.count -= 1
            self.fired += 1
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
            if rule.status is None:
                continue
            code, message = _BODIES.get(rule.status, ("UNKNOWN_EXCEPTION", "Injected fault"))
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
            body = [{"message": rule.message or message, "errorCode": rule.error_code or code}]
            return Reply(rule.status, body, headers=headers)
        return None

    async def after_call(self, method: str, template: str, request_bytes: int, reply: Reply) -> None:
        """The latency profile's delay for this call (nothing with the `off` profile)."""
        delay = self.latency.call_delay(method, template, request_bytes, reply.body)
        if delay > 0:
            await asyncio.sleep(delay)
