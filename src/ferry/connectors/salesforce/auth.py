"""OAuth 2.0 for the Salesforce sink: JWT bearer, client credentials, refresh token, password.

One token is shared by every concurrent call. When a call is refused with INVALID_SESSION_ID the
HTTP core asks for a refresh naming the token generation it used; only the first such caller
logs in again, the others find a newer generation and simply retry. That keeps an expired token
from turning into a login storm (Salesforce rate-limits logins).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import orjson
import structlog

from ferry.connectors.http import HttpCore, error_detail
from ferry.connectors.salesforce.config import ENV_VARS, SalesforceConfig
from ferry.errors import AuthError, ConfigError, FerryError, TransientError

log = structlog.get_logger("ferry.connectors.salesforce.auth")

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME_SECONDS = 180  # Salesforce wants exp only a few minutes ahead

# What a human must do about each OAuth refusal (the description is Salesforce's own text).
_HINTS: dict[str, str] = {
    "user hasn't approved this consumer": "pre-authorize the user on the connected app "
    "(Admin approved users are pre-authorized, then add the user's profile or permission set)",
    "audience is invalid": "login_url must be https://login.salesforce.com, https://test.salesforce.com "
    "or your My Domain (SALESFORCE_LOGIN_URL)",
    "invalid assertion": "the private key does not match the certificate uploaded to the connected app "
    "(SALESFORCE_PRIVATE_KEY_FILE)",
    "expired authorization code": "the JWT expired on arrival: check this machine's clock",
    "request not supported on this domain": "client credentials must be sent to your My Domain "
    "(SALESFORCE_LOGIN_URL=https://<name>.my.salesforce.com)",
    "no client credentials user enabled": "set a Run As user in the connected app's client credentials settings",
    "authentication failure": "check username and password (+ security token); new orgs block the password flow",
    "expired access/refresh token": "the refresh token was revoked or expired: issue a new one "
    "(SALESFORCE_REFRESH_TOKEN)",
    "client identifier invalid": "check client_id, the connected app's consumer key (SALESFORCE_CLIENT_ID)",
    "user is not admin approved to access this app": "add the user's profile or a permission set to the "
    "connected app (Manage > Profiles / Permission Sets)",
    "inactive user": "the integration user is deactivated: reactivate it or set SALESFORCE_USERNAME to an active one",
    "ip restricted or invalid login hours": "log in from an allowed IP range or within the profile's login hours "
    "(or relax IP restrictions on the connected app)",
    "invalid user credentials": "check username and password (+ security token) (SALESFORCE_PASSWORD)",
    "invalid client credentials": "check client_secret, the consumer secret (SALESFORCE_CLIENT_SECRET)",
}


# When Salesforce's description is not one we know, the causes of invalid_grant, most common first.
_INVALID_GRANT_CHECKLIST = (
    "check, in order: the user exists, is active and is pre-authorized on the connected app (Admin approved "
    "users); the JWT audience matches login_url (login/test.salesforce.com or My Domain); this machine's clock "
    "(the assertion expires 3 minutes after it is made); the private key matches the connected app's certificate"
)


@dataclass(frozen=True, slots=True)
class Session:
    access_token: str = field(repr=False)
    instance_url: str
    issued_at: float


def load_private_key(config: SalesforceConfig) -> str:
    """The PEM text, from the env-provided secret or the key file."""
    if config.private_key is not None:
        # A PEM put in an env var often arrives with literal "\n" sequences.
        return config.private_key.get_secret_value().replace("\\n", "\n")
    path: Path | None = config.private_key_file
    if path is None:
        raise ConfigError(f"auth 'jwt' needs private_key_file (env {ENV_VARS['private_key_file']})")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"private_key_file {path} cannot be read ({exc.strerror}); set {ENV_VARS['private_key_file']}"
        ) from None


def jwt_assertion(config: SalesforceConfig, private_key_pem: str, now: float) -> str:
    claims = {
        "iss": config.client_id,
        "sub": config.username,
        "aud": config.login_url,
        "exp": int(now) + JWT_LIFETIME_SECONDS,
    }
    try:
        return jwt.encode(claims, private_key_pem, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError):
        # Never echo the key or the library's message (it may quote key material).
        raise ConfigError("the Salesforce private key is not a valid RSA PEM key") from None


def token_form(config: SalesforceConfig, now: float) -> dict[str, str]:
    """The token request form for the configured flow."""
    secret = config.client_secret.get_secret_value() if config.client_secret else ""
    if config.auth == "jwt":
        return {"grant_type": JWT_GRANT, "assertion": jwt_assertion(config, load_private_key(config), now)}
    if config.auth == "client_credentials":
        return {"grant_type": "client_credentials", "client_id": config.client_id, "client_secret": secret}
    if config.auth == "refresh_token":
        form = {
            "grant_type": "refresh_token",
            "client_id": config.client_id,
            "refresh_token": config.refresh_token.get_secret_value() if config.refresh_token else "",
        }
        if secret:
            form["client_secret"] = secret
        return form
    return {
        "grant_type": "password",
        "client_id": config.client_id,
        "client_secret": secret,
        "username": config.username or "",
        "password": config.password.get_secret_value() if config.password else "",
    }


def classify_token_response(response: httpx.Response) -> FerryError | None:
    """OAuth errors are ``{"error","error_description"}``; refusals are for a human to fix."""
    status = response.status_code
    if status == 200:
        return None
    error, description = error_detail(response)
    if status >= 500 or status == 429:
        return TransientError(f"POST {response.request.url.path}: HTTP {status}", code=f"HTTP_{status}")
    hint = _HINTS.get((description or "").strip().lower())
    if hint is None and error == "invalid_grant":
        hint = _INVALID_GRANT_CHECKLIST
    text = f"Salesforce login refused: {error or f'HTTP {status}'}"
    if description:
        text += f": {description}"
    if hint:
        text += f" - {hint}"
    return AuthError(text, code=error or f"HTTP_{status}")


class TokenManager:
    """Implements the HTTP core's ``Authenticator`` for Salesforce bearer tokens."""

    def __init__(self, config: SalesforceConfig, http: HttpCore, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.http = http
        self._clock = clock
        self._lock = asyncio.Lock()
        self._session: Session | None = None
        self.generation = 0
        self.logins = 0
        self._warned = False

    async def session(self) -> Session:
        if self._session is None:
            async with self._lock:
                if self._session is None:
                    await self._login()
        assert self._session is not None
        return self._session

    async def authorize(self) -> tuple[dict[str, str], int]:
        session = await self.session()
        return {"Authorization": f"Bearer {session.access_token}"}, self.generation

    async def refresh(self, stale_generation: int) -> None:
        async with self._lock:
            if self.generation != stale_generation:
                return  # another caller already replaced the token this one was refused with
            await self._login()

    async def _login(self) -> None:
        if self.config.auth == "password" and not self._warned:
            # Salesforce blocks this flow in new orgs and it needs a user's password: keep it off servers.
            log.warning(
                "salesforce.password_flow",
                hint="username-password OAuth is for development only; use auth: jwt on servers",
            )
            self._warned = True
        url = f"{self.config.login_url}/services/oauth2/token"
        response = await self.http.request(
            "POST",
            url,
            data=token_form(self.config, self._clock()),
            label="oauth",
            classify=classify_token_response,
            count=False,
            headers={"Accept": "application/json"},
        )
        self._session = self._parse(response)
        self.generation += 1
        self.logins += 1

    def _parse(self, response: httpx.Response) -> Session:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise AuthError("Salesforce token response is not JSON") from None
        token, instance = body.get("access_token"), body.get("instance_url")
        if not isinstance(token, str) or not isinstance(instance, str) or not token:
            raise AuthError("Salesforce token response lacks access_token or instance_url")
        return Session(token, instance.rstrip("/"), self._clock())
