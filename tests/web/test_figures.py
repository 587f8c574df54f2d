"""The dashboard's figures from run rows: totals, rates, the 24 hourly buckets, the budget of the newest run."""

from __future__ import annotations

import datetime as dt

from ferry.core.ports import RunRow
from ferry.web.figures import HOURS, RUN_POINTS, budgets, run_summary, throughput

NOW = dt.datetime(2026, 12, 6, 12, 30, tzinfo=dt.UTC)


def _row(run_id: int, finished: dt.datetime | None, written: int, seconds: float, *, status: str = "succeeded",
         budget: dict | None = None, pipeline: str = "p") -> RunRow:
    stats = {"objects": {"Account": {"read": written + 1, "written": written, "created": written, "api_calls": 2},
                         "Contact": {"read": 1, "written": 0, "dead_lettered": 1, "api_calls": 1}},
             "source_api_calls": 3, "setup_api_calls": 1, "seconds": seconds, "budget": budget}
    start = (finished or NOW) - dt.timedelta(seconds=seconds)
    return RunRow(run_id, pipeline, start.isoformat(), finished.isoformat() if finished else None, status,
                  stats if finished else {}, None)


def test_a_runs_totals_count_every_api_call_and_its_rate() -> None:
    s = run_summary(_row(1, NOW, 100, 4.0), NOW)
    assert s["totals"]["written"] == 100 and s["totals"]["dead_lettered"] == 1 and s["totals"]["read"] == 102
    assert s["totals"]["api_calls"] == 2 + 1 + 3 + 1 and s["totals"]["source_api_calls"] == 3
    assert s["records_per_second"] == 25.0


def test_hourly_buckets_hold_the_runs_finished_in_them() -> None:
    rows = [_row(1, NOW - dt.timedelta(hours=30), 50, 1.0),  # older than 24 h: not in any bucket
            _row(2, NOW - dt.timedelta(hours=2, minutes=10), 100, 10.0),
            _row(3, NOW - dt.timedelta(minutes=5), 30, 2.0),
            _row(4, NOW - dt.timedelta(minutes=1), 10, 2.0),
            _row(5, None, 0, 0.0, status="running")]
    data = throughput(rows, NOW)
    assert [r["id"] for r in data["runs"]] == [1, 2, 3, 4]  # finished ones, oldest first
    hours = data["hours"]
    assert len(hours) == HOURS and hours[-1]["hour"] == "2026-12-06T12:00Z"
    assert hours[-1]["written"] == 40 and hours[-1]["records_per_second"] == 10.0
    assert hours[-3]["written"] == 100 and hours[-3]["api_calls"] == 7
    assert sum(h["written"] for h in hours) == 140


def test_the_per_run_chart_keeps_the_newest_runs() -> None:
    rows = [_row(i, NOW - dt.timedelta(minutes=i), 1, 1.0) for i in range(1, RUN_POINTS + 11)]
    ids = [r["id"] for r in throughput(rows, NOW)["runs"]]
    assert len(ids) == RUN_POINTS and ids[-1] == RUN_POINTS + 10 and ids == sorted(ids)


def test_the_budget_is_the_newest_runs_per_pipeline() -> None:
    old = {"share": "5%", "allowed": 1000, "spent_24h": 100, "spent_this_run": 10, "remaining": 900}
    new = {**old, "spent_24h": 250, "remaining": 750}
    found = budgets([_row(1, NOW, 1, 1.0, budget=old), _row(2, NOW, 1, 1.0, budget=new),
                     _row(3, NOW, 1, 1.0, pipeline="q")])
    assert [b["pipeline"] for b in found] == ["p"]
    assert found[0]["spent_24h"] == 250 and found[0]["used_fraction"] == 0.25 and found[0]["run_id"] == 2
