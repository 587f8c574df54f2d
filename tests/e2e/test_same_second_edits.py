"""Two edits of one Shopify customer within one second, with a ferry run between them.

Shopify stamps ``updated_at`` to the second, so both states carry the same stamp. A run that wrote the first
state must not take the second for "unchanged" (it compared equal to the version written): the second reaches
Salesforce on the next run, and once the second's window has passed, a last read writes the record once more
(what was written was seen too early to be known final) and then never again. The shop sandbox stamps writes as
Shopify does here (``same_second_writes``), on a clock the test holds at one second so that both edits share it
whatever the machine's load; the REST reader, the GraphQL pages and a GraphQL bulk operation each read it.
WooCommerce's ``date_modified_gmt`` is to the second as well: the same, through its reader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import FLOWS, salesforce_env, shopify_env
from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.engine.runner import Runner
from ferry.engine.stats import RunStats
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.sandbox.shopify.state import WriteClock
from ferry.store import Store

REPO = Path(__file__).resolve().parents[2]
API = "/admin/api/2025-07"
SETTLE = 5.0  # model.values.SETTLE_SECONDS


@dataclass
class World:
    source: str  # shopify | woocommerce
    state: Any  # the store sandbox's live state (its write clock)
    org: SalesforceSandbox
    runs: list[RunningSandbox]
    spec: PipelineSpec
    store: Store
    http: httpx.Client

    def run(self) -> RunStats:
        return asyncio.run(Runner(self.spec, self.store).run())

    def edit(self, customer_id: int, value: str) -> str:
        """A person's edit of a field the Account holds; the customer's new stamp."""
        if self.source == "shopify":
            body = {"customer": {"id": customer_id, "note": value}}
            resp = self.http.put(f"{API}/customers/{customer_id}.json", json=body)
            assert resp.status_code == 200, resp.text
            return str(resp.json()["customer"]["updated_at"])
        resp = self.http.put(f"/wp-json/wc/v3/customers/{customer_id}", json={"first_name": value})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["date_modified_gmt"])

    def account_value(self, customer_id: int) -> Any:
        field, held = ("Description", "Shopify_Customer_Id__c") if self.source == "shopify" else ("Name", KEY_FIELD)
        found = [a for a in self.org.state.store.table("Account").rows.values()
                 if str(a.get(held)) == str(customer_id)]
        assert len(found) == 1, found
        value = found[0].get(field)
        return value.split()[0] if self.source == "woocommerce" and value else value  # Name: first last

    def written_customers(self) -> list[int]:
        held = "Shopify_Customer_Id__c" if self.source == "shopify" else KEY_FIELD
        return sorted(int(a[held]) for a in self.org.state.store.table("Account").rows.values()
                      if str(a.get(held) or "").isdigit())


KEY_FIELD = "WooCommerce_Customer_Id__c"
READS = {"shopify-rest": {"api": "rest"}, "shopify-graphql-pages": {"api": "graphql", "bulk_threshold": 1_000_000},
         "shopify-graphql-bulk": {"api": "graphql", "bulk_threshold": 0}, "woocommerce": {}}


@pytest.fixture(params=list(READS))
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    org = SalesforceSandbox(tmp_path / "org")
    org_run = start_in_thread(org.app, tmp_path / "org")
    org_env = salesforce_env({**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)})
    if request.param == "woocommerce":
        from ferry.sandbox.woocommerce import WooCommerceSandbox

        woo = WooCommerceSandbox(tmp_path / "woo", seed=5, customers=3, products=1, orders=0)
        run = woo.start(tmp_path / "woo")
        info = {**woo.credentials(run.url), "ca_file": str(run.ca_file)}
        env = {**FLOWS["woocommerce-to-salesforce"].env(info, {**org.credentials(org_run.url),
                                                                "ca_file": str(org_run.ca_file)})}
        spec = load_pipeline(REPO / "examples" / "woocommerce-to-salesforce.yml", env)
        http = httpx.Client(base_url=run.url, verify=str(run.ca_file), timeout=30,
                            auth=(info["consumer_key"], info["consumer_secret"]))
        source, state = "woocommerce", woo.state
    else:
        shop = ShopifySandbox(tmp_path / "shop", seed=5, customers=3, products=1, orders=0, bucket_size=100_000,
                              leak_rate=100_000.0, same_second_writes=True)
        run = start_in_thread(shop.app, tmp_path / "shop")
        env = {**shopify_env({**shop.credentials(run.url), "ca_file": str(run.ca_file)}), **org_env}
        spec = load_pipeline(REPO / "examples" / "shopify-to-salesforce.yml", env)
        spec = spec.model_copy(update={"source": spec.source.model_copy(update=READS[request.param])})
        http = httpx.Client(base_url=run.url, verify=str(run.ca_file), timeout=30,
                            headers={"X-Shopify-Access-Token": shop.access_token})
        source, state = "shopify", shop.state
    w = World(source, state, org, [run, org_run], spec, Store(tmp_path / "ferry.db"), http)
    try:
        yield w
    finally:
        http.close()
        for r in w.runs:
            r.stop()
        w.store.close()


def _written(stats: RunStats) -> int:
    return stats.objects["Account"].written if "Account" in stats.objects else 0


def test_the_second_of_two_edits_in_one_second_reaches_the_target(world: World) -> None:
    world.run()  # the backfill
    cid = world.written_customers()[0]  # a customer the backfill wrote (the stores have messy ones)
    # The store's clock held at one second, 3 s ahead: the window (to S + 5 s) then outlasts a loaded machine's runs.
    second = int(time.time()) + 3
    world.state.clock = WriteClock(second, lambda: float(second), same_second=True)

    first_stamp = world.edit(cid, "First")
    assert _written(world.run()) == 1 and world.account_value(cid) == "First"
    second_stamp = world.edit(cid, "Second")
    assert second_stamp == first_stamp, "the two edits must share their stamp"
    again = world.run()
    assert world.account_value(cid) == "Second", f"the second edit was taken as unchanged: {again.objects}"
    assert time.time() < second + SETTLE, "the runs outlasted the window: this test proved nothing"

    # Past the window the stamp is final: the next read writes the record once (what ferry wrote was seen
    # early), the one after writes nothing.
    while time.time() < second + SETTLE + 0.1:
        time.sleep(0.1)
    assert _written(world.run()) == 1
    assert _written(world.run()) == 0
    assert world.account_value(cid) == "Second"
