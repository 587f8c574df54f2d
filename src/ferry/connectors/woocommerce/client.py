"""WooCommerce REST (``/wp-json/wc/v3``) over the shared HTTP core: Basic auth, WordPress error bodies, list pages.

Every WordPress REST error has one body shape, ``{"code": "...", "message": "...", "data": {"status": N}}``;
the classifier here turns it into the ferry error its status means, keeping WooCommerce's own code
(``woocommerce_rest_authentication_error``, ``rest_invalid_param``) so a log line says what the store said.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from ferry.connectors.http import TRANSIENT_STATUSES, HttpCore, safe_target
from ferry.connectors.retry import parse_retry_after
from ferry.connectors.woocommerce.config import WooCommerceConfig
from ferry.errors import AuthError, FerryError, PermanentError, TransientError

_MAX_DETAIL = 300
# What a store answering with these codes needs from whoever runs ferry (the status alone does not say).
_HINTS = {
    "woocommerce_rest_authentication_error": "check WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET",
    "woocommerce_rest_cannot_view": "the API key needs read permission",
    "rest_no_route": "is WooCommerce active, and the REST API reachable at /wp-json (pretty permalinks on)?",
}


@dataclass(slots=True)
class ListPage:
    records: list[dict[str, Any]]
    total: int | None  # X-WP-Total: records matching the filters (all pages), when the store sent it
    total_pages: int | None  # X-WP-TotalPages
    server_time: str | None  # the store's clock (Date header) as ``YYYY-MM-DDTHH:MM:SSZ``


def wordpress_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """(code, message) of a WordPress REST error body, or (None, None) when the body is not one."""
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, message = body.get("code"), body.get("message")
    data = body.get("data")
    params = data.get("params") if isinstance(data, dict) else None
    if isinstance(params, dict) and params:  # rest_invalid_param names each refused parameter
        message = f"{message} " + "; ".join(f"{k}: {v}" for k, v in params.items())
    return (str(code) if code else None), _clip(message)


def classify(response: httpx.Response) -> FerryError | None:
    """None for success; otherwise the ferry error a WooCommerce answer means, with the store's own code."""
    status = response.status_code
    if status < 400:
        return None
    code, message = wordpress_error(response)
    text = f"{safe_target(response.request.method, response.request.url)}: HTTP {status}"
    text += f" {code}" if code else ""
    text += f": {message}" if message else ""
    if code in _HINTS:
        text += f" ({_HINTS[code]})"
    if status in TRANSIENT_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return TransientError(text, retry_after=retry_after, code=code or f"HTTP_{status}")
    if status in (401, 403) and code != "rest_invalid_param":
        return AuthError(text, code=code or f"HTTP_{status}")
    return PermanentError(text, code=code or f"HTTP_{status}")


class WooCommerceClient:
    def __init__(self, config: WooCommerceConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        pair = f"{config.consumer_key.get_secret_value()}:{config.consumer_secret.get_secret_value()}"
        basic = base64.b64encode(pair.encode()).decode()
        self.http = HttpCore(
            "woocommerce",
            base_url=f"{config.url}/wp-json/{config.api_version}/",
            timeout_seconds=config.timeout_seconds,
            ca_file=config.ca_file,
            max_attempts=config.max_attempts,
            classify=classify,
            # The key pair lives only in the client's default headers: never in a URL, message or log.
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            transport=transport,
        )

    @property
    def api_calls(self) -> int:
        return self.http.total_calls

    async def aclose(self) -> None:
        await self.http.aclose()

    async def list_page(self, resource: str, params: Mapping[str, Any], *, label: str | None = None) -> ListPage:
        """One page of a collection (``orders``, ``products/12/variations``), each record as sent."""
        response = await self.http.request("GET", resource, params=params, label=label or resource)
        body = _json(response)
        if not isinstance(body, list):
            raise PermanentError(f"{safe_target('GET', response.request.url)}: the response is not a JSON list")
        records = [r for r in body if isinstance(r, dict)]
        return ListPage(
            records,
            _int_header(response, "X-WP-Total"),
            _int_header(response, "X-WP-TotalPages"),
            server_time(response.headers.get("Date")),
        )

    async def get_one(self, resource: str, *, label: str) -> dict[str, Any] | None:
        """One record (``orders/12``); None when the store no longer has it (404, or a trashed record's 410)."""
        try:
            response = await self.http.request("GET", resource, label=label)
        except PermanentError as exc:
            if is_not_found(exc):
                return None
            raise
        body = _json(response)
        return body if isinstance(body, dict) else None


def is_not_found(exc: PermanentError) -> bool:
    """Whether the store said the record is not there: 404/410, or WooCommerce's ``..._invalid_id`` codes
    (``woocommerce_rest_shop_order_invalid_id``, ``woocommerce_rest_product_invalid_id``, ...)."""
    return exc.code in ("HTTP_404", "HTTP_410") or str(exc.code).endswith("_invalid_id")


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        # A WordPress site that is not serving the REST API answers 200 with its HTML front page.
        raise PermanentError(
            f"{safe_target(response.request.method, response.request.url)}: the response is not JSON "
            "(is the REST API reachable at /wp-json?)"
        ) from exc


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


def server_time(value: str | None) -> str | None:
    """A ``Date`` header as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), or None when absent or unreadable."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, IndexError):
        return None


def _clip(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
