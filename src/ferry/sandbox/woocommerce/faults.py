"""Fault injection for the WooCommerce sandbox: the ways a WordPress host (or the network in front of it) misbehaves.

The rules, their configuration and the seeded draws are the Shopify sandbox's (``ferry.sandbox.shopify.
faults.Faults``: same JSON shape, same ``--fault`` specs, same ``/__sandbox/faults`` routes); what differs
is what a fault looks like here:

* 500: WordPress's fatal-error handler answering a REST request (``wp_die`` as JSON,
  ``internal_server_error``).
* 502, 503, 504, 429: the web server or proxy in front of PHP (nginx's HTML error pages). WooCommerce's
  ``wc/v3`` API has no rate limit of its own; a 429 comes from a host or a WAF, with ``Retry-After``.
* reset, timeout, latency: as in every sandbox (``ferry.sandbox.connections``).

A rule applies to ``/wp-json/wc/v3/`` calls whose path after that prefix contains ``path``.
"""

from __future__ import annotations

import re

import orjson
from starlette.responses import Response

from ferry.sandbox.shopify.faults import FaultGate as ShopifyFaultGate
from ferry.sandbox.shopify.faults import FaultRule, Faults

_API_PATH = re.compile(r"^/wp-json/wc/v3/(?P<rest>.*)$")
_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}
WP_CRITICAL_ERROR = {
    "code": "internal_server_error",
    "message": "<p>There has been a critical error on this website.</p><p><a href=\"https://wordpress.org/"
               "documentation/article/faq-troubleshooting/\">Learn more about troubleshooting WordPress.</a></p>",
    "data": {"status": 500},
    "additional_errors": [],
}

__all__ = ["FaultGate", "Faults", "fault_response"]


def fault_response(rule: FaultRule) -> Response:
    status = rule.status or int(rule.kind)
    headers = {"Retry-After": f"{int(rule.retry_after)}"} if rule.retry_after is not None else {}
    if status == 500 and rule.message is None:
        return Response(orjson.dumps(WP_CRITICAL_ERROR), 500, headers, media_type="application/json; charset=UTF-8")
    reason = rule.message or f"{status} {_REASONS.get(status, 'Error')}"
    page = (f"<html>\r\n<head><title>{reason}</title></head>\r\n<body>\r\n<center><h1>{reason}</h1></center>\r\n"
            "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    return Response(page, status, headers, media_type="text/html")


class FaultGate(ShopifyFaultGate):
    """The outermost ASGI layer: applies the configured faults to ``wc/v3`` calls, answering as a WordPress host."""

    api_path = _API_PATH

    def status_response(self, rule: FaultRule) -> Response:
        return fault_response(rule)
