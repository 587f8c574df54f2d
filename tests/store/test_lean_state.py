"""The SQLite adapter keeps each raw source record once (no copy on the target rows), reads staged pages
without sorting what is left, and clears a run's staging without rewriting it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ferry.core.ports import StagedRow
from ferry.store import PlannedRow, Store

RAW = b'{"id": 7, "line_items": [{"id": 1}, {"id": 2}]}'


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def _staged_seq(store: Store, key: str) -> int:
    (seq,) = [r.seq for chunk in store.staged("p", ["orders"]) for r in chunk if r.key == key]
    return seq


def test_target_rows_of_one_source_record_share_its_staged_payload(store: Store) -> None:
    store.stage("p", "orders", 1, [StagedRow("7", "v1", RAW)])
    seq = _staged_seq(store, "7")
    store.put_outbox(
        "p",
        "OrderItem",
        [PlannedRow("1", "v1", {"n": 1}, seq, "orders", "7"), PlannedRow("2", "v1", {"n": 2}, seq, "orders", "7")],
    )
    # Nothing of the raw record is copied onto the target rows ...
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT COUNT(*) FROM outbox WHERE source_payload IS NOT NULL").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM staging").fetchone() == (1,)
    db.close()
    # ... yet every way of reading a row's source still finds it.
    assert store.source_payloads("p", "OrderItem", ["1", "2"]) == {"1": RAW, "2": RAW}
    full = [r for chunk in store.outbox("p", "OrderItem") for r in chunk]
    assert [r.source_payload for r in full] == [RAW, RAW]
    assert [r.source_payload for r in store.outbox_rows("p", "OrderItem", ["2"])] == [RAW]


def test_staged_pages_are_read_in_seq_order_without_sorting_the_rest(store: Store) -> None:
    """Each page must cost its own rows: a plan that sorts every remaining staged row (payloads included)
    for every page made planning quadratic in the size of the run."""
    store.stage("p", "orders", 1, [StagedRow(str(i), "v1", b"{}") for i in range(0, 10, 2)])
    store.stage("p", "customers", 1, [StagedRow(str(i), "v1", b"{}") for i in range(1, 10, 2)])
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    seen = [(r.stream, r.key) for chunk in store.staged("p", ["customers", "orders"], chunk=3) for r in chunk]
    store._conn.set_trace_callback(None)
    assert [k for _, k in seen] == ["0", "2", "4", "6", "8", "1", "3", "5", "7", "9"]
    reads = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    assert reads
    for sql in reads:
        plan = store._conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        assert not any("TEMP B-TREE" in str(step[-1]) for step in plan), plan


def test_clearing_does_not_rewrite_what_it_drops(store: Store) -> None:
    # Debian's SQLite is built with secure_delete on; the store turns it to FAST (see Store.__init__).
    assert store._conn.execute("PRAGMA secure_delete").fetchone() == (2,)
