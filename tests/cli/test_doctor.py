"""`ferry doctor`: what it checks, what it says to fix, the exit code; never a password."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from ferry.store.postgres import migrate
from tests.bus.conftest import nats_server
from tests.bus.natsserver import NatsServer, require_nats_server
from tests.store.conftest import pg_server
from tests.store.postgres_server import PostgresServer

__all__ = ["nats_server", "pg_server"]  # the fixtures of the store's and the bus's tests: own servers


def _ferry(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_embedded_state_is_checked_by_default(tmp_path: Path) -> None:
    env = {"FERRY_HOME": str(tmp_path), "FERRY_STATE_URL": "", "FERRY_BUS_URL": ""}
    done = _ferry(["doctor", "--json"], env)
    assert done.returncode == 0, done.stderr
    check, bus = json.loads(done.stdout)
    assert check["ok"] and check["name"] == "state" and str(tmp_path / "ferry.db") in check["detail"]
    assert bus["ok"] and bus["name"] == "bus" and "embedded" in bus["detail"]


def test_an_unreachable_bus_fails_with_what_to_fix(tmp_path: Path) -> None:
    port = _free_port()
    env = {"FERRY_HOME": str(tmp_path), "FERRY_STATE_URL": "", "FERRY_BUS_URL": f"nats://127.0.0.1:{port}"}
    done = _ferry(["doctor", "--json"], env)
    assert done.returncode == 6, done.stderr
    bus = [c for c in json.loads(done.stdout) if c["name"].startswith("bus")]
    assert bus and not all(c["ok"] for c in bus) and any(c["fix"] for c in bus)


def test_an_unreachable_postgresql_fails_with_what_to_fix_and_no_password(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # connect_timeout=1: `ferry runs` gives up after 1 s, not the pool's default 10 s (tests/store/test_state_url.py).
    url = f"postgresql://ferry:hunter2@127.0.0.1:{port}/ferry?connect_timeout=1"
    env = {"FERRY_HOME": str(tmp_path), "FERRY_STATE_URL": url}
    done = _ferry(["doctor"], env)
    assert done.returncode == 6
    assert "hunter2" not in done.stdout + done.stderr
    assert "FAIL" in done.stdout and "fix:" in done.stdout and f"ferry:***@127.0.0.1:{port}" in done.stdout
    run = _ferry(["runs"], env)
    assert run.returncode == 6 and "hunter2" not in run.stdout + run.stderr


def test_an_unknown_scheme_is_a_usage_error(tmp_path: Path) -> None:
    done = _ferry(["runs"], {"FERRY_HOME": str(tmp_path), "FERRY_STATE_URL": "mysql://root:hunter2@db/ferry"})
    assert done.returncode == 2 and "hunter2" not in done.stderr and "unknown scheme" in done.stderr


def test_a_fresh_bus_and_a_migrated_postgresql_are_ready_and_each_failure_still_fails(
    pg_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The set-up README's "Scale out" gives (ferry migrate, nats-server -js, no ferry started yet) passes; a bus
    without JetStream, a bus nobody listens on (above) and a database not migrated still fail, saying the fix."""
    url = pg_server.fresh_database()
    env = {"FERRY_HOME": str(tmp_path), "FERRY_STATE_URL": url, "FERRY_BUS_URL": nats_server.url}
    unmigrated = _ferry(["doctor", "--json"], env)
    assert unmigrated.returncode == 6, unmigrated.stdout + unmigrated.stderr
    failed = {c["name"]: c["fix"] for c in json.loads(unmigrated.stdout) if not c["ok"]}
    assert failed == {"state schema": "run `ferry migrate`"}, failed  # the fresh bus is not among the failures
    migrate(url)
    ready = _ferry(["doctor"], env)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "FAIL" not in ready.stdout and "bus streams: none yet" in ready.stdout, ready.stdout
    plain = NatsServer(require_nats_server(), tmp_path / "plain", jetstream=False)
    plain.start()
    try:
        no_jetstream = _ferry(["doctor", "--json"], {**env, "FERRY_BUS_URL": plain.url})
    finally:
        plain.kill()
    assert no_jetstream.returncode == 6, no_jetstream.stdout + no_jetstream.stderr
    failed = {c["name"]: c["fix"] for c in json.loads(no_jetstream.stdout) if not c["ok"]}
    assert list(failed) == ["bus jetstream"] and "-js" in failed["bus jetstream"], failed
