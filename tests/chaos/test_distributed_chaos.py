"""Chaos in distributed mode (issue 18 item 5): `ferry run --distributed` and three `ferry worker`s, SIGKILLs of
workers and of the coordinator, NATS and PostgreSQL crashed and restarted mid-run, faults on both sandboxes,
edits between lives; the org equals a clean embedded run's, 0 lost, 0 duplicated, 0 stale, the API budget held.
The short version runs with the suite; `make chaos` runs the long one (-m slow) and prints the figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.chaos.distributed import DistChaosConfig, DistributedChaos, check
from tests.chaos.harness import ChaosConfig

SHORT = DistChaosConfig(
    chaos=ChaosConfig(
        pair="shopify", seed=5, customers=30, products=8, orders=60, max_lives=12, max_seconds=150, page_size=20,
        bulk_threshold=100_000,  # direct writes in both runs: remote jobs are not run by workers yet
        kill_after=(0.0, 1.5), edits_per_life=1, expire_session_every=40,
    ),
    worker_kills=4,
    coordinator_kills=1,
    outage=(1.5, 5.0),
    first_budget=20,  # a clean run needs ~40 Salesforce calls: the first life pauses on it
    api_budget=150,
)
LONG = dataclasses.replace(
    SHORT,
    chaos=dataclasses.replace(SHORT.chaos, seed=13, customers=200, products=40, orders=400, max_lives=60,
                              max_seconds=1200, page_size=50, kill_after=(0.0, 6.0), edits_per_life=2,
                              expire_session_every=100),
    work_batch=20,
    worker_kills=20,
    coordinator_kills=5,
    nats_restarts=3,
    pg_restarts=3,
    outage=(2.0, 15.0),  # past psycopg's pool wait (10 s) and a publish's retries, sometimes
    first_budget=100,
    api_budget=2500,
)


@pytest.mark.timeout(240)
def test_distributed_chaos_short(tmp_path: Path) -> None:
    with DistributedChaos(tmp_path, SHORT) as chaos:
        check(chaos.run())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_distributed_chaos_long(tmp_path: Path) -> None:
    with DistributedChaos(tmp_path, LONG) as chaos:
        check(chaos.run())
