"""The SQLite adapter's own behaviour (the backend-neutral contract is in tests/store/contract/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.core.ports import StagedRow
from ferry.store import JournalEntry, NewDeadLetter, PlannedRow, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def test_a_read_state_is_the_last_one_staged_per_stream(store: Store) -> None:
    assert store.read_state("p", "orders") is None
    store.stage("p", "orders", 1, [], {"cursor": "2026-03-01T00:00:00.000000Z", "read": {"pages": 1}})
    store.stage("p", "orders", 1, [StagedRow("1", "v1", b"{}")], {"cursor": "2026-03-01T00:00:00.000000Z"})
    store.stage("p", "customers", 1, [StagedRow("2", "v1", b"{}")], {"offset": 7})
    store.stage("p", "orders", 1, [StagedRow("3", "v1", b"{}")])  # no state: the saved one stays
    assert store.read_state("p", "orders") == {"cursor": "2026-03-01T00:00:00.000000Z"}
    assert store.read_state("p", "customers") == {"offset": 7}


def test_reset_pipeline_forgets_only_that_pipeline(store: Store) -> None:
    store.stage("a", "orders", 1, [], {"cursor": "x"})
    store.stage("b", "orders", 1, [], {"cursor": "x"})
    store.reset_pipeline("a")
    assert store.read_state("a", "orders") is None
    assert store.read_state("b", "orders") == {"cursor": "x"}


def test_state_survives_reopening(tmp_path: Path) -> None:
    first = Store(tmp_path / "s.db")
    first.stage("p", "orders", 1, [], {"cursor": "v9"})
    first.close()
    assert Store(tmp_path / "s.db").read_state("p", "orders") == {"cursor": "v9"}


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
