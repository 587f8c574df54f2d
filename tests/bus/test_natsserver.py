"""The test server finder: a missing nats-server fails the run under CI instead of skipping quietly; the start
waits for a complete ports file."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.bus import natsserver


def test_a_missing_server_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(natsserver, "nats_server_binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="nats-server not found"):
        natsserver.require_nats_server()
    monkeypatch.delenv("CI")
    with pytest.raises(Skipped):
        natsserver.require_nats_server()


def test_the_port_is_read_only_once_the_ports_file_is_complete(tmp_path: Path) -> None:
    # The server creates its ports file before writing it: under load a reader saw it empty (JSONDecodeError).
    server = natsserver.NatsServer("nats-server", tmp_path)
    log = tmp_path / "nats.log"
    log.write_bytes(b"[1] Starting nats-server\n")
    ports = tmp_path / "nats-server_123.ports"
    ports.write_text("")
    assert server._ready_port(log, 0) is None  # not ready yet
    log.write_bytes(b"[1] Starting nats-server\n[1] Server is ready\n")
    assert server._ready_port(log, 0) is None  # ready, the file still empty: wait, do not fail
    ports.write_text('{"nats": ["nats://127.0.0.1:4')  # half written
    assert server._ready_port(log, 0) is None
    ports.write_text('{"nats": ["nats://127.0.0.1:42424"], "monitoring": []}')
    assert server._ready_port(log, 0) == 42424
    assert server._ready_port(log, len(log.read_bytes())) is None  # a restart reads only its own log lines
