"""The incremental cursor never skips a record that shares the newest timestamp it has seen.

Shopify's `updated_at` has one-second resolution, so a record can be written in the same second
as the newest one a run already read. With an exclusive lower bound that record would be lost
for good; ferry reads the bound inclusively and lets the version map skip what it already wrote.
"""

from __future__ import annotations

import copy
import ssl
from pathlib import Path

import httpx

from ferry.cli.demo import demo_env
from ferry.connectors.shopify.normalize import record_version
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.sandbox.shopify import ShopifySandbox, generate_store
from ferry.store import Store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"


async def test_record_sharing_the_cursor_timestamp_is_not_skipped(tmp_path: Path) -> None:
    shop = ShopifySandbox(tmp_path, store=generate_store(seed=3, customers=30, products=5, orders=20))
    org = SalesforceSandbox(tmp_path)
    shop_run, org_run = start_in_thread(shop.app, tmp_path), start_in_thread(org.app, tmp_path)
    try:
        env = demo_env(
            {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)},
            {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)},
        )
        spec = load_pipeline(EXAMPLE, env)
        # Small pages: the timestamp collisions the generator plants straddle page boundaries.
        spec = spec.model_copy(update={"source": spec.source.model_copy(update={"page_size": 7})})
        store = Store(tmp_path / "ferry.db")
        first = await Runner(spec, store).run()
        assert first.status == "succeeded"

        table = shop.state.table("customers")
        newest = max(table.records, key=lambda r: r["updated_at"])
        twin = copy.deepcopy(newest)
        twin.update(id=table.max_id() + 1, email="twin@example.com", first_name="Twin", last_name="Sameinstant")
        table.append(twin)  # written in the very second the cursor points at
        assert record_version("customers", twin) == (store.read_state(spec.name, "customers") or {})["cursor"]

        second = await Runner(spec, store).run()
        assert second.status == "succeeded"
        assert second.objects["Contact"].created == 1, second.objects["Contact"]
        assert second.objects["Contact"].updated == 0
        ctx = ssl.create_default_context(cafile=str(org_run.ca_file))
        rows = httpx.get(f"{org_run.url}/__sandbox/records/Contact", verify=ctx).json()
        twins = [r for r in rows if r.get("Shopify_Customer_Id__c") == str(twin["id"])]
        assert len(twins) == 1 and twins[0]["LastName"] == "Sameinstant"
        # Everything the first run wrote and that was read again at the boundary was skipped, not rewritten.
        assert all(s.updated == 0 for s in second.objects.values()), {k: v.updated for k, v in second.objects.items()}
    finally:
        shop_run.stop()
        org_run.stop()
