"""OAuth 2.0 for QuickBooks Online: access tokens from a rotating refresh token, the newest one kept in a file.

Intuit's refresh answers ``{"access_token", "expires_in": 3600, "refresh_token", "x_refresh_token_expires_in"}``;
the refresh token in it may be a new one, and the old one then works only for a while. The new one is
written to the token file *before* the access token is used, so a crash right after a rotation cannot leave
ferry holding only the dead one. Tokens never reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import structlog

from ferry.connectors.http import HttpCore, describe_failure, error_detail
from ferry.connectors.quickbooks.config import QuickBooksConfig
from ferry.errors import AuthError, ConfigError, FerryError, TransientError

log = structlog.get_logger("ferry.connectors.quickbooks.auth")
_EARLY = 60.0  # refresh this long before the access token expires


class TokenFile:
    """The newest refresh token: read from ``path`` when it exists, written atomically with mode 0600."""

    def __init__(self, path: Path, seed: str | None) -> None:
        self.path = Path(path)
        self.seed = seed

    def read(self) -> str:
        if self.path.is_file():
            text = self.path.read_text().strip()
            if text:
                return text
        if self.seed:
            return self.seed
        raise ConfigError(
            f"no QuickBooks refresh token: {self.path} does not exist and refresh_token is not set "
            "(set QUICKBOOKS_REFRESH_TOKEN to one from Intuit's OAuth flow)"
        )

    def write(self, token: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".qbo-token-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, token.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def classify_token_response(response: httpx.Response) -> FerryError | None:
    if response.status_code < 400:
        return None
    code, message = error_detail(response)
    text = describe_failure(response, code, message)
    if response.status_code in (429, 500, 502, 503, 504):
        return TransientError(text, code=code or f"HTTP_{response.status_code}")
    return AuthError(
        f"{text} (the refresh token was refused: authorize the app again and put the new refresh token in the "
        "token file or QUICKBOOKS_REFRESH_TOKEN)",
        code=code or "invalid_grant",
    )


class OAuthSession:
    """The ``Authenticator`` the HTTP core asks for headers; refreshes once per generation."""

    def __init__(
        self, config: QuickBooksConfig, http: HttpCore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.http = http
        self.clock = clock
        secret = config.refresh_token.get_secret_value() if config.refresh_token else None
        self.tokens = TokenFile(config.token_file, secret)
        self._access: str | None = None
        self._expires_at = 0.0
        self.generation = 0
        self.rotations = 0
        self.refreshes = 0
        self._lock = asyncio.Lock()

    async def authorize(self) -> tuple[dict[str, str], int]:
        if self._access is None or self.clock() >= self._expires_at - _EARLY:
            await self.refresh(self.generation)
        return {"Authorization": f"Bearer {self._access}"}, self.generation

    async def refresh(self, stale_generation: int) -> None:
        async with self._lock:
            if self.generation != stale_generation and self._access is not None:
                return  # another call refreshed already
            await self._refresh()

    async def _refresh(self) -> None:
        current = self.tokens.read()
        response = await self._post_token(current)
        body = orjson.loads(response.content)
        new_refresh = str(body.get("refresh_token") or current)
        if new_refresh != current:
            # Kept before the access token is used: the old one dies after Intuit's grace period.
            self.tokens.write(new_refresh)
            self.rotations += 1
            log.info("quickbooks.refresh_token_rotated", token_file=str(self.tokens.path))
        elif not self.tokens.path.is_file():
            self.tokens.write(current)  # the seed from the environment, kept for the next run
        self._access = str(body["access_token"])
        self._expires_at = self.clock() + float(body.get("expires_in", 3600))
        self.generation += 1
        self.refreshes += 1

    async def _post_token(self, refresh_token: str) -> httpx.Response:
        pair = f"{self.config.client_id}:{self.config.client_secret.get_secret_value()}".encode()
        auth_header = "Basic " + base64.b64encode(pair).decode()
        return await self.http.request(
            "POST", self.config.token_url, label="oauth", count=False, classify=classify_token_response,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Accept": "application/json", "Authorization": auth_header},
        )
