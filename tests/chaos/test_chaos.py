"""Chaos: a sync of a generated store through faulty sandboxes while `ferry run` is SIGKILLed and restarted.

The short version runs with the normal suite; `make chaos` runs the long one (the demo-sized store, more
kills) and prints the figures. Both end with a full reconciliation: nothing lost, nothing duplicated, no
wrong or stale value, no valid record dead-lettered, every invalid record dead-lettered for the right reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ferry.cli.exits import RUN_FINISHED
from tests.chaos.harness import Chaos, ChaosConfig, ChaosResult


def _check(result: ChaosResult) -> None:
    figures = result.figures()
    print("\nchaos figures:\n" + json.dumps(figures, indent=2))  # `make chaos` shows them (pytest -s)
    out = os.environ.get("FERRY_CHAOS_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    assert len(result.kills) >= result.config.kills, figures
    assert sum(1 for k in result.kills if k.kill_phase.startswith("bulk")) >= result.config.bulk_kills, figures
    assert result.lives[-1].exit_code in RUN_FINISHED and (result.final_run or {}).get("status") == "succeeded", figures
    assert sum(result.faults.values()) > 0, "no fault was injected: the run proves nothing"
    assert result.faults.get("salesforce:session_expired", 0) > 0, result.faults
    r = result.reconciliation
    for name in ("lost", "duplicated", "extra", "wrong", "stale", "wrongly_dead_lettered"):
        assert r.total(name) == 0, (name, r.problems(), figures)
    assert r.total("invalid") > 0, "the store has no invalid record: the reasons are not tested"
    assert r.total("invalid_right_reason") == r.total("invalid"), (r.problems(), figures)
    assert result.bulk_reuploads == 0, figures
    # Kills land anywhere, calls in flight included: the ledger (a call counted before it is sent) never
    # holds fewer Salesforce calls than the org counted.
    assert result.ledger_calls >= result.api_calls["salesforce"] > 0, figures
    assert result.resume_seconds(), "no restart after a kill was timed"


def test_chaos_short(tmp_path: Path) -> None:
    # A small store makes few API calls (~60 with Bulk): the session expires every 25 of them, not 500, to be
    # seen at all.
    config = ChaosConfig(
        seed=3,
        customers=80,
        products=15,
        orders=160,
        kills=10,
        bulk_kills=2,
        max_seconds=200,
        page_size=20,
        bulk_threshold=100,  # Order and OrderItem go through Bulk API 2.0
        bulk_queue_seconds=0.8,
        expire_session_every=25,
    )
    with Chaos(tmp_path, config) as chaos:
        _check(chaos.run())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_chaos_long(tmp_path: Path) -> None:
    config = ChaosConfig(
        seed=13,  # its fault draws include every kind (seed 11's first few hundred calls draw no Shopify timeout)
        customers=1000,
        products=200,
        orders=2000,
        kills=30,
        bulk_kills=5,
        max_lives=200,
        max_seconds=3000,
        page_size=100,
        bulk_threshold=500,  # every object goes through Bulk API 2.0: a kill during a job for each
        kill_after=(0.0, 8.0),
        edits_per_life=2,
        # Bulk API keeps a 10,000-record sync to a few hundred calls: at every 500 calls the session would
        # expire once at most, so it expires every 100 (the figures print both the setting and the calls).
        expire_session_every=100,
    )
    with Chaos(tmp_path, config) as chaos:
        _check(chaos.run())
