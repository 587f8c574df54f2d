"""The SQLite adapter's own behaviour (the backend-neutral contract is in tests/store/contract/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.store import JournalEntry, NewDeadLetter, PlannedRow, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def test_cursor_only_moves_forward(store: Store) -> None:
    store.advance_cursor("p", "orders", "2026-03-01T00:00:00.000000Z")
    store.advance_cursor("p", "orders", "2026-02-01T00:00:00.000000Z")
    assert store.get_cursor("p", "orders") == "2026-03-01T00:00:00.000000Z"
    store.advance_cursor("p", "orders", "2026-04-01T00:00:00.000000Z")
    assert store.get_cursor("p", "orders") == "2026-04-01T00:00:00.000000Z"


def test_reset_pipeline_forgets_only_that_pipeline(store: Store) -> None:
    store.advance_cursor("a", "orders", "x")
    store.advance_cursor("b", "orders", "x")
    store.reset_pipeline("a")
    assert store.get_cursor("a", "orders") is None
    assert store.get_cursor("b", "orders") == "x"


def test_state_survives_reopening(tmp_path: Path) -> None:
    first = Store(tmp_path / "s.db")
    first.advance_cursor("p", "orders", "v9")
    first.close()
    assert Store(tmp_path / "s.db").get_cursor("p", "orders") == "v9"


def test_a_job_answered_by_its_counts_records_only_its_queued_unfailed_rows(store: Store) -> None:
    # Journal: a..e (external ids A..E). b failed (stays queued for its retry), c is no longer queued,
    # d has a newer version queued since the job carried it, e was a dead letter.
    store.put_outbox("p", "Contact", [PlannedRow(k, "v1", {"LastName": k}) for k in "abde"])
    store.put_outbox("p", "Contact", [PlannedRow("d", "v2", {"LastName": "newer"})])
    store.dead_letter("p", None, [NewDeadLetter("Contact", "e", "v0", [{"code": "X", "message": "m", "fields": []}],
                                                None, None)])
    store.save_remote_job("p", "Contact", "750J", [JournalEntry(k, "v1", k.upper()) for k in "abcde"])
    written = store.record_job_written("p", "Contact", "750J", {"B"}, page=2)  # three journal pages
    assert written == 2  # a and e; d's newer version still goes out
    assert store.versions_for("p", "Contact", list("abcde")) == {"a": "v1", "e": "v1"}
    rows = {r.key: r.version for chunk in store.outbox("p", "Contact") for r in chunk}
    assert rows == {"b": "v1", "d": "v2"}
    assert store.dead_letter_keys("p", "Contact") == set()
    assert store.record_job_written("p", "Contact", "750J", set()) == 1  # now only b is left of the job
