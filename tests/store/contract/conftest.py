"""The contract every state-store backend passes: one fixture yields a fresh backend, each test speaks only the
ports of ``ferry.core.ports``.

A backend is added by one more param of ``backend`` (PostgreSQL: a fresh schema per test, ``open`` connects to
it). ``open`` gives a new handle on the same state: what another process of the same pipeline would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferry.core.ports import StateStore
from ferry.store import NewDeadLetter, SqliteStore, StagedRow

# What the suite holds a backend as: every port (``ferry.core.ports.StateStore``).
Backend = StateStore


@dataclass
class BackendFactory:
    name: str
    open: Callable[[], Backend]


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    path = tmp_path / "state.db"
    return BackendFactory("sqlite", lambda: SqliteStore(path))


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    """A fresh, migrated schema on the PostgreSQL server the session started (tests/store/conftest.py)."""
    from ferry.store.postgres import PostgresStore

    url = request.getfixturevalue("pg_url")
    return BackendFactory("postgres", lambda: PostgresStore(url, lock_dir=tmp_path))


_BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], BackendFactory]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(_BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    return _BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def store(backend: BackendFactory) -> Iterator[Backend]:
    handle = backend.open()
    yield handle
    handle.close()


# ----------------------------------------------------------------------------------------------- helpers


def stage(store: Backend, pipeline: str, stream: str, rows: list[tuple[str, str, bytes]], run_id: int = 1) -> int:
    """Stage rows and leave the stream's read state as it is (``test_read_checkpoints.py`` tests the state)."""
    return store.stage(pipeline, stream, run_id, [StagedRow(k, v, p) for k, v, p in rows], None)


def seq_of(store: Backend, pipeline: str, stream: str, key: str) -> int:
    (seq,) = [r.seq for chunk in store.staged(pipeline, [stream]) for r in chunk if r.key == key]
    return seq


def letter(
    obj: str,
    key: str,
    version: str | None = "v1",
    code: str = "X",
    *,
    source: bytes | None = None,
    mapped: dict[str, Any] | None = None,
    stream: str | None = None,
    source_key: str | None = None,
) -> NewDeadLetter:
    error = {"code": code, "message": f"{obj} {key}: {code}", "fields": []}
    return NewDeadLetter(obj, key, version, [error], source, mapped, stream, source_key)


def unserialisable_letter(obj: str, key: str) -> NewDeadLetter:
    """A letter no backend can store (its mapped payload is not JSON): the failure injected mid-transaction to
    prove a unit is all or nothing, whatever the backend."""
    return letter(obj, key, mapped={"value": object()})


def queued(store: Backend, pipeline: str, obj: str) -> dict[str, str]:
    """The object's outbox as key -> version."""
    return {r.key: r.version for chunk in store.outbox(pipeline, obj) for r in chunk}
