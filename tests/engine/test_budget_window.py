"""The api_budget share holds over Salesforce's rolling 24-hour window, across runs, against the sandbox.

* two runs in a row: the first spends most of the share, the second stops before passing it (paused, with
  a resume time computed from when the first run's calls age out), its records stay pending; a run before
  that time spends nothing; a run at that time (injected clock) finishes them;
* the ledger forgets calls that left the window;
* a `ferry run` killed with SIGKILL mid-run never under-counts: the ledger holds at least every call the
  org counted, and the next run adds to it.
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ferry.cli import render
from ferry.cli.exits import RUN_FINISHED
from ferry.connectors.salesforce.budget import SYSTEM, ages_out, bucket_of, pipeline_guard, utc_text, window_start
from ferry.connectors.salesforce.config import parse_api_budget
from ferry.engine.runner import Runner
from ferry.errors import BudgetExhausted
from ferry.store import Store
from tests.engine.world import World, query, world

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z: a fixed wall time for the injected clock


def _ledger_total(store: Store, pipeline: str, now: float) -> int:
    return sum(n for _, n in store.api_call_buckets(pipeline, SYSTEM, window_start(now)))


def _edit_customers(w: World, count: int) -> list[str]:
    keys = sorted(str(c["id"]) for c in w.shop.store.customers)[:count]
    with w.shopify() as shop:
        for key in keys:
            resp = shop.put(f"/customers/{key}.json", json={"customer": {"id": int(key), "first_name": "Budget"}})
            assert resp.status_code == 200, resp.text
    return keys


async def test_a_share_spent_by_one_run_stops_the_next_until_its_calls_age_out(tmp_path: Path) -> None:
    with world(tmp_path, customers=20, products=4, orders=10) as w:
        store = Store(tmp_path / "ferry.db")
        now = [T0]

        def run(spec: Any) -> Any:
            return Runner(spec, store, clock=lambda: now[0]).run()

        # What a first run of this data costs, measured on a pipeline of its own (its own ledger rows).
        used = w.org.state.budget.used
        calib = await run(w.spec(w.pipeline_file("calib")))
        assert calib.status == "succeeded", calib.error
        first_run_calls = w.org.state.budget.used - used
        assert _ledger_total(store, "calib", now[0]) == first_run_calls  # the ledger counts every call

        # The share: the first run's calls plus what the next run's set-up costs (the describes and the
        # mapping query, one Composite call today), so that run stops right before its first write.
        setup = calib.setup_api_calls
        assert setup >= 1
        share = first_run_calls + setup
        spec = w.spec(w.pipeline_file("budget", lambda s: s["target"].update(api_budget=share)))
        used = w.org.state.budget.used
        first = await run(spec)
        assert first.status == "succeeded", first.error
        assert w.org.state.budget.used - used == first_run_calls
        assert first.budget is not None and first.budget["remaining"] == setup

        # Two hours later, three customers changed: the run reads them and stops before its first write.
        now[0] = T0 + 2 * 3600
        keys = _edit_customers(w, 3)
        used = w.org.state.budget.used
        second = await run(spec)
        assert second.status == "paused", (second.status, second.error)
        assert w.org.state.budget.used - used == setup, "the run spent past its share"
        assert _ledger_total(store, "budget", now[0]) == share
        # It can go on once enough of the window's oldest calls (the first run's, at T0) age out: not
        # "this run's first call + 24 h", which would be two hours too late.
        resume = ages_out(bucket_of(T0))
        assert second.budget is not None and second.budget["resume_after"] == utc_text(resume)
        assert f"Resume after {utc_text(resume)}" in (second.error or "")
        row = store.get_run(second.run_id)
        assert row is not None and row.status == "paused" and row.stats["budget"]["resume_after"] == utc_text(resume)
        # The run summary and `ferry runs` say so.
        out = io.StringIO()
        console = Console(file=out, width=250)
        render.print_run(console, second)
        render.print_runs(console, store.list_runs("budget", 5))
        text = " ".join(out.getvalue().split())
        line = f"api_budget {share:,} calls per rolling 24 h: {share:,} spent ({setup} this run), 0 left"
        assert f"{line}; paused: resume after {utc_text(resume)} (UTC)" in text, text
        assert f"0 of {share:,} left, resume {utc_text(resume)[:16].replace('T', ' ')}Z" in text, text
        # Nothing lost: the changed records wait in the outbox.
        pending = {r.key for rows in store.outbox("budget", "Contact") for r in rows}
        assert pending and pending <= set(keys), (pending, keys)  # (a customer may map to no Contact)
        assert store.outbox_count("budget", "Account") >= len(pending)
        assert not [r for r in w.records("Contact") if r.get("FirstName") == "Budget"]

        # A second before that moment a run still spends nothing: its first call is refused by the guard.
        now[0] = resume - 1
        used = w.org.state.budget.used
        early = await run(spec)
        assert early.status == "paused" and w.org.state.budget.used == used
        assert store.outbox_count("budget", "Contact") == len(pending)

        # At that moment the first run's calls have left the window: the run completes the pending records.
        now[0] = resume
        done = await run(spec)
        assert done.status == "succeeded", done.error
        assert store.outbox_count("budget") == 0
        written = {r["Shopify_Customer_Id__c"] for r in w.records("Contact") if r.get("FirstName") == "Budget"}
        assert written == pending
        assert _ledger_total(store, "budget", now[0]) <= share
        # Pruned: no bucket of the first run is left in the ledger (only the second run's and this one's).
        left = query(tmp_path / "ferry.db", "SELECT minute FROM api_calls WHERE pipeline = 'budget'")
        assert left and all(m >= window_start(now[0]) for (m,) in left), left
        assert bucket_of(T0) not in {m for (m,) in left}


def test_the_ledger_check_and_count_is_one_step_and_prunes_what_left_the_window(tmp_path: Path) -> None:
    a = Store(tmp_path / "ferry.db")
    b = Store(tmp_path / "ferry.db")  # a second process of the same pipeline, on the same state DB
    since = 100
    assert a.take_api_calls("p", SYSTEM, 100, 3, cap=5, since_minute=since) == (True, 3)
    assert b.take_api_calls("p", SYSTEM, 101, 2, cap=5, since_minute=since) == (True, 5)
    assert a.take_api_calls("p", SYSTEM, 101, 1, cap=5, since_minute=since) == (False, 5)  # nothing counted
    assert b.take_api_calls("other", SYSTEM, 101, 1, cap=5, since_minute=since) == (True, 1)  # its own share
    assert a.api_call_buckets("p", SYSTEM, since) == [(100, 3), (101, 2)]
    # The window moves past minute 100: its 3 calls no longer count, and pruning deletes them.
    assert a.take_api_calls("p", SYSTEM, 102, 3, cap=5, since_minute=101) == (True, 5)
    assert a.prune_api_calls(101) == 1
    assert b.api_call_buckets("p", SYSTEM, 0) == [(101, 2), (102, 3)]


def test_a_run_killed_mid_write_never_under_counts_its_calls(tmp_path: Path) -> None:
    with world(tmp_path, customers=40, products=6, orders=40) as w:
        # Every org call takes 150 ms (applied after the org counted it): the kill lands with calls in flight.
        w.org.faults.configure({"rules": [{"kind": "latency", "latency_ms": 150}]})
        pipeline = w.pipeline_file(
            "crash", lambda s: s["target"].update(api_budget=100_000, collections_batch_size=5, composite=False)
        )
        home = tmp_path / "home"
        db = home / "ferry.db"
        before = w.org.state.budget.used
        proc = w.ferry(home, "run", str(pipeline), "--json")
        deadline = time.monotonic() + 120
        while w.org.state.budget.used - before < 8:
            assert time.monotonic() < deadline, "the run never made 8 Salesforce calls"
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.3)  # let the org finish counting what was in flight
        org_counted = w.org.state.budget.used - before
        ledger = query(db, "SELECT SUM(calls) FROM api_calls WHERE pipeline = 'crash'")[0][0]
        assert org_counted >= 8 and ledger >= org_counted, (ledger, org_counted)

        w.org.faults.configure({"rules": []})
        proc = w.ferry(home, "run", str(pipeline), "--json")
        assert proc.wait(timeout=240) in RUN_FINISHED, (home / "ferry-1.err").read_text()[-3000:]
        org_counted = w.org.state.budget.used - before
        ledger = query(db, "SELECT SUM(calls) FROM api_calls WHERE pipeline = 'crash'")[0][0]
        assert ledger >= org_counted, (ledger, org_counted)


def test_a_percentage_share_is_known_before_the_first_call_of_the_next_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    share = parse_api_budget("1%")
    first = pipeline_guard(share, store, "p", clock=lambda: T0)
    assert first.allowed is None  # the org's allocation is not known before its first answer
    first.spend()
    first.observe((1, 1000))
    for _ in range(9):
        first.spend()
    with pytest.raises(BudgetExhausted):
        first.spend()
    # A new run (an hour later) knows the allocation and the ten calls before it sends anything.
    later = pipeline_guard(share, store, "p", clock=lambda: T0 + 3600)
    assert later.allowed == 10 and later.remaining() == 0
    with pytest.raises(BudgetExhausted) as info:
        later.spend()
    assert info.value.resume_after == utc_text(ages_out(bucket_of(T0)))
    assert _ledger_total(store, "p", T0 + 3600) == 10
