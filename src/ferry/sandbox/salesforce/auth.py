"""OAuth for the sandbox org: a connected app with a JWT signing certificate, sessions with a TTL.

Grants: JWT bearer, client credentials, username-password (password + security token appended) and
refresh token; plus the SOAP `login()` call (soap.py) and `/services/oauth2/revoke`. Every grant
issues a session in one table, so expiry and revocation hold for REST, Bulk and Streaming alike.

The connected app's RSA key pair and self-signed certificate are created on first
start under `state_dir/salesforce/`; clients sign JWT bearer assertions with the
private key and the token endpoint verifies them against the certificate, as a
real org does with the certificate uploaded to the connected app.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PUBLIC_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


PASSWORD_GRANT = "password"
REFRESH_GRANT = "refresh_token"


@dataclass(slots=True)
class UserSecret:
    """The integration user's password and security token (the org emails the token on reset)."""

    password: str
    security_token: str


def _new_security_token() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(slots=True)
class Session:
    token: str
    user_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class AppKeys:
    private_key_file: Path
    certificate_file: Path


def ensure_app_keys(state_dir: Path) -> AppKeys:
    """The connected app's RSA-2048 key (chmod 600) and self-signed certificate, created once."""
    directory = state_dir / "salesforce"
    directory.mkdir(parents=True, exist_ok=True)
    keys = AppKeys(directory / "connected-app-key.pem", directory / "connected-app-cert.pem")
    if keys.private_key_file.exists() and keys.certificate_file.exists():
        return keys
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry sandbox connected app")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = keys.private_key_file.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_bytes(pem)
    tmp.replace(keys.private_key_file)
    keys.certificate_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return keys


class OAuthServer:
    """The token endpoint's logic and the session table."""

    def __init__(self, keys: AppKeys, org_id: str, session_ttl_seconds: float) -> None:
        self.keys = keys
        self.org_id = org_id
        self.client_id = "3MVG9" + secrets.token_urlsafe(60).replace("-", "A").replace("_", "b")[:80]
        self.client_secret = secrets.token_hex(32).upper()
        self.session_ttl = session_ttl_seconds
        self.users: dict[str, str] = {}  # username (lower) -> user id
        self.sessions: dict[str, Session] = {}
        self.user_secrets: dict[str, UserSecret] = {}  # username (lower) -> password and security token
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> user id
        cert = x509.load_pem_x509_certificate(keys.certificate_file.read_bytes())
        self._public_key = cert.public_key()

    def session(self, token: str) -> Session | None:
        session = self.sessions.get(token)
        if session is None:
            return None
        if time.time() >= session.expires_at:
            del self.sessions[token]
            return None
        return session

    def token(self, form: Mapping[str, str], basic: tuple[str, str] | None, base_url: str) -> dict[str, Any]:
        grant = form.get("grant_type", "")
        if grant == JWT_GRANT:
            user_id = self._verify_jwt(form.get("assertion", ""), base_url)
        elif grant == "client_credentials":
            user_id = self._verify_client_credentials(form, basic)
        elif grant == PASSWORD_GRANT:
            self._verify_client(form, basic, secret_required=True)
            checked = self.check_password(form.get("username", ""), form.get("password", ""))
            if checked is None:
                raise OAuthError("invalid_grant", "authentication failure")
            user_id = checked
        elif grant == REFRESH_GRANT:
            self._verify_client(form, basic, secret_required=False)
            user_id = self._verify_refresh_token(form.get("refresh_token", ""))
        else:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        body = self._issue(user_id, base_url)
        if grant == REFRESH_GRANT:
            body["scope"] = "refresh_token api id"
        return body

    # --- username-password, refresh tokens, revocation --------------------------------------------

    def set_password(self, username: str, password: str, security_token: str | None = None) -> UserSecret:
        secret = UserSecret(password, security_token or _new_security_token())
        self.user_secrets[username.lower()] = secret
        return secret

    def check_password(self, username: str, password_and_token: str) -> str | None:
        """The user id when `password_and_token` is the user's password with the security token appended."""
        secret = self.user_secrets.get(username.lower())
        user_id = self.users.get(username.lower())
        if secret is None or user_id is None:
            return None
        expected = (secret.password + secret.security_token).encode()
        return user_id if hmac.compare_digest(password_and_token.encode(), expected) else None

    def issue_refresh_token(self, user_id: str) -> str:
        token = f"5Aep861{secrets.token_urlsafe(64)}"
        self.refresh_tokens[token] = user_id
        return token

    def _verify_refresh_token(self, token: str) -> str:
        user_id = self.refresh_tokens.get(token)
        if user_id is None:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        return user_id

    def revoke(self, token: str) -> bool:
        """`/services/oauth2/revoke`: revoking a refresh token also ends the sessions it would renew."""
        if token in self.sessions:
            del self.sessions[token]
            return True
        user_id = self.refresh_tokens.pop(token, None)
        if user_id is None:
            return False
        for key in [k for k, s in self.sessions.items() if s.user_id == user_id]:
            del self.sessions[key]
        return True

    def new_session(self, user_id: str) -> Session:
        token = f"{self.org_id[:15]}!AQ{secrets.token_urlsafe(72)}"
        session = Session(token, user_id, time.time() + self.session_ttl)
        self.sessions[token] = session
        return session

    def _verify_client(self, form: Mapping[str, str], basic: tuple[str, str] | None, secret_required: bool) -> None:
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if not hmac.compare_digest(client_id.encode(), self.client_id.encode()):
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if (secret or secret_required) and not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            raise OAuthError("invalid_client", "invalid client credentials")

    def _verify_jwt(self, assertion: str, base_url: str) -> str:
        try:
            claims = jwt.decode(assertion, self._public_key, algorithms=["RS256"],  # type: ignore[arg-type]
                                options={"verify_aud": False, "verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False})
        except jwt.PyJWTError:
            raise OAuthError("invalid_grant", "invalid assertion") from None
        if claims.get("iss") != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        audiences = (base_url, *PUBLIC_AUDIENCES)
        aud = claims.get("aud")
        aud_list = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a.rstrip("/") in audiences for a in aud_list):
            raise OAuthError("invalid_grant", "audience is invalid")
        try:
            exp = float(claims["exp"])  # the org accepts exp as a number or a numeric string
        except (KeyError, TypeError, ValueError):
            raise OAuthError("invalid_grant", "invalid assertion") from None
        if exp <= time.time():
            raise OAuthError("invalid_grant", "expired authorization code")
        user_id = self.users.get(str(claims.get("sub", "")).lower())
        if user_id is None:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        return user_id

    def _verify_client_credentials(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> str:
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if not hmac.compare_digest(client_id.encode(), self.client_id.encode()):
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            raise OAuthError("invalid_client", "invalid client credentials")
        if not self.users:
            raise OAuthError("invalid_grant", "no client credentials user enabled")
        return next(iter(self.users.values()))

    def _issue(self, user_id: str, base_url: str) -> dict[str, Any]:
        token = self.new_session(user_id).token
        identity = f"{base_url}/id/{self.org_id}/{user_id}"
        issued_at = str(int(time.time() * 1000))
        # signature: base64 HMAC-SHA256 of id + issued_at keyed with the consumer secret, as the org sends
        digest = hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        return {
            "access_token": token, "scope": "api", "instance_url": base_url, "id": identity,
            "token_type": "Bearer", "issued_at": issued_at, "signature": base64.b64encode(digest).decode(),
        }


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip()).decode()
    except ValueError:
        return None
    client_id, _, secret = raw.partition(":")
    return client_id, secret


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") and token.strip() else None
