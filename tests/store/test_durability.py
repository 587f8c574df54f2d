"""State store on SQLite: an older state DB keeps working (its tables, columns and journal format), and a page
is staged together with where the read stands."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ferry.core.ports import StagedRow
from ferry.store import JournalEntry, LetterFilter, Store

# The tables as the first release wrote them (before read progress, Bulk jobs, retry history, DLQ sources).
_OLD_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT, status TEXT NOT NULL, stats TEXT, error TEXT);
CREATE TABLE outbox (pipeline TEXT NOT NULL, object TEXT NOT NULL, key TEXT NOT NULL, version TEXT NOT NULL,
    payload BLOB NOT NULL, source_payload BLOB, attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline, object, key));
CREATE TABLE dlq (id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, run_id INTEGER,
    object TEXT NOT NULL, record_key TEXT NOT NULL, version TEXT, error_code TEXT NOT NULL, message TEXT NOT NULL,
    fields TEXT NOT NULL, errors TEXT NOT NULL, source_payload BLOB, mapped_payload BLOB,
    attempts INTEGER NOT NULL DEFAULT 1, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', UNIQUE (pipeline, object, record_key));
INSERT INTO runs (pipeline, started_at, status) VALUES ('p', '2026-01-01T00:00:00.000000Z', 'succeeded');
INSERT INTO outbox VALUES ('p', 'Contact', 'k1', 'v1', '{"LastName": "A"}', NULL, 2);
INSERT INTO dlq (pipeline, run_id, object, record_key, version, error_code, message, fields, errors,
    source_payload, mapped_payload, first_seen, last_seen)
VALUES ('p', 1, 'Contact', '42', 'v1', 'INVALID_EMAIL_ADDRESS', 'Contact 42: bad email', '["Email"]',
    '[{"code": "INVALID_EMAIL_ADDRESS", "message": "Contact 42: bad email", "fields": ["Email"]}]',
    '{"id": 42, "email": "x@"}', '{"Email": "x@"}', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
"""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def test_a_state_db_from_the_first_release_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_SCHEMA)
    conn.close()
    store = Store(path)
    (letter,) = store.find_dead_letters(LetterFilter(pipeline="p"))
    assert (letter.record_key, letter.error_code, letter.stream, letter.history) == (
        "42",
        "INVALID_EMAIL_ADDRESS",
        None,
        [],
    )
    assert letter.source_payload == {"id": 42, "email": "x@"}
    (row,) = [r for chunk in store.outbox("p", "Contact") for r in chunk]
    assert (row.key, row.attempts, row.history, row.stream) == ("k1", 2, [], None)
    assert store.list_runs("p")[0].progress_at is None
    store.close()
    Store(path).close()  # opening twice is harmless


def test_a_page_and_where_the_read_stands_are_saved_together(store: Store) -> None:
    run = store.start_run("p")
    state = {"cursor": None, "read": {"next_url": "https://shop/next?page_info=abc", "newest": "v3", "pages": 1}}
    store.stage("p", "orders", run, [StagedRow("1", "v3", b"{}")], state)
    assert store.read_state("p", "orders") == state
    # A state that cannot be saved takes its page down with it: neither is kept without the other.
    with pytest.raises(TypeError):
        store.stage("p", "orders", run, [StagedRow("2", "v4", b"{}")], {"cursor": {"not", "json"}})
    assert store.read_state("p", "orders") == state
    assert [r.key for chunk in store.staged("p", ["orders"]) for r in chunk] == ["1"]
    store.stage("p", "orders", run, [], {"cursor": "v3"})  # the read's last page: the cursor, no progress
    assert store.read_state("p", "orders") == {"cursor": "v3"}


def test_a_bulk_job_journal_an_older_ferry_kept_as_one_list_still_reads(store: Store) -> None:
    store.save_remote_job("p", "Contact", "750000000000001AAA", [JournalEntry("a", "v1", "ext-a")])
    store.add_remote_job_records("p", "Contact", "750000000000001AAA", [JournalEntry("b", "v1", "ext-b")])
    # A journal written before bulk_job_records: the entries are one JSON list in bulk_jobs.entries.
    db = sqlite3.connect(store.path)
    with db:
        db.execute(
            "INSERT INTO bulk_jobs (pipeline, object, job_id, entries, created_at) VALUES (?, ?, ?, ?, ?)",
            ("p", "Contact", "750000000000002AAA", b'[["d", "v1"]]', "2026-01-02T00:00:00.000000Z"),
        )
    db.close()
    jobs = {j.job_id: j.entries for j in store.remote_jobs("p", "Contact")}
    assert jobs == {"750000000000001AAA": [("a", "v1"), ("b", "v1")], "750000000000002AAA": [("d", "v1")]}
    store.forget_remote_job("p", "Contact", "750000000000002AAA")
    assert [j.job_id for j in store.remote_jobs("p")] == ["750000000000001AAA"]
