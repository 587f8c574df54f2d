"""The API budget spent in a `ferry worker`: the distributed run pauses as the embedded one does (exit 5, run
`paused`), nothing is dead-lettered for it (neither the bus's work items nor the records), the rows stay queued,
and the next run (with a budget that allows it) resumes them and finishes. Own PostgreSQL and nats-server."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from ferry.cli.exits import RUN_FINISHED, Exit
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.store import LetterFilter
from ferry.store.postgres import PostgresStore, migrate
from tests.bus.natsserver import NatsServer
from tests.distributed.test_workers import (
    EXAMPLE,
    PIPELINE,
    _distributed_env,
    _ferry,
    _once_per_key,
    _start_workers,
    _stop,
)
from tests.store.test_postgres_e2e import _org

TIGHT = 4  # Salesforce calls per rolling 24 h: the set-up fits, most of the loads do not


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory: pytest.TempPathFactory) -> SandboxProcess:
    proc = start_sandbox("shopify", tmp_path_factory.mktemp("shop"),
                         ["--customers", "20", "--products", "5", "--orders", "30", "--seed", "11"])
    yield proc  # type: ignore[misc]
    proc.stop()


def _pipeline(tmp: Path, budget: int) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    marker = '  api_version: "62.0"\n'
    assert marker in text
    path = tmp / f"pipeline-{budget}.yml"
    path.write_text(text.replace(marker, f"{marker}  api_budget: {budget}\n", 1), encoding="utf-8")
    return path


def _ledger(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COALESCE(SUM(calls), 0) FROM api_calls WHERE pipeline = %s", (PIPELINE,)).fetchone()
    return int(row[0]) if row else 0


# Behind -m slow (the suite is at its 15 minutes): the distributed chaos short run, in the default suite, pauses a
# life on a share too small and resumes it after the share is raised; this one checks each detail on its own.
@pytest.mark.slow
def test_a_spent_budget_in_a_worker_pauses_the_run_and_the_next_run_resumes(
    small_shop: SandboxProcess, pg_server: object, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = pg_server.fresh_database()  # type: ignore[attr-defined]
    migrate(url)
    org = start_sandbox("salesforce", tmp_path / "org")
    env = _distributed_env(small_shop, org, url, nats_server, tmp_path / "home")
    (tmp_path / "tight").mkdir()
    workers = _start_workers(2, env, tmp_path / "tight", _pipeline(tmp_path, TIGHT))
    try:
        run = _ferry(["run", str(_pipeline(tmp_path, TIGHT)), "--distributed", "--json"], env)
        assert run.returncode == Exit.TRY_LATER, (run.stdout[-2000:], run.stderr[-3000:])
        stats = json.loads(run.stdout)
        assert stats["status"] == "paused" and "in a ferry worker" in stats["error"], stats
        assert "api_budget" in stats["error"], stats["error"]
        assert _ledger(url) <= TIGHT  # the shared ledger held the share across the processes
        store = PostgresStore(url)
        try:
            queued = store.outbox_count(PIPELINE)
            letters = store.find_dead_letters(LetterFilter(pipeline=PIPELINE, status=None), 100_000)
            assert queued > 0  # what the budget stopped stays queued for the next run
            assert not [d for d in letters if d.object.startswith("bus:")]  # no work item dead-lettered
            assert not [d for d in letters if "budget" in json.dumps(d.errors).lower()]
            assert store.list_runs(PIPELINE)[0].status == "paused"
        finally:
            store.close()
        assert sum(1 for _ in _org(org)["Account"]) > 0  # the workers wrote before the budget ran out
        # The operator raises the share (the workers are restarted with the new file): the next run resumes.
        assert _stop(workers) == [0, 0]
        roomy = _pipeline(tmp_path, 5000)
        (tmp_path / "roomy").mkdir()
        workers = _start_workers(2, env, tmp_path / "roomy", roomy)
        again = _ferry(["run", str(roomy), "--distributed", "--json"], env)
        assert again.returncode in RUN_FINISHED, again.stderr[-3000:]
        resumed = json.loads(again.stdout)
        assert resumed["status"] == "succeeded" and resumed["resumed_from"]["status"] == "paused", resumed
        store = PostgresStore(url)
        try:
            assert store.outbox_count(PIPELINE) == 0
        finally:
            store.close()
        _once_per_key(_org(org))
    finally:
        _stop(workers)
        org.stop()
