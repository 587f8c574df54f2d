"""A listed run's API calls (``runcalls.with_run_calls``): its figures plus what the shared tally (``run_calls``)
holds beyond them, so a distributed run whose coordinator died, or is still running, shows its workers' calls,
and one that ended normally is not counted twice. Over a real SQLite store (the PostgreSQL path, with workers and
a SIGKILLed coordinator: tests/distributed/test_run_calls.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.engine import runcalls
from ferry.engine.stats import RunStats
from ferry.store.sqlite import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


def _calls(stats: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    """A run's source, set-up and per-object calls, as ``ferry runs --json`` gives them."""
    return (int(stats.get("source_api_calls", 0)), int(stats.get("setup_api_calls", 0)),
            {name: int(o.get("api_calls", 0)) for name, o in (stats.get("objects") or {}).items()})


def _listed(store: Store, run_id: int) -> dict[str, Any]:
    return next(r for r in runcalls.with_run_calls(store, store.list_runs("p")) if r.id == run_id).stats


def test_a_running_run_shows_its_workers_calls_so_far(store: Store) -> None:
    run = store.start_run("p")
    store.add_run_calls(run, {"source": 4, "setup": 1})
    assert _calls(_listed(store, run)) == (4, 1, {})
    store.add_run_calls(run, {"object:Account": 6, "source": 1})
    assert _calls(_listed(store, run)) == (5, 1, {"Account": 6})


def test_a_died_run_shows_every_call_its_processes_reported(store: Store) -> None:
    run = store.start_run("p")
    store.add_run_calls(run, {"source": 3, "setup": 2, "object:Account": 7, "object:Contact": 2})
    [closed] = store.close_abandoned_runs("p")  # the next run's start: its coordinator is gone
    assert closed.id == run
    row = store.get_run(run)
    assert row is not None and row.status == "died" and row.stats == {}
    assert _calls(_listed(store, run)) == (3, 2, {"Account": 7, "Contact": 2})


def test_a_run_that_ended_is_not_counted_twice_and_a_late_report_still_counts(store: Store) -> None:
    run = store.start_run("p")
    store.add_run_calls(run, {"source": 3, "object:Account": 7})
    # What the coordinator does at its end (DistributedRunner._add_helpers_calls): its own 1 describe + the tally.
    # Its budget guard saw its own call only: the workers' target calls are added to the budget figures too.
    stats = RunStats(run_id=run, pipeline="p", setup_api_calls=1,
                     budget={"spent_this_run": 1, "spent_24h": 11, "remaining": 100, "share": "10%"})
    tally = store.run_calls(run)
    runcalls.add_to_stats(stats, tally)
    stats.run_calls_counted = tally
    store.finish_run(run, "succeeded", stats.as_dict())
    listed = _listed(store, run)
    assert _calls(listed) == (3, 1, {"Account": 7})
    assert listed["budget"] == {"spent_this_run": 8, "spent_24h": 18, "remaining": 93, "share": "10%"}
    store.add_run_calls(run, {"object:Account": 2})  # a worker's report after the run's end
    listed = _listed(store, run)
    assert _calls(listed) == (3, 1, {"Account": 9})
    assert listed["budget"] == {"spent_this_run": 10, "spent_24h": 20, "remaining": 91, "share": "10%"}


def test_figures_without_the_mark_are_left_as_they_are(store: Store) -> None:
    # A run finished before figures noted the tally they summed: its coordinator had summed it already.
    run = store.start_run("p")
    store.add_run_calls(run, {"source": 3})
    store.finish_run(run, "succeeded", {"source_api_calls": 5, "objects": {}})
    assert _calls(_listed(store, run)) == (5, 0, {})
    # An embedded run: no tally, its row as stored.
    embedded = store.start_run("p")
    figures = {"source_api_calls": 2, "setup_api_calls": 1, "objects": {"Account": {"api_calls": 3}}}
    store.finish_run(embedded, "succeeded", figures)
    assert _listed(store, embedded) == figures
