from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bus.natsserver import NatsServer, require_nats_server


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(require_nats_server(), tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.kill()
