"""A real Salesforce sandbox over HTTPS for the sink's integration tests (one per module, reset per test)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferry.connectors.salesforce import SalesforceConfig
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread


@dataclass
class Org:
    sandbox: SalesforceSandbox
    running: RunningSandbox

    @property
    def creds(self) -> dict[str, Any]:
        return self.sandbox.credentials(self.running.url)

    def config(self, auth: str = "jwt", **overrides: Any) -> SalesforceConfig:
        c = self.creds
        base: dict[str, Any] = {
            "system": "salesforce", "login_url": c["login_url"], "client_id": c["client_id"], "auth": auth,
            "ca_file": str(self.running.ca_file), "api_version": c["api_version"],
        }
        if auth == "jwt":
            base |= {"username": c["username"], "private_key_file": c["private_key_file"]}
        else:
            base |= {"client_secret": c["client_secret"]}
        return SalesforceConfig.model_validate(base | overrides)


def start_org(state_dir: Path, **kw: Any) -> tuple[Org, RunningSandbox]:
    sandbox = SalesforceSandbox(state_dir, **kw)
    running = start_in_thread(sandbox.app, state_dir)
    return Org(sandbox, running), running


@pytest.fixture(scope="module")
def _shared_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    org, running = start_org(tmp_path_factory.mktemp("sf"))
    yield org
    running.stop()


@pytest.fixture
def org(_shared_org: Org) -> Org:
    _shared_org.sandbox.reset()
    _shared_org.sandbox.faults.configure({})
    return _shared_org
