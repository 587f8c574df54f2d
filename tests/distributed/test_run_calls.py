"""A distributed run's API-call figures count every process: the coordinator's and each `ferry worker`'s (reads,
direct writes, Bulk jobs, their describes), as the sandboxes themselves counted them, also when the coordinator
was SIGKILLed mid-run (its row closed as `died`). Own PostgreSQL and nats-server; Shopify and Salesforce
sandboxes."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.exits import RUN_FINISHED
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.store.postgres import migrate
from tests.bus.natsserver import NatsServer
from tests.distributed.test_workers import _distributed_env, _ferry, _queued, _start_workers, _stop, _written
from tests.store.postgres_server import PostgresServer
from tests.store.test_postgres_e2e import _pipeline


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proc = start_sandbox("shopify", tmp_path_factory.mktemp("shop"),
                         ["--customers", "60", "--products", "15", "--orders", "120", "--seed", "5"])
    yield proc
    proc.stop()


def _sandbox_calls(proc: SandboxProcess) -> int:
    """The API calls the sandbox itself counted (Salesforce: its DailyApiRequests)."""
    ctx = ssl.create_default_context(cafile=str(proc.info["ca_file"]))
    with httpx.Client(verify=ctx, timeout=30) as client:
        return int(client.get(f"{proc.url}/__sandbox/stats").json()["api_calls"])


def _target_calls(stats: dict[str, Any]) -> int:
    return sum(int(o["api_calls"]) for o in stats["objects"].values()) + int(stats["setup_api_calls"])


def test_runs_counts_the_calls_of_the_coordinator_and_every_worker(
    shop: SandboxProcess, pg_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = pg_server.fresh_database()
    migrate(url)
    org = start_sandbox("salesforce", tmp_path / "org")
    env = _distributed_env(shop, org, url, nats_server, tmp_path / "home")
    workers = _start_workers(2, env, tmp_path)
    try:
        shop_before = _sandbox_calls(shop)
        # bulk_threshold 40: the larger objects go as Bulk jobs (JobLoad items), the others as direct batches.
        run = _ferry(["run", str(_pipeline(tmp_path)), "--json"], env)
        assert run.returncode in RUN_FINISHED, run.stderr[-3000:]
        assert _stop(workers) == [0, 0]
        runs = _ferry(["runs", "--json"], env)
        assert runs.returncode == 0, runs.stderr[-3000:]
        stats = json.loads(runs.stdout)[0]["stats"]
        assert stats == json.loads(run.stdout) | {"budget": stats["budget"]}  # the same figures as the run's own
        assert any(o["strategy"].startswith("bulk") for o in stats["objects"].values()), stats["objects"]
        # Every call each sandbox answered is in the run's figures: Shopify's (the workers read; ferry counts a
        # bulk operation's result download too, a file outside /admin/api/ the shop does not count), Salesforce's
        # (the coordinator's describe, each worker's describe, writes and Bulk jobs).
        downloads = sum(1 for r in stats["source_reads"].values() if r["mode"] == "bulk")
        assert stats["source_api_calls"] == _sandbox_calls(shop) - shop_before + downloads, stats
        assert downloads and stats["source_api_calls"] > downloads, stats["source_reads"]
        assert _target_calls(stats) == _sandbox_calls(org), stats
        assert all(o["api_calls"] > 0 for o in stats["objects"].values() if o["written"]), stats["objects"]
        # The budget figures too (the coordinator's own guard saw only its own client's calls; main: 1 of 23).
        assert stats["budget"]["spent_this_run"] == stats["budget"]["spent_24h"] == _sandbox_calls(org), stats
    finally:
        _stop(workers)
        org.stop()


def test_a_died_runs_figures_count_the_calls_its_coordinator_and_workers_sent(
    shop: SandboxProcess, pg_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = pg_server.fresh_database()
    migrate(url)
    org = start_sandbox("salesforce", tmp_path / "org", ["--latency", "real"])
    # Shopify over REST: every call ferry counts is one the shop counts (no bulk result download beside them).
    env = {**_distributed_env(shop, org, url, nats_server, tmp_path / "home"), "SHOPIFY_API": "rest"}
    workers = _start_workers(2, env, tmp_path)
    try:
        shop_before = _sandbox_calls(shop)
        coordinator = subprocess.Popen([sys.executable, "-m", "ferry", "run", str(_pipeline(tmp_path)), "--json"],
                                       env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not (_written(url) > 0 and _queued(url) > 0):  # mid-load: some rows written, some still queued
            assert coordinator.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.02)
        coordinator.send_signal(signal.SIGKILL)
        assert coordinator.wait(timeout=30) == -signal.SIGKILL
        coordinator.communicate()
        time.sleep(1.0)  # the workers go on with what they hold of the run, and report its calls
        assert _stop(workers) == [0, 0]  # SIGTERM: what they hold finished or handed back; nothing calls after
        runs = _ferry(["runs", "--json"], env)
        assert runs.returncode == 0, runs.stderr[-3000:]
        [row] = json.loads(runs.stdout)
        assert row["status"] == "died", row
        stats = row["stats"]
        # The figures the coordinator never wrote: every call its processes sent, as the sandboxes counted them.
        assert stats["source_api_calls"] == _sandbox_calls(shop) - shop_before > 0, stats
        assert _target_calls(stats) == _sandbox_calls(org), stats
        assert any(o["api_calls"] for o in stats["objects"].values()), stats
    finally:
        _stop(workers)
        org.stop()
