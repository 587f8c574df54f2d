"""Chaos in distributed mode (issue 18 item 5): `ferry run --distributed` and three `ferry worker`s, SIGKILLs of
workers (during reads, loads and open Bulk jobs) and of the coordinator, NATS and PostgreSQL crashed and restarted
mid-run, faults on both sandboxes, edits between lives; the org equals a clean embedded run's, 0 lost, 0
duplicated, 0 stale, the API budget held. The short version runs with the suite; `make chaos` runs the long one
(-m slow) and prints the figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.chaos.distributed import DistChaosConfig, DistributedChaos, check
from tests.chaos.harness import ChaosConfig

SHORT = DistChaosConfig(
    chaos=ChaosConfig(
        pair="shopify", seed=5, customers=30, products=8, orders=60, max_lives=12, max_seconds=150, page_size=20,
        # OrderItem (~90 valid rows) goes through a Bulk job run by a worker; Order (60) stays in LoadBatch items,
        # whose outbox claims the load kills need (a Bulk job claims no rows: with Order in Bulk too, the lives after
        # the first full one were too small to hit a claim, and the share ran out before the quota was met).
        bulk_threshold=75,
        kill_after=(0.0, 1.5), edits_per_life=1, expire_session_every=40,
    ),
    worker_kills=4,
    coordinator_kills=1,
    outage=(1.5, 5.0),
    first_budget=20,  # a clean run needs more Salesforce calls: the first life pauses on it
    api_budget=200,  # 150 before the read and Bulk kills (which can take a life more)
    read_kills=1,
    bulk_kills=1,
)
LONG = dataclasses.replace(
    SHORT,
    chaos=dataclasses.replace(SHORT.chaos, seed=13, customers=200, products=40, orders=400, max_lives=60,
                              max_seconds=1200, page_size=50, kill_after=(0.0, 6.0), edits_per_life=2,
                              expire_session_every=100, bulk_threshold=150),
    work_batch=20,
    worker_kills=20,
    coordinator_kills=5,
    nats_restarts=3,
    pg_restarts=3,
    outage=(2.0, 15.0),  # past psycopg's pool wait (10 s) and a publish's retries, sometimes
    first_budget=100,
    api_budget=2500,
    read_kills=4,
    bulk_kills=4,
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
