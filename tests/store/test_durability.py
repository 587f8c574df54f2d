"""State store: an older state DB keeps working, progress and results are recorded atomically, letters are
discarded with a reason (never deleted), and Bulk jobs in flight are remembered until their results are."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ferry.core.ports import StagedRow
from ferry.store import LetterFilter, NewDeadLetter, Store

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
    (letter,) = store.list_dead_letters(pipeline="p")
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


def test_results_retries_and_the_bulk_job_are_recorded_in_one_go(store: Store) -> None:
    store.put_outbox("p", "Contact", [("a", "v1", {"x": 1}, None, "customers", "a"), ("b", "v1", {"x": 2}, None)])
    store.save_bulk_job("p", "Contact", "750000000000001AAA", [("a", "v1"), ("b", "v1")])
    assert [j.entries for j in store.bulk_jobs("p", "Contact")] == [[("a", "v1"), ("b", "v1")]]
    errors = [{"code": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}]
    store.record_results(
        "p", "Contact", None, [("a", "v1", "003x")], [], [("a", "v1")], ["750000000000001AAA"], [("b", errors)]
    )
    assert store.bulk_jobs("p") == []
    (left,) = [r for chunk in store.outbox("p", "Contact") for r in chunk]
    assert (left.key, left.attempts, left.history[0]["errors"]) == ("b", 1, errors)
    assert store.target_id("p", "Contact", "a") == "003x"


def test_discard_keeps_the_letter_with_its_reason_and_filters_select(store: Store) -> None:
    store.dead_letter(
        "p",
        None,
        [
            NewDeadLetter(
                "Contact",
                "1",
                "v1",
                [{"code": "INVALID_EMAIL_ADDRESS", "message": "m", "fields": ["Email"]}],
                b'{"id": 1}',
                {"Email": "x"},
                "customers",
                "1",
            ),
            NewDeadLetter(
                "Order",
                "2",
                "v1",
                [{"code": "STRING_TOO_LONG", "message": "m", "fields": ["Name"]}],
                b'{"id": 2}',
                {"Name": "x"},
                "orders",
                "2",
            ),
        ],
    )
    assert [d.object for d in store.find_dead_letters(LetterFilter(code="STRING_TOO_LONG"))] == ["Order"]
    assert store.find_dead_letters(LetterFilter(since="2999-01-01T00:00:00.000000Z")) == []
    assert store.discard_dead_letters(LetterFilter(object="Contact"), "test customer, ignore") == 1
    assert store.discard_dead_letters(LetterFilter(object="Contact"), "again") == 0  # only open ones
    (gone,) = store.find_dead_letters(LetterFilter(status="discarded"))
    assert gone.resolution == "discarded: test customer, ignore" and gone.resolved_at
    assert len(store.find_dead_letters(LetterFilter(status=None))) == 2  # nothing deleted
    # Read again at the same version (an inclusive cursor does that): it stays discarded.
    store.dead_letter(
        "p",
        None,
        [
            NewDeadLetter(
                "Contact",
                "1",
                "v1",
                [{"code": "INVALID_EMAIL_ADDRESS", "message": "m", "fields": ["Email"]}],
                None,
                {"Email": "x"},
            )
        ],
    )
    again = store.dead_letter_for("p", "Contact", "1")
    assert again is not None and again.status == "discarded" and again.resolution == "discarded: test customer, ignore"
    # A new version failing again reopens it.
    store.dead_letter(
        "p",
        None,
        [
            NewDeadLetter(
                "Contact",
                "1",
                "v2",
                [{"code": "INVALID_EMAIL_ADDRESS", "message": "m", "fields": ["Email"]}],
                None,
                {"Email": "y"},
            )
        ],
    )
    reopened = store.dead_letter_for("p", "Contact", "1")
    assert reopened is not None and reopened.status == "open" and reopened.attempts == 3
    assert reopened.stream == "customers" and reopened.source_payload == {"id": 1}


def test_a_bulk_job_journal_grows_page_by_page_and_an_old_one_list_journal_still_reads(store: Store) -> None:
    store.save_bulk_job("p", "Contact", "750000000000001AAA", [("a", "v1", "ext-a")])
    store.add_bulk_job_records("p", "Contact", "750000000000001AAA", [("b", "v1", "ext-b"), ("c", "v2", "ext-c")])
    assert [j.entries for j in store.bulk_jobs("p", "Contact")] == [[("a", "v1"), ("b", "v1"), ("c", "v2")]]
    got = store.bulk_job_entries("p", "Contact", ["750000000000001AAA"], ["ext-c", "ext-a", "ext-z"])
    assert sorted(got) == [("ext-a", "a", "v1"), ("ext-c", "c", "v2")]
    # A journal written before bulk_job_records: the entries are one JSON list in bulk_jobs.entries.
    with store.transaction() as c:
        c.execute(
            "INSERT INTO bulk_jobs (pipeline, object, job_id, entries, created_at) VALUES (?, ?, ?, ?, ?)",
            ("p", "Contact", "750000000000002AAA", b'[["d", "v1"]]', "2026-01-02T00:00:00.000000Z"),
        )
    assert {j.job_id: j.entries for j in store.bulk_jobs("p", "Contact")}["750000000000002AAA"] == [("d", "v1")]
    store.record_results("p", "Contact", None, [], [], [], ["750000000000001AAA"])
    store.forget_bulk_job("p", "Contact", "750000000000002AAA")
    assert store.bulk_jobs("p") == []
    assert store.bulk_job_entries("p", "Contact", ["750000000000001AAA"], ["ext-a"]) == []


def test_the_send_path_reads_the_outbox_without_source_payloads(store: Store) -> None:
    store.put_outbox("p", "Contact", [("a", "v1", {"x": 1}, b'{"id": 1}', "customers", "1"), ("b", "v1", {}, None)])
    lean = [r for chunk in store.outbox("p", "Contact", with_source=False) for r in chunk]
    assert [(r.key, r.payload, r.source_payload, r.source_key) for r in lean] == [
        ("a", {"x": 1}, None, "1"),
        ("b", {}, None, None),
    ]
    assert store.outbox_rows("p", "Contact", ["a"], with_source=False)[0].source_payload is None
    assert store.source_payloads("p", "Contact", ["a", "b", "zz"]) == {"a": b'{"id": 1}', "b": None}
