"""`ferry sandbox serve quickbooks` as `ferry demo` starts sandboxes: a child process announcing URL, CA, client
id/secret, realm and a refresh token; faults from the command line; a persisted company surviving a restart."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests
from intuitlib.client import AuthClient
from quickbooks import QuickBooks
from quickbooks.objects.customer import Customer

from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.cli.serve import build_sandbox
from ferry.errors import ConfigError

SMALL = ["--customers", "10", "--products", "5", "--orders", "20", "--seed", "4"]


def _client(proc: SandboxProcess, refresh_token: str) -> QuickBooks:
    info = proc.info
    auth = AuthClient(info["client_id"], info["client_secret"], info["redirect_uri"], info["discovery_url"],
                      refresh_token=refresh_token)
    qb = QuickBooks(auth_client=auth, refresh_token=refresh_token, company_id=info["realm_id"],
                    minorversion=info["minor_version"])
    qb.api_url_v3 = info["api_url"]
    return qb


def test_serve_announces_credentials_applies_faults_and_persists(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*SMALL, "--persist", "--fault", "commit_then_reset:1,path=customer,method=POST,count=1"]
    proc = start_sandbox("quickbooks", tmp_path, args)
    try:
        info = proc.info
        assert info["url"].startswith("https://127.0.0.1:") and Path(info["ca_file"]).is_file()
        assert info["realm_id"] and info["client_id"] and info["client_secret"] and info["refresh_token"]
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", info["ca_file"])
        qb = _client(proc, info["refresh_token"])
        refresh_token = qb.refresh_token
        customer = Customer()
        customer.DisplayName = "Survives Restarts"
        request_id = str(uuid.uuid4())
        with pytest.raises(requests.ConnectionError):  # committed, then the answer is lost
            customer.save(qb=qb, request_id=request_id)
        saved = customer.save(qb=qb, request_id=request_id)  # the retry gets the first answer
        assert saved.DisplayName == "Survives Restarts"
    finally:
        proc.stop()
    again = start_sandbox("quickbooks", tmp_path, [*SMALL, "--persist"])
    try:
        assert again.info["realm_id"] == info["realm_id"] and again.info["client_id"] == info["client_id"]
        qb = _client(again, refresh_token)  # the refresh token issued before the restart still works
        found = Customer.filter(DisplayName="Survives Restarts", qb=qb)
        assert [c.Id for c in found] == [saved.Id]
    finally:
        again.stop()


def test_a_bad_fault_setting_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="QuickBooks sandbox"):
        build_sandbox("quickbooks", seed=1, customers=1, products=1, orders=1, state_dir=tmp_path,
                      faults={"rules": [{"kind": "explode"}]})
