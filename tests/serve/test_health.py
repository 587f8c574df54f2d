"""`/healthz` says when a change feed is failing, and why, and recovers with the feed: Salesforce Change Data Capture
followed by `ferry serve` (examples/salesforce-shopify-bidirectional.yml) against a Salesforce sandbox that first
refuses the feed's sign-in or answers its Streaming API with 503s, then comes back. Real sockets throughout."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import salesforce_env, shopify_env
from ferry.connectors.salesforce import cometd
from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.sandbox.tls import ensure_tls
from ferry.serve import feed
from ferry.serve.service import ServeOptions
from ferry.store import Store

from .world import REPO, start_serve, wait_for

TO_SHOP = REPO / "examples" / "salesforce-shopify-bidirectional.yml"


class _Org:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.shop = ShopifySandbox(tmp / "shop", seed=3, customers=0, products=1, orders=0)
        self.org = SalesforceSandbox(tmp / "org")
        self.shop_run: RunningSandbox = start_in_thread(self.shop.app, tmp / "shop")
        self.org_run: RunningSandbox = start_in_thread(self.org.app, tmp / "org")
        shop_info = {**self.shop.credentials(self.shop_run.url), "ca_file": str(self.shop_run.ca_file)}
        org_info = {**self.org.credentials(self.org_run.url), "ca_file": str(self.org_run.ca_file)}
        self.spec: PipelineSpec = load_pipeline(TO_SHOP, {**shopify_env(shop_info), **salesforce_env(org_info)})
        self.admin = httpx.Client(base_url=self.org_run.url, verify=str(self.org_run.ca_file), timeout=30)

    def faults(self, rules: list[dict[str, Any]]) -> None:
        assert self.admin.post("/__sandbox/faults", json={"seed": 1, "rules": rules}).status_code == 200

    def close(self) -> None:
        self.admin.close()
        self.org_run.stop()
        self.shop_run.stop()


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Org]:
    # Feeds try again within a second (the defaults: 2 s doubling to 60 s, and 60 s after a refusal).
    monkeypatch.setattr(feed, "RETRY_PAUSE", 0.2)
    monkeypatch.setattr(feed, "RETRY_PAUSE_MAX", 0.5)
    # The Streaming API client gives up after 1 failed request instead of 8 (~1 min of its own backoff).
    monkeypatch.setattr(cometd, "MAX_QUIET_FAILURES", 1)
    o = _Org(tmp_path)
    try:
        yield o
    finally:
        o.close()


def _health(url: str, ca: Path) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/healthz", verify=ssl.create_default_context(cafile=str(ca)),
                                     timeout=10).json()
    return body


def _serve_and_watch(org: _Org, rules: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Serve with the faults on until /healthz says degraded; then lift them and wait for ok. Both answers."""
    org.faults(rules)
    store = Store(org.tmp / "ferry.db")
    tls = ensure_tls(org.tmp / "shop")  # the shop sandbox's CA signed it: ca below verifies it
    server = start_serve([org.spec], store, ServeOptions(host="127.0.0.1", port=0, tls_cert=tls.cert_file,
                                                         tls_key=tls.key_file, schedules=False))
    ca = org.shop_run.ca_file
    try:
        wait_for(lambda: _health(server.url, ca)["status"] == "degraded", 60, "/healthz to say degraded")
        degraded = _health(server.url, ca)
        assert org.admin.delete("/__sandbox/faults").status_code in (200, 204)
        wait_for(lambda: _health(server.url, ca)["status"] == "ok", 60, "/healthz to recover")
        recovered = _health(server.url, ca)
        # Recovered means following again: an Account change made now reaches the shop's side of ferry.
        before = recovered["events"][org.spec.name]["change_records"]
        org.org.faults.configure({})
        _edit_an_account(org)
        wait_for(lambda: _health(server.url, ca)["events"][org.spec.name]["change_records"] > before, 30,
                 "the feed to take a change in")
    finally:
        assert server.stop() == 0
        store.close()
    return degraded, recovered


def _edit_an_account(org: _Org) -> None:
    from ferry.connectors.salesforce.client import SalesforceClient

    async def create() -> None:
        client = SalesforceClient(org.spec.source)  # type: ignore[arg-type]
        try:
            s = await client.auth.session()
        finally:
            await client.aclose()
        with httpx.Client(base_url=s.instance_url, verify=str(org.org_run.ca_file), timeout=30,
                          headers={"Authorization": f"Bearer {s.access_token}"}) as http:
            http.post("/services/data/v62.0/sobjects/Account", json={"Name": f"Health {time.time()}"}
                      ).raise_for_status()

    asyncio.run(create())


def test_healthz_degraded_while_salesforce_is_unreachable_then_ok(org: _Org) -> None:
    degraded, recovered = _serve_and_watch(org, [{"kind": "503", "rate": 1.0, "path": "/cometd"}])
    problem = next(p for p in degraded["problems"] if p["check"] == "change_feeds")
    assert problem["pipeline"] == org.spec.name and problem["stream"] == "Account"
    assert problem["permanent"] is False and problem["reason"], problem
    assert recovered["problems"] == []


def test_healthz_degraded_while_the_sign_in_is_refused_then_ok(org: _Org) -> None:
    degraded, recovered = _serve_and_watch(org, [{"status": 401, "rate": 1.0, "path": "/services/oauth2/token"}])
    problem = next(p for p in degraded["problems"] if p["check"] == "change_feeds")
    assert problem["permanent"] is True, problem
    text = str(degraded)
    key = Path(org.spec.source.private_key_file).read_text()  # type: ignore[attr-defined]
    assert key.strip().splitlines()[1] not in text  # never a secret in /healthz
    assert recovered["problems"] == []
