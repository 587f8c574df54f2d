"""Processed-id stores: what ferry remembers beyond the bus's dedup window."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ferry.bus.dedup import MemoryDedup, SqliteDedup


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryDedup | SqliteDedup:
    return MemoryDedup(retain=0.3) if request.param == "memory" else SqliteDedup(tmp_path / "dedup.db", retain=0.3)


def test_remembered_ids_are_seen_until_they_age_out(store: MemoryDedup | SqliteDedup) -> None:
    store.remember(["a", "b"])
    store.remember(["b"])  # idempotent
    assert store.seen(["a", "b", "c"]) == {"a", "b"}
    time.sleep(0.4)
    assert store.seen(["a", "b"]) == set()


def test_many_ids_at_once(store: MemoryDedup | SqliteDedup) -> None:
    ids = [f"load_batch:p:{i}" for i in range(1500)]
    store.remember(ids[::2])
    assert store.seen(ids) == set(ids[::2])


def test_sqlite_ids_survive_a_reopen_and_are_shared_by_processes(tmp_path: Path) -> None:
    first = SqliteDedup(tmp_path / "d.db")
    first.remember(["x"])
    first.close()
    assert SqliteDedup(tmp_path / "d.db").seen(["x", "y"]) == {"x"}
