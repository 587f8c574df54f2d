"""`ferry demo --workers 3 --kill-worker --json` as a person runs it (a subprocess), against this test's own
PostgreSQL and nats-server: one worker SIGKILLed while it holds rows of the load, and the org then holds every
record of the store exactly once (or its dead letter has the reason). Without the two servers the demo refuses
with exit 2; stopped by SIGTERM or Ctrl-C it leaves no child process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ferry.store.postgres import migrate
from tests.bus.natsserver import NatsServer
from tests.store.postgres_server import PostgresServer

SMALL_STORE = ["--customers", "150", "--products", "40", "--orders", "300"]


def _demo(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferry", "demo", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)


def _env(home: Path, state: str = "", bus: str = "") -> dict[str, str]:
    """An empty URL is an unset one for ferry (so the test's own environment cannot leak a server in)."""
    return {"FERRY_HOME": str(home), "FERRY_STATE_URL": state, "FERRY_BUS_URL": bus}


def test_three_workers_one_killed_every_record_lands_once(
    pg_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = pg_server.fresh_database()
    migrate(url)
    done = _demo(["--workers", "3", "--kill-worker", "--json", *SMALL_STORE], _env(tmp_path, url, nats_server.url))
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert done.returncode == 0, (report["problems"], done.stderr[-3000:])
    assert report["ok"] and report["workers"] == 3
    [killed] = report["killed"]
    assert killed["by"] == "demo" and killed["held_rows"] > 0, killed
    # The victim died of the SIGKILL; the two others stopped cleanly at the end (SIGTERM, exit 0).
    assert sorted(report["worker_exit_codes"]) == [-signal.SIGKILL, 0, 0], report["worker_exit_codes"]
    assert report["duplicates"] == 0 and report["missing"] == 0
    objects = report["objects"]
    assert set(objects) == {"Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem"}
    assert all(o["landed"] > 0 and o["unexpected"] == 0 and o["both"] == 0 for o in objects.values()), objects
    assert all(o["landed"] + o["dead_lettered"] == o["expected"] for o in objects.values()), objects
    # The demo store is messy on purpose: some records cannot be written and are dead-lettered with the reason.
    assert report["dead_letters"] > 0 and "(none)" not in report["dead_letter_codes"], report["dead_letter_codes"]
    assert report["totals"]["expected"] > 1000
    # Its own state, under its own pipeline name, in the shared database.
    import psycopg

    with psycopg.connect(url) as conn:
        names = {r[0] for r in conn.execute("SELECT DISTINCT pipeline FROM runs")}
    assert names == {"demo-distributed"}


def test_without_the_servers_the_demo_says_what_is_missing(tmp_path: Path) -> None:
    done = _demo(["--workers", "3", "--kill-worker"], _env(tmp_path))
    assert done.returncode == 2, done.stderr
    assert "FERRY_STATE_URL and FERRY_BUS_URL" in done.stderr and "Scale out" in done.stderr, done.stderr


def test_an_unreachable_bus_and_an_unmigrated_database_are_named(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    url = pg_server.fresh_database()  # not migrated
    done = _demo(["--workers", "2"], _env(tmp_path, url, "nats://127.0.0.1:1"))
    assert done.returncode == 2, done.stderr
    assert "ferry migrate" in done.stderr and "cannot connect" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # nats-py's own connect errors are not printed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_demo_leaves_no_process_behind(
    signum: signal.Signals, pg_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    """SIGTERM goes to the demo alone (it must stop its children itself); SIGINT to its whole process group, as
    Ctrl-C in a terminal does (every child gets it too, and the demo still stops and reaps them all)."""
    url = pg_server.fresh_database()
    migrate(url)
    demo = subprocess.Popen([sys.executable, "-m", "ferry", "demo", "--workers", "3", "--json", *SMALL_STORE],
                            env={**os.environ, **_env(tmp_path, url, nats_server.url)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        me = psutil.Process(demo.pid)
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        # Two sandboxes and three workers (and then the coordinator): stop the demo once all of them run.
        while len(children) < 6:
            assert demo.poll() is None and time.monotonic() < deadline, demo.stderr.read() if demo.stderr else ""
            children = me.children(recursive=True)
            time.sleep(0.1)
        if signum == signal.SIGINT:
            os.killpg(demo.pid, signum)  # its own session: the group is the demo and its children only
        else:
            demo.send_signal(signum)
        _, err = demo.communicate(timeout=120)
        assert demo.returncode == 128 + signum, err[-3000:]
        assert "interrupted" in err, err
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
