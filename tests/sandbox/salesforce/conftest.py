"""Fixtures: one HTTPS sandbox per module, reset before each test, driven only through simple-salesforce."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from simple_salesforce import Salesforce

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass
class Org:
    sandbox: SalesforceSandbox
    running: RunningSandbox
    creds: dict[str, Any]
    sessions: list[requests.Session] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.url

    def session(self) -> requests.Session:
        s = requests.Session()
        self.sessions.append(s)
        s.verify = str(self.running.ca_file)
        # REQUESTS_CA_BUNDLE would otherwise override session.verify (a requests quirk).
        s.trust_env = False
        return s

    def assertion(self, **overrides: Any) -> str:
        claims = {"iss": self.creds["client_id"], "sub": self.creds["username"], "aud": self.url,
                  "exp": int(time.time()) + 180, **overrides}
        key = Path(self.creds["private_key_file"]).read_text()
        return jwt.encode(claims, key, algorithm="RS256")

    def token(self, session: requests.Session | None = None, **overrides: Any) -> requests.Response:
        s = session or self.session()
        return s.post(f"{self.url}/services/oauth2/token", data={"grant_type": JWT_GRANT,
                                                                   "assertion": self.assertion(**overrides)})

    def client(self) -> Salesforce:
        s = self.session()
        body = self.token(s).json()
        return Salesforce(instance_url=body["instance_url"], session_id=body["access_token"], version="62.0",
                          session=s)

    def admin(self, path: str, method: str = "GET") -> Any:
        return self.session().request(method, f"{self.url}/__sandbox/{path}").json()


def start_org(tmp: Path, **kwargs: Any) -> Iterator[Org]:
    sandbox = SalesforceSandbox(tmp, **kwargs)
    running = start_in_thread(sandbox.app, tmp)
    org = Org(sandbox, running, sandbox.credentials(running.url))
    try:
        yield org
    finally:
        for s in org.sessions:
            s.close()
        running.server.should_exit = True
        running.thread.join(2)
        # A simple-salesforce exception keeps its response, and so its socket, alive; do not let
        # uvicorn's graceful shutdown wait for such a connection.
        running.server.force_exit = True
        running.stop()


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    yield from start_org(tmp_path_factory.mktemp("sf"), bulk_chunk_rows=500)


@pytest.fixture
def sf(org: Org) -> Salesforce:
    org.admin("reset", "POST")
    return org.client()
