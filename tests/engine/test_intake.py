"""Intake: a read whose call gives up past the HTTP core's retries pauses and goes on from its last staged page."""

from __future__ import annotations

from pathlib import Path

from ferry.engine.runner import Runner
from ferry.store import Store
from tests.engine.world import world


async def test_a_throttling_burst_longer_than_the_client_retries_pauses_the_read_not_the_run(tmp_path: Path) -> None:
    with world(tmp_path, customers=30, products=3, orders=6) as w:
        # Nine 429s in a row on the customers list: more than the Shopify client's six attempts per call.
        w.shop.faults.configure(
            {
                "rules": [
                    {"kind": "429", "rate": 1.0, "count": 1, "burst": 9, "retry_after": 0.1, "path": "customers.json"}
                ]
            }
        )
        spec = w.spec(w.pipeline_file("burst", lambda s: s["source"].update(page_size=10)))
        store = Store(tmp_path / "ferry.db")
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert w.shop.faults.injected["429"] == 9
        dead = store.dead_letter_keys("burst", "Account")
        assert {str(c["id"]) for c in w.shop.store.customers} <= set(w.keys("Account")) | dead
        assert not {d.error_code for d in store.list_dead_letters(pipeline="burst", limit=1000)} & {
            "RETRIES_EXHAUSTED",
            "HTTP_429",
        }
