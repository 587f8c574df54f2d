"""Fixtures of the store tests: a PostgreSQL server the session starts itself (tests/store/postgres_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.postgres_server import PostgresServer, start_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = start_server()
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A migrated, empty state database (its own schema) on the session's server."""
    from ferry.store.postgres import migrate

    url = pg_server.fresh_schema()
    migrate(url)
    return url
