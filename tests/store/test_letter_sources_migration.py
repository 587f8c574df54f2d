"""A state DB an older ferry wrote, each dead letter's source payload in its ``dlq`` row, opens with the payloads
moved to ``dlq_sources`` (the column gone), every letter and its payload as it was, and goes on working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from ferry.store import LetterFilter, NewDeadLetter, Store, Written

# The dlq table as ferry created it before dlq_sources (ferry.store.sqlite at 9207837).
OLD_DLQ = """
CREATE TABLE dlq (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    run_id INTEGER,
    object TEXT NOT NULL,
    record_key TEXT NOT NULL,
    version TEXT,
    error_code TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT NOT NULL,
    errors TEXT NOT NULL,
    source_payload BLOB,
    mapped_payload BLOB,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    stream TEXT,
    source_key TEXT,
    history TEXT,
    resolved_at TEXT,
    resolution TEXT,
    UNIQUE (pipeline, object, record_key)
);
CREATE INDEX dlq_open ON dlq (pipeline, status, object);
"""
AT = "2026-03-01T00:00:00.000000Z"
ORDER = {"id": 7, "line_items": [{"id": 71}, {"id": 72}], "note": "x" * 20_000}  # spills into overflow pages
ERRORS = [{"code": "BAD", "message": "bad", "fields": ["Quantity"]}]


def old_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(OLD_DLQ)
        db.executemany(
            "INSERT INTO dlq (pipeline, run_id, object, record_key, version, error_code, message, fields, errors, "
            "source_payload, mapped_payload, first_seen, last_seen, status, stream, source_key) "
            "VALUES ('p', 1, 'OrderItem', ?, 'v1', 'BAD', 'bad', '[\"Quantity\"]', ?, ?, ?, ?, ?, ?, 'orders', '7')",
            [
                ("71", orjson.dumps(ERRORS), orjson.dumps(ORDER), b'{"Quantity": "x"}', AT, AT, "open"),
                ("72", orjson.dumps(ERRORS), orjson.dumps(ORDER), None, AT, AT, "resolved"),
                ("73", orjson.dumps(ERRORS), None, None, AT, AT, "open"),
            ],
        )


def test_payloads_move_out_of_the_letter_rows(tmp_path: Path) -> None:
    path = tmp_path / "ferry.db"
    old_database(path)
    store = Store(path)
    try:
        columns = {r[1] for r in store._conn.execute("PRAGMA table_info(dlq)")}
        if sqlite3.sqlite_version_info >= (3, 35, 0):
            assert "source_payload" not in columns
        letters = {d.record_key: d for d in store.find_dead_letters(LetterFilter("p", status=None), None)}
        assert letters["71"].source_payload == ORDER and letters["72"].source_payload == ORDER
        assert letters["73"].source_payload is None
        assert letters["71"].mapped_payload == {"Quantity": "x"} and letters["71"].errors == ERRORS
        assert [d.status for d in letters.values()] == ["open", "resolved", "open"]
        assert store.dead_letter_source_payloads([d.id for d in letters.values()]) == {
            letters["71"].id: ORDER,
            letters["72"].id: ORDER,
        }
        lean = store.find_dead_letters_lean(LetterFilter("p"), 10)
        assert [(d.record_key, d.source_payload) for d in lean] == [("71", None), ("73", None)]

        # It goes on working: a letter seen again without its source keeps the one it had; a write resolves it.
        store.dead_letter("p", 2, [NewDeadLetter("OrderItem", "71", "v2", ERRORS, None, None, "orders", "7")])
        again = store.dead_letter_for("p", "OrderItem", "71")
        assert again is not None and again.source_payload == ORDER and again.attempts == 2
        store.record_written("p", "OrderItem", [Written("71", "v2"), Written("73", "v1")], "replayed")
        assert store.count_dead_letters("p") == {}
    finally:
        store.close()

    reopened = Store(path)  # a second open finds nothing to migrate
    try:
        assert reopened.dead_letter_for("p", "OrderItem", "71").source_payload == ORDER  # type: ignore[union-attr]
    finally:
        reopened.close()


def test_reset_forgets_the_pipelines_payloads_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    try:
        for pipeline in ("p", "q"):
            store.dead_letter(
                pipeline, 1, [NewDeadLetter("Order", "7", "v1", ERRORS, orjson.dumps(ORDER), None, "orders", "7")]
            )
        store.reset_pipeline("p")
        assert store._conn.execute("SELECT COUNT(*) FROM dlq_sources").fetchone()[0] == 1
        kept = store.dead_letter_for("q", "Order", "7")
        assert kept is not None and kept.source_payload == ORDER
    finally:
        store.close()
