"""`ferry serve` with WooCommerce: webhooks registered through ``wc/v3/webhooks`` (each answered ping keeps them
active), a customer edit delivered signed with the pipeline's secret lands in Salesforce, and a duplicated
delivery (same delivery id, same body) is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import FLOWS
from ferry.engine.pipeline import PipelineSpec, WebhooksSpec, load_pipeline
from ferry.engine.runner import Runner
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.tls import ensure_tls
from ferry.sandbox.woocommerce import WooCommerceSandbox
from ferry.serve.registration import webhook_address
from ferry.serve.service import ServeOptions
from ferry.store import Store

from .world import REPO, free_port, start_serve, wait_for

SECRET = "ferry-test-webhook-secret-0123456789"


@dataclass
class WooWorld:
    tmp: Path
    woo: WooCommerceSandbox
    woo_run: RunningSandbox
    org_run: RunningSandbox
    spec: PipelineSpec
    store: Store
    woo_http: httpx.Client
    org_http: httpx.Client

    def contacts(self) -> dict[str, dict[str, Any]]:
        rows = self.org_http.get("/__sandbox/records/Contact").json()
        return {str(r.get("WooCommerce_Customer_Id__c")): r for r in rows}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WooWorld]:
    tmp = tmp_path_factory.mktemp("serve-woo")
    woo = WooCommerceSandbox(tmp, seed=3, customers=12, products=5, orders=10)
    org = SalesforceSandbox(tmp)
    woo_run = woo.start(tmp)
    org_run = start_in_thread(org.app, tmp)
    woo_info = {**woo.credentials(woo_run.url), "ca_file": str(woo_run.ca_file)}
    org_info = {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)}
    env = FLOWS["woocommerce-to-salesforce"].env(woo_info, org_info)
    spec = load_pipeline(REPO / "examples" / "woocommerce-to-salesforce.yml", env)
    spec = spec.model_copy(update={"webhooks": WebhooksSpec(secret=SECRET)})
    store = Store(tmp / "ferry.db")
    woo_http = httpx.Client(base_url=f"{woo_run.url}/wp-json/wc/v3", verify=str(woo_run.ca_file), timeout=30,
                            auth=(woo.consumer_key, woo.consumer_secret))
    org_http = httpx.Client(base_url=org_run.url, verify=str(org_run.ca_file), timeout=30)
    try:
        assert asyncio.run(Runner(spec, store).run()).status == "succeeded"
        yield WooWorld(tmp, woo, woo_run, org_run, spec, store, woo_http, org_http)
    finally:
        woo_http.close()
        org_http.close()
        org_run.stop()
        woo_run.stop()
        store.close()


def test_woocommerce_webhooks_registered_pinged_and_delivered(world: WooWorld) -> None:
    tls = ensure_tls(world.tmp)
    port = free_port()
    server = start_serve([world.spec], world.store, ServeOptions(port=port, tls_cert=tls.cert_file,
                                                                  tls_key=tls.key_file, window=0.1))
    try:
        address = webhook_address(server.url, world.spec.name, "woocommerce")
        hooks = [h for h in world.woo_http.get("/webhooks").json() if h["delivery_url"] == address]
        assert sorted(h["topic"] for h in hooks) == ["customer.created", "customer.updated", "order.created",
                                                     "order.updated"]
        assert all(h["status"] == "active" for h in hooks)
        inbox = server.service.state.inboxes[(world.spec.name, "woocommerce")]
        assert inbox.counts.get("ping") == 4  # each creation's unsigned ping answered 200, nothing stored
        # Every delivery sent twice, byte for byte (same delivery id): the copy is dropped.
        faults = httpx.post(f"{world.woo_run.url}/__sandbox/webhooks/faults", verify=str(world.woo_run.ca_file),
                            json={"seed": 1, "rules": [{"kind": "duplicate", "rate": 1.0}]}, timeout=30)
        assert faults.status_code == 200, faults.text
        customer = world.woo_http.get("/customers", params={"per_page": 1}).json()[0]
        resp = world.woo_http.put(f"/customers/{customer['id']}", json={"first_name": "Hooked"})
        assert resp.status_code == 200, resp.text
        key = str(customer["id"])
        wait_for(lambda: world.contacts().get(key, {}).get("FirstName") == "Hooked", 30, "the Contact update")
        wait_for(lambda: inbox.counts.get("duplicate", 0) >= 1, 15, "the duplicate delivery")
        assert inbox.counts.get("rejected", 0) == 0
    finally:
        assert server.stop() == 0
    # A restart at the same address registers nothing new and leaves every webhook as it was.
    again = start_serve([world.spec], world.store, ServeOptions(port=port, tls_cert=tls.cert_file,
                                                                 tls_key=tls.key_file))
    try:
        assert again.service.registered[world.spec.name] == {"created": 0, "existing": 4, "reactivated": 0}
        assert len(world.woo_http.get("/webhooks").json()) == 4
    finally:
        again.stop()
