"""The dashboard's runs, chart and run page count a distributed run's calls as ``ferry runs`` does: a died run's
(its coordinator never wrote figures) from the shared tally, a finished one's once (engine/runcalls.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ferry.engine import runcalls
from ferry.engine.stats import RunStats
from ferry.store import Store
from ferry.web import Dashboard, create_app


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "ferry.db")
    yield s
    s.close()


def test_a_died_run_and_a_finished_one_show_every_call_once(store: Store) -> None:
    died = store.start_run("shop")
    store.add_run_calls(died, {"source": 4, "setup": 2, "object:Account": 5})
    store.close_abandoned_runs("shop")  # what the next run's start does with a coordinator that is gone
    done = store.start_run("shop")
    store.add_run_calls(done, {"source": 3, "object:Account": 6})
    stats = RunStats(run_id=done, pipeline="shop", setup_api_calls=1)  # the coordinator's own describe
    tally = store.run_calls(done)
    runcalls.add_to_stats(stats, tally)
    stats.run_calls_counted = tally
    store.finish_run(done, "succeeded", stats.as_dict())

    client = TestClient(create_app(Dashboard(store)))
    totals = {r["id"]: (r["status"], r["totals"]) for r in client.get("/api/runs").json()}
    assert totals[died][0] == "died"
    assert {k: totals[died][1][k] for k in ("api_calls", "source_api_calls", "target_api_calls")} == {
        "api_calls": 11, "source_api_calls": 4, "target_api_calls": 5}
    assert {k: totals[done][1][k] for k in ("api_calls", "source_api_calls", "target_api_calls")} == {
        "api_calls": 10, "source_api_calls": 3, "target_api_calls": 6}
    chart = {p["id"]: p["api_calls"] for p in client.get("/api/throughput").json()["runs"]}
    assert chart == {died: 11, done: 10}
    page = client.get(f"/runs/{died}").text
    assert "11 (5 target, 4 source)" in page
