"""aiosfstream-ng's refresh-token authenticator, pointed at a sandbox (used by tests and bench/)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
from aiosfstream_ng import RefreshTokenAuthenticator


class SandboxAuthenticator(RefreshTokenAuthenticator):
    """The library's refresh-token flow, posted to the sandbox over its TLS CA instead of login.salesforce.com
    (the library hard-codes that URL and aiohttp's default trust store); everything else is the library's."""

    def __init__(self, sandbox_url: str, ssl_context: ssl.SSLContext, login: dict[str, str],
                 refresh_token: str | None = None) -> None:
        super().__init__(consumer_key=login["client_id"], consumer_secret=login["client_secret"],
                         refresh_token=refresh_token or login["refresh_token"])
        self._url = f"{sandbox_url}/services/oauth2/token"
        self._ssl = ssl_context
        self.calls = 0

    @property
    def _token_url(self) -> str:
        return self._url

    async def _authenticate(self) -> tuple[int, Any]:
        self.calls += 1
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl)) as session:
            response = await session.post(self._token_url, data={
                "grant_type": "refresh_token", "client_id": self.client_id, "client_secret": self.client_secret,
                "refresh_token": self.refresh_token})
            return response.status, await response.json()
