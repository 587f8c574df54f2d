"""check_bus (what `ferry doctor` reports for FERRY_BUS_URL) against real servers: down, no JetStream, not set up,
ready."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.bus.check import check_bus, check_configured_bus
from ferry.bus.jetstream import consumer_name
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


async def test_a_fresh_bus_is_fine_a_partial_layout_is_not(nats_server: NatsServer) -> None:
    import asyncio

    fresh = await asyncio.to_thread(check_bus, settings(nats_server.url))
    assert [(c.name, c.ok) for c in fresh] == [("bus", True), ("bus jetstream", True), ("bus streams", True)]
    assert "none yet" in fresh[2].detail and "ferry worker" in fresh[2].detail  # ferry creates them
    bus = await open_bus(nats_server.url)
    try:
        ready = await asyncio.to_thread(check_bus, settings(nats_server.url))
        assert all(c.ok for c in ready), ready
        assert "4 partition consumers" in ready[2].detail
        await bus.js.delete_consumer(bus.settings.stream, consumer_name(2))  # a consumer gone: workers miss items
        partial = await asyncio.to_thread(check_bus, settings(nats_server.url))
    finally:
        await bus.close()
    assert [(c.name, c.ok) for c in partial] == [("bus", True), ("bus jetstream", True), ("bus streams", False)]
    assert consumer_name(2) in partial[2].detail and "ferry worker" in partial[2].fix


def test_embedded_mode_has_no_bus_and_that_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_BUS_URL", raising=False)
    [check] = check_configured_bus()
    assert check.ok and "embedded" in check.detail


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_BUS_URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("FERRY_BUS_PARTITIONS", "zero")
    [check] = check_configured_bus()
    assert not check.ok and "FERRY_BUS_PARTITIONS" in check.detail


async def test_the_module_runs_as_a_command_with_doctors_exit_code(nats_server: NatsServer) -> None:
    import asyncio

    def check() -> subprocess.CompletedProcess[str]:
        env = {"PYTHONPATH": str(SRC), "FERRY_BUS_URL": nats_server.url, "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-m", "ferry.bus.check"], env=env, capture_output=True, text=True,
                              timeout=60)

    fresh = await asyncio.to_thread(check)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr  # streams not set up yet: ferry creates them
    assert "ok  bus streams: none yet" in fresh.stdout
    bus = await open_bus(nats_server.url)
    try:
        await bus.js.delete_stream(bus.settings.exhausted_stream)  # one of ferry's streams gone
    finally:
        await bus.close()
    partial = await asyncio.to_thread(check)
    assert partial.returncode == 6, partial.stdout + partial.stderr
    assert "FAIL bus streams" in partial.stdout and "ferry worker" in partial.stdout
