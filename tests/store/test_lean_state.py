"""The state store keeps each raw source record once, reads staged pages without sorting what is left, and
clears a run's staging without rewriting it; what a dead letter needs is still there when it is needed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ferry.core.ports import StagedRow
from ferry.store import NewDeadLetter, Store

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
        "p", "OrderItem", [("1", "v1", {"n": 1}, seq, "orders", "7"), ("2", "v1", {"n": 2}, seq, "orders", "7")]
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


def test_clearing_staging_keeps_a_record_an_outbox_row_still_points_at(store: Store) -> None:
    store.stage("p", "orders", 1, [StagedRow("7", "v1", RAW), StagedRow("8", "v1", b'{"id": 8}')])
    seq = _staged_seq(store, "7")
    store.put_outbox("p", "Order", [("7", "v1", {"n": 7}, seq, "orders", "7")])
    store.clear_staging("p", store.max_staged_seq("p"))
    # Order 7 is still queued (a later attempt): its source must survive the clear; order 8's need not.
    assert [r.key for chunk in store.staged("p", ["orders"]) for r in chunk] == ["7"]
    row = store.outbox_rows("p", "Order", ["7"], with_source=False)[0]
    letter = NewDeadLetter("Order", "7", "v1", [{"code": "X", "message": "m", "fields": []}], None, row.payload)
    letter.source_payload = store.source_payloads("p", "Order", ["7"])["7"]
    store.record_results("p", "Order", 1, [], [letter], [("7", "v1")])
    assert store.dead_letter_for("p", "Order", "7").source_payload == {"id": 7, "line_items": [{"id": 1}, {"id": 2}]}
    store.clear_staging("p", store.max_staged_seq("p"))  # the row has left: its source goes with the next clear
    assert store.staged_count("p") == 0


def test_a_raw_payload_given_in_place_of_a_staged_record_is_kept_with_the_row(store: Store) -> None:
    store.put_outbox("p", "Contact", [("k", "v1", {"x": 1}, b'{"id": 1}', "customers", "1")])
    store.clear_staging("p", 10**9)
    assert store.source_payloads("p", "Contact", ["k"]) == {"k": b'{"id": 1}'}


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


def test_writing_resolves_only_the_open_letters_of_the_batch(store: Store) -> None:
    err = [{"code": "X", "message": "m", "fields": []}]
    store.dead_letter("p", 1, [NewDeadLetter("Contact", "b", "v1", err, None, None)])
    store.dead_letter("p", 1, [NewDeadLetter("Account", "a", "v1", err, None, None)])
    store.record_results("p", "Contact", 2, [("a", "v2", "003A"), ("b", "v2", "003B"), ("c", "v2", None)], [], [])
    assert store.dead_letter_for("p", "Contact", "b").status == "resolved"
    assert store.dead_letter_for("p", "Account", "a").status == "open"  # same key, other object: untouched


def test_clearing_does_not_rewrite_what_it_drops(store: Store) -> None:
    # Debian's SQLite is built with secure_delete on; the store turns it to FAST (see Store.__init__).
    assert store._conn.execute("PRAGMA secure_delete").fetchone() == (2,)
