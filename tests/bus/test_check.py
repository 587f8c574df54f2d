"""check_bus (what `ferry doctor` reports for FERRY_BUS_URL) against real servers: down, no JetStream, not set up,
ready."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.bus.check import check_bus, check_configured_bus
from tests.bus.helpers import open_bus, settings
from tests.bus.natsserver import NatsServer, require_nats_server

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_bus_nobody_listens_on_fails_fast_and_says_how_to_start_one() -> None:
    [check] = check_bus(f"nats://user:s3cret@127.0.0.1:{_free_port()}", timeout=1.0)
    assert not check.ok and "cannot connect" in check.detail
    assert "s3cret" not in check.detail and "user" not in check.detail
    assert "nats-server -js" in check.fix


def test_a_server_without_jetstream_is_reported(tmp_path: Path) -> None:
    server = NatsServer(require_nats_server(), tmp_path / "plain", jetstream=False)
    server.start()
    try:
        checks = check_bus(server.url, timeout=2.0)
    finally:
        server.kill()
    assert [(c.name, c.ok) for c in checks] == [("bus", True), ("bus jetstream", False)]
    assert "-js" in checks[1].fix


async def test_streams_are_reported_missing_until_set_up_then_ready(nats_server: NatsServer) -> None:
    import asyncio

    before = await asyncio.to_thread(check_bus, settings(nats_server.url))
    assert [(c.name, c.ok) for c in before] == [("bus", True), ("bus jetstream", True), ("bus streams", False)]
    assert "FERRY_WORK" in before[2].detail
    bus = await open_bus(nats_server.url)
    await bus.close()
    after = await asyncio.to_thread(check_bus, settings(nats_server.url))
    assert all(c.ok for c in after), after
    assert "4 partition consumers" in after[2].detail


def test_embedded_mode_has_no_bus_and_that_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_BUS_URL", raising=False)
    [check] = check_configured_bus()
    assert check.ok and "embedded" in check.detail


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_BUS_URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("FERRY_BUS_PARTITIONS", "zero")
    [check] = check_configured_bus()
    assert not check.ok and "FERRY_BUS_PARTITIONS" in check.detail


def test_the_module_runs_as_a_command_with_doctors_exit_code(nats_server: NatsServer) -> None:
    env = {"PYTHONPATH": str(SRC), "FERRY_BUS_URL": nats_server.url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "ferry.bus.check"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 6, done.stdout + done.stderr  # streams not set up yet
    assert "bus streams" in done.stdout and "ferry worker" in done.stdout
