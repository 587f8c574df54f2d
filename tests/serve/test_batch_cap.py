"""``realtime.max_records`` caps a micro-batch: a burst larger than it goes in batches of at most that many
events, the events beyond a batch wait staged for the next one (never cleared unplanned), and every one lands."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.engine.pipeline import RealtimeSpec
from ferry.engine.runner import Runner
from tests.serve.world import World, make_world, start_serve, stop_world, wait_for

CAP = 4
EDITS = 11


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, customers=EDITS + 10, products=2, orders=2)
    try:
        assert asyncio.run(Runner(w.spec, w.store).run()).status == "succeeded"  # the backfill
        yield w
    finally:
        stop_world(w)


def test_a_burst_larger_than_max_records_goes_in_capped_batches_and_every_event_lands(world: World) -> None:
    # A long wait so the burst is staged before the first batch starts: only the cap cuts it.
    spec = world.spec.model_copy(update={"realtime": RealtimeSpec(max_wait_ms=1500, max_records=CAP)})
    name = spec.name
    before = {r.id for r in world.store.list_runs(name, 500)}
    served = start_serve([spec], world.store, world.serve_options(window=None))
    try:
        known = {str(r["Shopify_Customer_Id__c"]) for r in world.sf_records("Contact")}
        customers = [c for c in world.shop_records("customers") if str(c["id"]) in known][:EDITS]
        assert len(customers) == EDITS
        for n, c in enumerate(customers):
            world.put("customers", c["id"], {"first_name": f"Capped{n}"})

        def landed() -> bool:
            contacts = {str(r["Shopify_Customer_Id__c"]): r for r in world.sf_records("Contact")}
            return all(contacts[str(c["id"])].get("FirstName") == f"Capped{n}" for n, c in enumerate(customers))

        wait_for(landed, 60, "every edit in the org")
        wait_for(lambda: world.store.staged_count(name, world.store.get_mark(name, "planned_seq")) == 0
                 and world.store.outbox_count(name) == 0, 30, "nothing left staged or queued")
    finally:
        assert served.stop() == 0
    runs = [r for r in world.store.list_runs(name, 500) if r.id not in before and r.origin == "webhook"]
    written = [int(r.stats["objects"].get("Contact", {}).get("written", 0)) for r in runs]
    assert all(n <= CAP for n in written), written  # no batch took more than max_records events
    assert sum(written) >= EDITS and len([n for n in written if n]) >= -(-EDITS // CAP), written
