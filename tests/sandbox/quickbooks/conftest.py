"""Fixtures: one QuickBooks sandbox served from a thread, and the real clients (intuit-oauth's ``AuthClient``,
python-quickbooks' ``QuickBooks``) pointed at it by URL and CA file only.

How the clients are pointed, without changing them:
* ``AuthClient(environment=<discovery URL>)``: any environment other than sandbox/production is taken as the
  discovery document's URL (intuitlib.utils.get_discovery_doc); every endpoint then comes from that document.
* ``qb.api_url_v3 = f"{url}/v3"``: the client's own attribute for the API's base URL (the environment is
  not "sandbox", so ``api_url`` reads it).
* The CA: both clients are ``requests`` sessions that never set ``verify``, so ``REQUESTS_CA_BUNDLE`` (read by
  requests for every session) is how they are told to trust the sandbox's CA.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from intuitlib.client import AuthClient
from quickbooks import QuickBooks

from ferry.sandbox.quickbooks import MINOR_VERSION, QuickBooksSandbox
from ferry.sandbox.serve import RunningSandbox


@dataclass
class Served:
    sandbox: QuickBooksSandbox
    running: RunningSandbox

    @property
    def url(self) -> str:
        return self.running.url

    def auth_client(self, refresh_token: str | None = None) -> AuthClient:
        return AuthClient(self.sandbox.client_id, self.sandbox.client_secret, "https://127.0.0.1/callback",
                          f"{self.url}/.well-known/openid_configuration",
                          refresh_token=refresh_token or self.new_refresh_token(), realm_id=self.sandbox.realm_id)

    def client(self, auth: AuthClient | None = None) -> QuickBooks:
        auth = auth or self.auth_client()
        qb = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token, company_id=self.sandbox.realm_id,
                        minorversion=MINOR_VERSION)
        qb.api_url_v3 = f"{self.url}/v3"
        return qb

    def new_refresh_token(self) -> str:
        return str(self.admin("POST", "oauth/refresh-token")["refresh_token"])

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.url}/__sandbox/{path}", verify=str(self.running.ca_file),
                                    timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def raw(self, method: str, path: str, token: str | None, **kwargs: Any) -> requests.Response:
        """A call as a hand-written client would make it (for what the real clients do not expose)."""
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, f"{self.url}{path}", headers=headers, verify=str(self.running.ca_file),
                                timeout=10, **kwargs)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state_dir = tmp_path_factory.mktemp("quickbooks")
    # The throttles (10/s, 500/min) would trip on a test suite's pace; test_wire.py exercises them on their own.
    sandbox = QuickBooksSandbox(state_dir, seed=5, customers=80, products=20, orders=160,
                                limits={"per_second": 0, "per_minute": 0})
    running = sandbox.start()
    try:
        yield Served(sandbox, running)
    finally:
        running.stop()


@pytest.fixture
def trust_sandbox_ca(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(served.running.ca_file))


@pytest.fixture
def qb(served: Served) -> QuickBooks:
    return served.client()
