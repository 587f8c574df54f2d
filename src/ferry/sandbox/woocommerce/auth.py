"""What stands in front of every ``/wp-json/`` call: WooCommerce's REST authentication and the call stats.

Follows ``WC_REST_Authentication`` (includes/class-wc-rest-authentication.php):

* over HTTPS, Basic auth (``consumer_key``/``consumer_secret`` query parameters first, then the
  Authorization header). An unknown key is no error there: the request goes on unauthenticated and the
  endpoint answers ``woocommerce_rest_cannot_view`` (401). A known key with a wrong secret is
  ``woocommerce_rest_authentication_error`` "Consumer secret is invalid." with a ``WWW-Authenticate`` header.
* then (and over plain HTTP, only) OAuth 1.0a one-legged: ``oauth_*`` parameters in the query string
  or an ``Authorization: OAuth`` header, HMAC-SHA1 or HMAC-SHA256 over
  ``METHOD&rawurlencode(url)&rawurlencode-joined sorted params`` with key ``consumer_secret&``, a
  timestamp within 15 minutes and a nonce not used before by that key.

The outcome is left in ``scope["state"]["woo_auth"]`` ("ok" or absent); the endpoints decide what an
unauthenticated call gets, as WooCommerce's permission callbacks do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from ferry.sandbox.woocommerce.errors import WpError

API_PREFIX = "/wp-json/"
OAUTH_PARAMS = ("oauth_consumer_key", "oauth_timestamp", "oauth_nonce", "oauth_signature", "oauth_signature_method")
NONCE_WINDOW = 15 * 60
BASIC_REALM = ('Basic realm="WooCommerce API. Use a consumer key in the username field and a consumer secret in the '
               'password field."')
_NUMERIC_SEGMENT = re.compile(r"/\d+(?=/|$)")
_HEADER_PARAM = re.compile(r'(oauth_[a-z_-]*)=(:?"([^"]*)"|([^,]*))')


@dataclass
class Stats:
    api_calls: int = 0
    unauthorized: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)

    def record(self, method: str, path: str) -> None:
        self.api_calls += 1
        self.by_endpoint[f"{method} {_NUMERIC_SEGMENT.sub('/{id}', path)}"] += 1


@dataclass
class ApiKey:
    consumer_key: str
    consumer_secret: str
    permissions: str = "read_write"
    nonces: dict[int, str] = field(default_factory=dict)


def rawurlencode(text: str) -> str:
    """PHP's rawurlencode (RFC 3986: only ``A-Za-z0-9-_.~`` stay as they are)."""
    return quote(text, safe="-_.~")


def oauth_signature(method: str, url: str, params: dict[str, str], secret: str, algorithm: str) -> str:
    """WC_REST_Authentication::check_oauth_signature's signature of a request (``oauth_signature`` excluded)."""
    pairs = sorted((k, v) for k, v in params.items() if k != "oauth_signature")
    query = "%26".join(rawurlencode(f"{rawurlencode(k)}={rawurlencode(v)}") for k, v in pairs)
    string_to_sign = f"{method.upper()}&{rawurlencode(url)}&{query}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), getattr(hashlib, algorithm)).digest()
    return base64.b64encode(digest).decode()


def _auth_error(message: str, *, basic: bool = False) -> WpError:
    headers = {"WWW-Authenticate": BASIC_REALM} if basic else None
    return WpError("woocommerce_rest_authentication_error", message, 401, headers=headers)


class Authenticator:
    def __init__(self, key: ApiKey) -> None:
        self.key = key

    def authenticate(self, scope: Scope) -> bool:
        """True when the call is authenticated; raises the WP_Error WooCommerce sets; False when anonymous."""
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        basic_error: WpError | None = None
        if scope.get("scheme") == "https":
            outcome = self._basic(scope, query)
            if outcome is True:
                return True
            basic_error = outcome or None
        params = self._oauth_params(scope, query)
        if params is None:
            if basic_error is not None:
                raise basic_error
            return False
        self._check_oauth(scope, params)
        return True

    def _basic(self, scope: Scope, query: dict[str, str]) -> bool | WpError:
        key, secret = query.get("consumer_key", ""), query.get("consumer_secret", "")
        if not (key and secret):
            key, secret = _basic_header(scope)
        if not (key and secret) or not hmac.compare_digest(key.encode(), self.key.consumer_key.encode()):
            return False  # no key, or an unknown one: not an error, the call is simply anonymous
        if not hmac.compare_digest(secret.encode(), self.key.consumer_secret.encode()):
            return _auth_error("Consumer secret is invalid.", basic=True)
        return True

    def _oauth_params(self, scope: Scope, query: dict[str, str]) -> dict[str, str] | None:
        params = dict(query)
        header = _header(scope, b"authorization")
        if header and header.strip().startswith("OAuth "):
            for m in _HEADER_PARAM.finditer(header):
                params[m[1]] = unquote_plus(m[3] or m[4])
        missing = [name for name in OAUTH_PARAMS if not params.get(name)]
        if len(missing) == len(OAUTH_PARAMS):
            return None
        if missing:
            noun = "parameter" if len(missing) == 1 else "parameters"
            raise WpError("woocommerce_rest_authentication_missing_parameter",
                          f"Missing OAuth {noun} {', '.join(missing)}", 401)
        return params

    def _check_oauth(self, scope: Scope, params: dict[str, str]) -> None:
        if not hmac.compare_digest(params["oauth_consumer_key"].encode(), self.key.consumer_key.encode()):
            raise _auth_error("Consumer key is invalid.")
        host = _header(scope, b"host") or "127.0.0.1"
        scheme = "https" if scope.get("scheme") == "https" else "http"
        url = f"{scheme}://{host}{scope['path']}"
        method = params["oauth_signature_method"]
        given = params["oauth_signature"].replace(" ", "+")
        if method not in ("HMAC-SHA1", "HMAC-SHA256"):
            raise _auth_error("Invalid signature - signature method is invalid.")
        expected = oauth_signature(scope["method"], url, params, self.key.consumer_secret,
                                   method.removeprefix("HMAC-").lower())
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise _auth_error("Invalid signature - provided signature does not match.")
        self._check_timestamp_and_nonce(params["oauth_timestamp"], params["oauth_nonce"])

    def _check_timestamp_and_nonce(self, timestamp_text: str, nonce: str) -> None:
        now = int(time.time())
        try:
            timestamp = int(timestamp_text)
        except ValueError:
            timestamp = 0
        if not now - NONCE_WINDOW <= timestamp <= now + NONCE_WINDOW:
            raise _auth_error("Invalid timestamp.")
        if nonce in self.key.nonces.values():
            raise _auth_error("Invalid nonce - nonce has already been used.")
        self.key.nonces[timestamp] = nonce
        for ts in [ts for ts in self.key.nonces if ts < now - NONCE_WINDOW]:
            del self.key.nonces[ts]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _basic_header(scope: Scope) -> tuple[str, str]:
    header = _header(scope, b"authorization") or ""
    if not header.lower().startswith("basic "):
        return "", ""
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return user, password


class AuthGate:
    """ASGI layer: stats and authentication for ``/wp-json/`` calls; the sandbox's own routes pass untouched."""

    def __init__(self, app: ASGIApp, auth: Authenticator, stats: Stats) -> None:
        self.app = app
        self.auth = auth
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        self.stats.record(scope["method"], scope["path"])
        try:
            ok = self.auth.authenticate(scope)
        except WpError as exc:
            self.stats.unauthorized += 1
            await exc.response()(scope, receive, send)
            return
        scope.setdefault("state", {})["woo_auth"] = ok
        await self.app(scope, receive, send)
