"""A ``ferry worker`` whose first item arrives after the API budget is spent (the share already counted in the
shared ledger, here reserved whole by another worker's block): opening the pipeline's sink (its describe call)
is refused. That is the budget pausing the run, as it is in a load: the item is settled, the run is told, nothing
is dead-lettered. Before the fix the refusal escaped ``LoadWork.load`` and the bus retried the item until it made
it a dead letter (the distributed chaos run's budget-pause life). Own PostgreSQL, a Salesforce sandbox."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.bus.work import EventBatch, LoadBatch
from ferry.cli.demo import demo_env
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.engine.distributed import LoadWork
from ferry.engine.eventwork import EventWork
from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.store import LetterFilter
from ferry.store.postgres import PostgresStore, migrate
from tests.distributed.test_workers import EXAMPLE, PIPELINE
from tests.store.postgres_server import PostgresServer

SHARE = 20  # = the block a worker reserves at once: the first worker's block takes all of it (the chaos run's case)


@pytest.fixture
def org(tmp_path: Path) -> Iterator[SandboxProcess]:
    proc = start_sandbox("salesforce", tmp_path / "org")
    yield proc
    proc.stop()


def _spec_file(tmp: Path) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    marker = '  api_version: "62.0"\n'
    assert marker in text
    path = tmp / "pipeline.yml"
    path.write_text(text.replace(marker, f"{marker}  api_budget: {SHARE}\n", 1), encoding="utf-8")
    return path


def _pipeline_and_two_stores(
    pg_server: PostgresServer, org: SandboxProcess, tmp_path: Path
) -> tuple[PipelineSpec, list[PostgresStore]]:
    """The pipeline against the org, and two handles on one freshly migrated schema (two processes' stores)."""
    url = pg_server.fresh_schema()
    migrate(url)
    # The source is never opened by a worker: its settings only have to parse.
    shop = {"url": "https://127.0.0.1:9", "access_token": "unused", "ca_file": ""}
    env = {**os.environ, **demo_env(shop, {k: str(v) for k, v in org.info.items()})}
    spec = load_pipeline(_spec_file(tmp_path), env)
    return spec, [PostgresStore(url, lock_dir=tmp_path, max_size=2) for _ in range(2)]


def test_a_budget_spent_before_the_sink_opens_pauses_the_run_without_a_dead_letter(
    pg_server: PostgresServer, org: SandboxProcess, tmp_path: Path
) -> None:
    spec, stores = _pipeline_and_two_stores(pg_server, org, tmp_path)
    first, second = (LoadWork({spec.name: spec}, s, lease_seconds=4.0, budget_block=SHARE) for s in stores)

    async def scenario() -> int:
        try:
            await first._pipeline(PIPELINE)  # its describe reserves a block: the whole share
            assert first.ledger.held() > 0
            run_id = stores[1].start_run(PIPELINE, pid=os.getpid(), host=socket.gethostname())
            item = LoadBatch(PIPELINE, run_id, "Account", (("c1", "v1"),), "composite", 1, "t")
            assert await second.load(item) == 0  # settled, not raised (a raise is a retry, then a dead letter)
            return run_id
        finally:
            await second.close()
            await first.close()

    try:
        run_id = asyncio.run(scenario())
        run = stores[1].get_run(run_id)
        assert run is not None and run.error is not None and "api_budget" in run.error, run
        assert second.paused_items == 1
        assert not stores[1].find_dead_letters(LetterFilter(pipeline=PIPELINE, status=None), 100)
    finally:
        for s in stores:
            s.close()


def test_a_budget_spent_pauses_a_workers_event_batch_without_a_dead_letter(
    pg_server: PostgresServer, org: SandboxProcess, tmp_path: Path
) -> None:
    """The same for ``ferry serve``'s events on workers: the budget refused while the event worker opens the
    pipeline settles the item (a raise would be a bus retry, then a dead letter); its records stay staged."""
    spec, stores = _pipeline_and_two_stores(pg_server, org, tmp_path)
    first = LoadWork({spec.name: spec}, stores[0], lease_seconds=4.0, budget_block=SHARE)
    events = EventWork({spec.name: spec}, stores[1], lease_seconds=4.0, window=0.01)

    async def scenario() -> None:
        try:
            await first._pipeline(PIPELINE)  # its describe reserves a block: the whole share
            await events.submit(EventBatch(PIPELINE, (("customers", "c1", "v1"),), "t"))  # settled, not raised
        finally:
            await events.close()
            await first.close()

    try:
        asyncio.run(scenario())
        assert events.paused_batches == 1
        assert not stores[1].find_dead_letters(LetterFilter(pipeline=PIPELINE, status=None), 100)
    finally:
        for s in stores:
            s.close()
