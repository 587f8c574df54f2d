"""Fault injection for the QuickBooks sandbox: the ways Intuit's API (or the network in front of it) misbehaves.

The rules, their configuration and the seeded draws are the Shopify sandbox's (``ferry.sandbox.shopify.faults``:
same JSON shape, same ``--fault`` specs, same ``/__sandbox/faults`` routes), plus one kind of its own:

* ``commit_then_reset``: the call is processed (a write is committed, its ``requestid`` answer kept) and
  then the connection is reset before the answer is sent; the client cannot tell it from a ``reset`` that
  happened before the write. The CLI spec ``reset:RATE,processed=true`` means the same.
* 500/502/503/504: Intuit's ``SystemFault`` body (code 10000) for 500 and 503; the gateway's for the others.
* 429: ``ThrottleExceeded`` (code 3001), as the rate limiter answers.
* reset, timeout, latency: as in every sandbox (``ferry.sandbox.connections``).

A rule applies to ``/v3/company/{realm}/...`` calls whose path after the realm contains ``path``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ferry.sandbox.connections import drop_connection, expose_transport, hold_connection
from ferry.sandbox.quickbooks.errors import system_fault, throttled
from ferry.sandbox.shopify import faults as shopify_faults
from ferry.sandbox.shopify.faults import FaultGate as ShopifyFaultGate
from ferry.sandbox.shopify.faults import FaultRule
from ferry.sandbox.shopify.faults import Faults as ShopifyFaults

COMMIT_THEN_RESET = "commit_then_reset"
_API_PATH = re.compile(r"^/v3/company/[^/]+/(?P<rest>.*)$")
__all__ = ["COMMIT_THEN_RESET", "FaultGate", "Faults"]


class Faults(ShopifyFaults):
    """The Shopify sandbox's fault set, reading ``commit_then_reset`` (and ``reset`` with ``processed``)."""

    @staticmethod
    def _rule(raw: Any) -> FaultRule:
        if isinstance(raw, dict) and raw.get("kind") == COMMIT_THEN_RESET:
            # Stored as a processed reset: the Shopify rule validates kinds against its own list.
            raw = {**raw, "kind": "reset", "processed": True}
        return ShopifyFaults._rule(raw)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        for rule in described["rules"]:
            if rule["kind"] == "reset" and rule["processed"]:
                rule["kind"] = COMMIT_THEN_RESET
        return described


def status_response(rule: FaultRule) -> Response:
    status = rule.status or int(rule.kind)
    if status == 429:
        return throttled(int(rule.retry_after) if rule.retry_after is not None else None)
    if status in (500, 503):
        return system_fault(status)
    reason = rule.message or {502: "Bad Gateway", 504: "Gateway Time-out"}.get(status, "Error")
    page = f"<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1></body></html>"
    return Response(page, status, media_type="text/html")


class FaultGate(ShopifyFaultGate):
    """The outermost ASGI layer: applies the configured faults to Accounting API calls."""

    api_path = _API_PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.api_path.match(scope["path"]) if scope["type"] == "http" and self.faults.rules else None
        if match is None:
            await self.app(scope, receive, send)
            return
        rule = await self.faults.pick(scope["method"], match["rest"])
        if rule is not None and rule.kind == "reset" and rule.processed:
            self.faults.injected[COMMIT_THEN_RESET] += 1
            self.faults.injected["reset"] -= 1  # counted as a reset by pick(): it is not one
            if not self.faults.injected["reset"]:
                del self.faults.injected["reset"]
            expose_transport(scope, send)
            await self.app(scope, receive, _swallow(scope, send))
            return
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.kind in shopify_faults.CONNECTION_FAULTS:
            expose_transport(scope, send)
            if rule.kind == "timeout":
                await hold_connection(receive, rule.hold_seconds or self.faults.timeout_hold_seconds)
            await drop_connection(scope)
            return
        await self.status_response(rule)(scope, receive, send)

    def status_response(self, rule: FaultRule) -> Response:
        return status_response(rule)


def _swallow(scope: Scope, send: Send) -> Send:
    """A ``send`` that drops the connection at the answer's first byte: the write is done, the answer lost."""

    async def dropping(message: Any) -> None:
        if message.get("type") == "http.response.start":
            await drop_connection(scope)
            return
        if message.get("type") == "http.response.body":
            return
        await send(message)

    return dropping
