"""Fixtures of the distributed tests: their own PostgreSQL (one per session) and nats-server (one per test),
never the machine's shared services. The same fixtures as the store's and the bus's tests, taken from there."""

from __future__ import annotations

from tests.bus.conftest import nats_server
from tests.store.conftest import pg_server

__all__ = ["nats_server", "pg_server"]
