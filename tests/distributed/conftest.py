"""Fixtures of the distributed tests: their own PostgreSQL (one per session) and nats-server (one per test),
never the machine's shared services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bus.natsserver import NatsServer, require_nats_server
from tests.store.postgres_server import PostgresServer, start_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = start_server()
    yield server
    server.cleanup()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(require_nats_server(), tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.kill()
