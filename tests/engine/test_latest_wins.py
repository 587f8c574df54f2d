"""Latest wins: a record edited through the Shopify API while a run pages past it lands at its newest version.

The edit goes to a customer on the first page after that page was staged at the old version. The stream is
read in updated_at order over keyset cursors, so the edited customer sorts after every page read so far and
the same read meets it again, at its new version: no catch-up read, no call beyond the pages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ferry.connectors.shopify.reader import ReadState
from ferry.engine.runner import Runner
from ferry.sandbox.shopify.times import parse
from ferry.store import Store
from tests.engine.world import world

PAGE = 5


async def test_an_edit_made_while_the_run_pages_lands_at_its_newest_version_with_no_extra_read(
    tmp_path: Path,
) -> None:
    with world(tmp_path, customers=60, products=4, orders=10, shopify_api="rest") as w:  # REST pages
        w.shop.faults.configure({"rules": [{"kind": "latency", "latency_ms": 120, "path": "customers"}]})
        spec = w.spec(w.pipeline_file("latest", lambda s: s["source"].update(page_size=PAGE)))
        store = Store(tmp_path / "ferry.db")
        customers = list(w.shop.store.customers)
        first = min(customers, key=lambda c: (parse(c["updated_at"]), c["id"]))  # on the read's first page
        key = str(first["id"])
        old_updated = first["updated_at"]
        run = asyncio.create_task(Runner(spec, store).run())
        for _ in range(500):  # wait until a few pages (the first one among them) are staged
            progress = ReadState.parse(store.read_state("latest", "customers")).read
            if progress is not None and progress.pages >= 3:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the run never staged three pages of customers")
        staged = [r for chunk in store.staged("latest", ["customers"]) for r in chunk if r.key == key]
        assert staged, "the first customer was not staged before the edit"
        with w.shopify() as shop:
            resp = await asyncio.to_thread(
                shop.put, f"/customers/{key}.json", json={"customer": {"id": int(key), "first_name": "Newest"}}
            )
        assert resp.status_code == 200, resp.text
        assert resp.json()["customer"]["updated_at"] > old_updated
        stats = await run
        assert stats.status == "succeeded", stats.error
        contact = next(r for r in w.records("Contact") if r["Shopify_Customer_Id__c"] == key)
        assert contact["FirstName"] == "Newest", contact
        account = next(r for r in w.records("Account") if r["Shopify_Customer_Id__c"] == key)
        assert account["Name"].startswith("Newest"), account
        assert store.versions_for("latest", "Contact", [key])[key] > staged[0].version
        # One read: every customer once, the edited one twice (old and new version), in as many pages as
        # those records fill, and not one call more (an older ferry made one catch-up call per stream here).
        assert stats.source_records["customers"] == len(customers) + 1
        assert w.shop.stats.throttled == 0  # ferry's client waits for the bucket: every call counted is a page
        calls = w.shop.stats.by_endpoint["GET /admin/api/{version}/customers.json"]
        assert calls == -(-(len(customers) + 1) // PAGE), calls
