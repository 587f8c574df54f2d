"""A `ferry run` killed with SIGKILL resumes from its last durable point.

* killed while a Bulk job is processing on the org: the restart collects that job's results and never
  uploads its records again;
* killed in the middle of paging a stream: the restart continues at the next page instead of reading
  the stream again, and reads nothing more than the pages left (no catch-up read).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ferry.cli.exits import RUN_FINISHED
from tests.engine.world import World, query, world


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _finish(w: World, home: Path, pipeline: Path) -> dict[str, Any]:
    proc = w.ferry(home, "run", str(pipeline), "--json")
    assert proc.wait(timeout=240) in RUN_FINISHED, (home / "ferry-1.err").read_text()[-3000:]
    return dict(json.loads(sorted(home.glob("ferry-*.out"))[-1].read_text()))


def test_a_bulk_job_in_flight_at_a_kill_is_resumed_not_uploaded_again(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        # The org queues an uploaded job for 3 s before processing it: the kill lands in that window.
        w.org.bulk.queue_delay = lambda: 3.0
        pipeline = w.pipeline_file("bulk", lambda s: s["target"].update(bulk_threshold=100))
        home = tmp_path / "home"
        db = home / "ferry.db"
        proc = w.ferry(home, "run", str(pipeline), "--json")

        def uploaded_job() -> str | None:
            for (job_id,) in query(db, "SELECT job_id FROM bulk_jobs"):
                job = w.org.bulk.ingest_jobs.get(job_id)
                if job is not None and job.state == "UploadComplete":
                    return job_id
            return None

        job_id = _wait(uploaded_job, 120, "a Bulk job with its data uploaded")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        job = w.org.bulk.ingest_jobs[job_id]
        sobject = job.sobject.name
        carried = len(job.data.decode().splitlines()) - 1 if job.data else 0
        assert carried > 0

        stats = _finish(w, home, pipeline)
        assert stats["status"] == "succeeded", stats
        assert job_id in stats["resumed_bulk_jobs"], stats
        assert w.org.bulk.ingest_jobs[job_id].state == "JobComplete"
        # No other job of that object carried data: the records were uploaded exactly once.
        others = [j for j in w.org.bulk.ingest_jobs.values() if j.sobject.name == sobject and j.id != job_id and j.data]
        assert not others, [(j.id, j.state) for j in others]
        keys = w.keys(sobject)
        assert len(keys) == len(set(keys)), f"{sobject}: duplicated external ids"
        assert stats["objects"][sobject]["written"] >= carried - stats["objects"][sobject]["dead_lettered"]
        assert not query(db, "SELECT * FROM bulk_jobs"), "a finished job is still recorded as in flight"


# How many pages of the customers read are staged, from the read state the Shopify source saves with each page.
_PAGES = "SELECT json_extract(state, '$.read.pages') FROM read_states WHERE stream = 'customers'"


def test_a_read_killed_mid_stream_continues_at_the_next_page(tmp_path: Path) -> None:
    with world(tmp_path, customers=80) as w:
        # Slow pages (150 ms each) of 5 customers: the kill lands after a few pages are staged.
        w.shop.faults.configure({"rules": [{"kind": "latency", "latency_ms": 150, "path": "customers"}]})
        pipeline = w.pipeline_file("pages", lambda s: s["source"].update(page_size=5))
        home = tmp_path / "home"
        db = home / "ferry.db"
        proc = w.ferry(home, "run", str(pipeline), "--json")
        staged_pages = _wait(
            lambda: ((query(db, _PAGES + " AND json_extract(state, '$.read.phase') = 'ordered'") or [(0,)])[0][0] or 0)
            >= 4,
            120,
            "four staged pages of customers",
        )
        assert staged_pages
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # A request the killed process had sent may still be in the store's 150 ms latency: let it be counted
        # now, not as a call of the restart.
        time.sleep(1.0)
        (pages_before,) = query(db, _PAGES)[0]
        calls_before = w.shop.stats.by_endpoint["GET /admin/api/{version}/customers.json"]
        throttled_before = w.shop.stats.throttled

        stats = _finish(w, home, pipeline)
        assert stats["status"] == "succeeded", stats
        assert "customers" in stats["resumed_reads"], stats
        total_pages = -(-len(w.shop.store.customers) // 5)
        calls_after = w.shop.stats.by_endpoint["GET /admin/api/{version}/customers.json"] - calls_before
        refused = w.shop.stats.throttled - throttled_before  # a 429 is counted as a call too
        # The rest of the pages, nothing more: not the whole stream again, and no catch-up read.
        assert calls_after - refused <= total_pages - pages_before, (calls_after, refused, total_pages, pages_before)
        keys = w.keys("Contact")
        assert len(keys) == len(set(keys))
        registered = {str(c["id"]) for c in w.shop.store.customers}
        letters = {r[0] for r in query(db, "SELECT record_key FROM dlq WHERE object = 'Contact'")}
        assert registered <= set(keys) | letters, "a customer read before the kill was lost"


async def test_a_recorded_job_the_org_no_longer_knows_is_forgotten_and_its_records_sent(tmp_path: Path) -> None:
    from ferry.engine.runner import Runner
    from ferry.store import JournalEntry, Store

    with world(tmp_path, customers=10, products=2, orders=5) as w:
        spec = w.spec(w.pipeline_file("stale"))
        store = Store(tmp_path / "ferry.db")
        key = str(w.shop.store.customers[0]["id"])
        # As a crash more than 7 days ago would leave it: Salesforce has deleted the job since.
        entries = [JournalEntry(key, "2026-01-01T00:00:00.000000Z")]
        store.save_remote_job("stale", "Account", "7500000000000ZZAAA", entries)
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert store.remote_jobs("stale") == []
        assert key in w.keys("Account")


@pytest.mark.parametrize("phase", ["pages", "catchup"])
async def test_a_read_an_older_ferry_left_in_id_order_is_finished_with_its_catch_up(tmp_path: Path, phase: str) -> None:
    """An older ferry paged in id order and caught up afterwards. Its progress row (phase "pages" with the saved
    id-order link, or "catchup" once its pages were all staged) is finished the old way: the rest of the pages,
    then one catch-up read from the read's start, which meets a customer edited since."""
    from ferry.connectors.shopify.normalize import record_version
    from ferry.connectors.shopify.reader import ReadState, read_start
    from ferry.core.ports import StagedRow
    from ferry.engine.runner import Runner
    from ferry.store import Store

    with world(tmp_path, customers=40, products=3, orders=6) as w:
        spec = w.spec(w.pipeline_file("legacy", lambda s: s["source"].update(page_size=5)))
        store = Store(tmp_path / "ferry.db")
        started = read_start(None)
        staged_pages = 2 if phase == "pages" else 8  # 40 customers: 8 pages of 5
        url: str | None = "/customers.json?limit=5"  # no order: id order, as the older ferry asked
        rows: list[dict[str, Any]] = []
        with w.shopify() as shop:
            for _ in range(staged_pages):
                assert url is not None
                r = shop.get(url)
                rows += r.json()["customers"]
                url = _next_link(r.headers.get("link"))
            edited = rows[0]
            resp = shop.put(f"/customers/{edited['id']}.json", json={"customer": {"first_name": "Since"}})
            assert resp.status_code == 200
        assert [c["id"] for c in rows] == sorted(c["id"] for c in w.shop.store.customers)[: 5 * staged_pages]
        newest = max(record_version("customers", c) for c in rows)
        # The read state the store's migration makes of an older ferry's `reads` row.
        if phase == "pages":
            read = {"phase": "pages", "since": None, "next_url": url, "newest": newest, "started_at": started,
                    "pages": staged_pages}
        else:
            read = {"phase": "catchup", "since": started, "next_url": None, "newest": newest, "started_at": "",
                    "pages": 0}
        store.stage("legacy", "customers", 1,
                    [StagedRow(str(c["id"]), record_version("customers", c), json.dumps(c).encode()) for c in rows],
                    {"cursor": None, "read": read})
        calls_before = w.shop.stats.by_endpoint["GET /admin/api/{version}/customers.json"]

        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert "customers" in stats.resumed_reads
        calls = w.shop.stats.by_endpoint["GET /admin/api/{version}/customers.json"] - calls_before
        assert calls == 8 - staged_pages + 1, calls  # the pages left, then one catch-up page
        contact = next(r for r in w.records("Contact") if r["Shopify_Customer_Id__c"] == str(edited["id"]))
        assert contact["FirstName"] == "Since"  # the edit after the read began: caught up
        assert {str(c["id"]) for c in w.shop.store.customers} <= set(w.keys("Contact")) | store.dead_letter_keys(
            "legacy", "Contact")
        state = ReadState.parse(store.read_state("legacy", "customers"))
        assert state.read is None
        cursor = state.cursor
        assert cursor is not None and cursor > newest


def _next_link(header: str | None) -> str | None:
    for part in (header or "").split(", "):
        url, _, rel = part.partition("; ")
        if rel == 'rel="next"':
            return url.strip("<>")
    return None
