"""Safe by default: loopback without a token; any other address only with ``FERRY_DASHBOARD_TOKEN``; every
state-changing request is a POST carrying a per-session CSRF token.

The CSRF token is an HMAC of the session cookie under a key made at start-up (signed double submit): a form
field that does not match the session it arrives with is refused, and the session cookie is ``SameSite=Strict``
and ``HttpOnly``, so another site can neither send nor read it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass, field

from ferry.errors import ConfigError

TOKEN_ENV = "FERRY_DASHBOARD_TOKEN"
SESSION_COOKIE = "ferry_session"
AUTH_COOKIE = "ferry_dashboard_auth"
CSRF_FIELD = "csrf"
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token, or with one too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters")
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host} is not a loopback address: anyone who reaches it could replay and discard dead letters; "
            f"set {TOKEN_ENV} (a long random string) to require it, or bind 127.0.0.1"
        )


@dataclass
class DashboardAccess:
    """Who may see the dashboard (the token, if any) and the key CSRF tokens are signed with."""

    token: str | None = None
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @classmethod
    def from_env(cls, host: str) -> DashboardAccess:
        token = os.environ.get(TOKEN_ENV) or None
        check_bind(host, token)
        return cls(token=token)

    @property
    def required(self) -> bool:
        return self.token is not None

    def token_ok(self, given: str | None) -> bool:
        if self.token is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def auth_cookie_value(self) -> str:
        """What the auth cookie holds after a login: a digest of the token, never the token itself."""
        assert self.token is not None
        return hmac.new(self.key, b"auth:" + self.token.encode(), hashlib.sha256).hexdigest()

    def auth_cookie_ok(self, value: str | None) -> bool:
        return self.token is not None and value is not None and hmac.compare_digest(value, self.auth_cookie_value())

    def csrf_for(self, session: str) -> str:
        return hmac.new(self.key, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str | None, given: str | None) -> bool:
        if not session or not given:
            return False
        return hmac.compare_digest(self.csrf_for(session), given)


def new_session() -> str:
    return secrets.token_urlsafe(24)
