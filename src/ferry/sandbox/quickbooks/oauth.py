"""Intuit's OAuth 2.0 server as an app meets it: a discovery document, an authorize step that redirects back
with ``code``, ``state`` and ``realmId``, and a token endpoint for the ``authorization_code`` and
``refresh_token`` grants (client authenticated by HTTP Basic, or ``client_id``/``client_secret`` in the form).

Lifetimes (developer.intuit.com, authorization FAQ): an access token lives 1 h (``expires_in: 3600``); a refresh
token has a rolling validity (``x_refresh_token_expires_in``, 8726400 s in Intuit's answers), renewed by
every use. **Rotation**: a refresh may answer with a *new* refresh token (Intuit does it about every 24 h;
``rotate_after``); the previous one keeps working for ``rotation_grace`` seconds, answering with the
newest token, and then is refused with ``invalid_grant`` like any unknown token. Access tokens already issued
stay valid until they expire. Revoking a refresh token revokes the access tokens issued from it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ACCESS_TTL = 3600
REFRESH_TTL = 8726400
ROTATE_AFTER = 86400
ROTATION_GRACE = 3600
CODE_TTL = 300


@dataclass
class Grant:
    """A refresh token and what it stands for."""

    token: str
    realm_id: str
    expires_at: float
    issued_at: float
    successor: str | None = None
    superseded_at: float | None = None


@dataclass
class AccessToken:
    token: str
    realm_id: str
    expires_at: float
    grant: str
    client_id: str = ""  # the app it was issued to: Intuit's batch limit is counted per realm and app


@dataclass
class AuthCode:
    code: str
    realm_id: str
    redirect_uri: str
    expires_at: float
    used: bool = False


class TokenError(Exception):
    """An OAuth error answer: ``error`` (``invalid_grant``, ``invalid_client``...), HTTP status."""

    def __init__(self, error: str, description: str | None = None, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class OAuthServer:
    client_id: str
    client_secret: str
    realm_id: str
    access_ttl: float = ACCESS_TTL
    refresh_ttl: float = REFRESH_TTL
    rotate_after: float = ROTATE_AFTER
    rotation_grace: float = ROTATION_GRACE
    grants: dict[str, Grant] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    refreshes: int = 0
    rotations: int = 0
    # Other apps connected to the same company (client id -> secret), ``POST /__sandbox/oauth/apps``: what lets a
    # test see that Intuit's batch limit is 40 a minute per app and 120 per company.
    other_apps: dict[str, str] = field(default_factory=dict)

    def issue_grant(self, now: float | None = None) -> Grant:
        """A fresh refresh token for the company (what the OAuth Playground hands a developer)."""
        now = time.time() if now is None else now
        grant = Grant(f"RT1-{secrets.token_hex(24)}", self.realm_id, now + self.refresh_ttl, now)
        self.grants[grant.token] = grant
        return grant

    # -- authorize -------------------------------------------------------------------------------------------

    def authorize(self, client_id: str, redirect_uri: str, response_type: str) -> AuthCode:
        if client_id != self.client_id:
            raise TokenError("invalid_client", "Invalid client_id", 401)
        if response_type != "code":
            raise TokenError("unsupported_response_type")
        if not redirect_uri:
            raise TokenError("invalid_request", "redirect_uri is required")
        code = AuthCode(f"AB1{secrets.token_hex(20)}", self.realm_id, redirect_uri, time.time() + CODE_TTL)
        self.codes[code.code] = code
        return code

    # -- token endpoint ----------------------------------------------------------------------------------------

    def check_client(self, client_id: str | None, client_secret: str | None) -> str:
        """The client id of an app known to the company, authenticated by its secret."""
        apps = {self.client_id: self.client_secret, **self.other_apps}
        expected = apps.get(client_id or "")
        if not (client_id and expected and client_secret and secrets.compare_digest(client_secret, expected)):
            raise TokenError("invalid_client", None, 401)
        return client_id

    def add_app(self) -> tuple[str, str]:
        """Connect another app (a new client id and secret) to the company; it may refresh the company's tokens."""
        client_id, client_secret = f"AB{secrets.token_hex(21)}", secrets.token_hex(20)
        self.other_apps[client_id] = client_secret
        return client_id, client_secret

    def exchange_code(self, code: str | None, redirect_uri: str | None,
                      client_id: str | None = None) -> dict[str, Any]:
        found = self.codes.get(code or "")
        now = time.time()
        if found is None or found.expires_at < now:
            raise TokenError("invalid_grant")
        if found.used:
            # A second exchange of one code is treated as a replay: the code is dead from then on.
            raise TokenError("invalid_grant")
        if redirect_uri != found.redirect_uri:
            raise TokenError("invalid_grant", "Invalid redirect_uri")
        found.used = True
        return self._answer(self.issue_grant(now), now, client_id)

    def refresh(self, token: str | None, client_id: str | None = None) -> dict[str, Any]:
        now = time.time()
        grant = self.grants.get(token or "")
        if grant is None or grant.expires_at < now:
            raise TokenError("invalid_grant", "Incorrect or invalid refresh token")
        if grant.superseded_at is not None:
            if now - grant.superseded_at > self.rotation_grace:
                raise TokenError("invalid_grant", "Incorrect or invalid refresh token")
            grant = self._newest(grant)
        self.refreshes += 1
        if now - grant.issued_at >= self.rotate_after:
            newer = self.issue_grant(now)
            grant.successor, grant.superseded_at = newer.token, now
            self.rotations += 1
            grant = newer
        grant.expires_at = now + self.refresh_ttl  # rolling validity: every use renews it
        return self._answer(grant, now, client_id)

    def _newest(self, grant: Grant) -> Grant:
        while grant.successor is not None and grant.successor in self.grants:
            grant = self.grants[grant.successor]
        return grant

    def revoke(self, token: str | None) -> None:
        grant = self.grants.get(token or "")
        if grant is not None:
            for chained in self._chain(grant):
                self.grants.pop(chained.token, None)
                for value in [a.token for a in self.access.values() if a.grant == chained.token]:
                    del self.access[value]
            return
        self.access.pop(token or "", None)

    def _chain(self, grant: Grant) -> list[Grant]:
        chain = [grant]
        while chain[-1].successor and chain[-1].successor in self.grants:
            chain.append(self.grants[chain[-1].successor])
        return chain

    def _answer(self, grant: Grant, now: float, client_id: str | None = None) -> dict[str, Any]:
        access = AccessToken(f"eyJ{secrets.token_urlsafe(48)}", grant.realm_id, now + self.access_ttl, grant.token,
                             client_id or self.client_id)
        self.access[access.token] = access
        self._forget_expired(now)
        return {
            "token_type": "bearer",
            "expires_in": int(self.access_ttl),
            "refresh_token": grant.token,
            "x_refresh_token_expires_in": int(grant.expires_at - now),
            "access_token": access.token,
        }

    def _forget_expired(self, now: float) -> None:
        for value in [t for t, a in self.access.items() if a.expires_at < now]:
            del self.access[value]

    # -- API calls -------------------------------------------------------------------------------------------

    def bearer(self, header: str | None) -> AccessToken | None:
        """The access token of an ``Authorization: Bearer`` header, if it is one this server issued and live."""
        if not header or not header.lower().startswith("bearer "):
            return None
        token = self.access.get(header[7:].strip())
        if token is None or token.expires_at < time.time():
            return None
        return token

    def expire_access_tokens(self) -> int:
        """Make every issued access token expired (``/__sandbox/oauth/expire``): the next call gets a 401."""
        for token in self.access.values():
            token.expires_at = 0
        return len(self.access)

    def describe(self) -> dict[str, Any]:
        return {
            "access_ttl": self.access_ttl, "refresh_ttl": self.refresh_ttl, "rotate_after": self.rotate_after,
            "rotation_grace": self.rotation_grace, "refreshes": self.refreshes, "rotations": self.rotations,
            "live_access_tokens": sum(1 for a in self.access.values() if a.expires_at >= time.time()),
            "refresh_tokens": len(self.grants),
        }

    def configure(self, settings: dict[str, Any]) -> None:
        for key in ("access_ttl", "refresh_ttl", "rotate_after", "rotation_grace"):
            if key in settings:
                value = float(settings[key])
                if value < 0:
                    raise ValueError(f"{key} must be >= 0")
                setattr(self, key, value)
        unknown = set(settings) - {"access_ttl", "refresh_ttl", "rotate_after", "rotation_grace"}
        if unknown:
            raise ValueError(f"unknown OAuth settings: {', '.join(sorted(unknown))}")

    # -- persistence -------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"grants": [asdict(g) for g in self.grants.values()],
                "access": [asdict(a) for a in self.access.values()]}

    def load(self, doc: dict[str, Any]) -> None:
        self.grants = {g["token"]: Grant(**g) for g in doc.get("grants", [])}
        self.access = {a["token"]: AccessToken(**a) for a in doc.get("access", [])}


def discovery_document(base: str) -> dict[str, Any]:
    """The OpenID configuration as Intuit serves it, with this sandbox's endpoints."""
    return {
        "issuer": "https://oauth.platform.intuit.com/op/v1",
        "authorization_endpoint": f"{base}/connect/oauth2",
        "token_endpoint": f"{base}/oauth2/v1/tokens/bearer",
        "userinfo_endpoint": f"{base}/v1/openid_connect/userinfo",
        "revocation_endpoint": f"{base}/v2/oauth2/tokens/revoke",
        "jwks_uri": f"{base}/op/v1/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "address", "phone"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
    }
