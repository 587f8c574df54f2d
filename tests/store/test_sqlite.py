from __future__ import annotations

from pathlib import Path

import pytest

from ferry.core.ports import StagedRow
from ferry.store import NewDeadLetter, Store


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


def test_staging_keeps_one_copy_per_key_and_version(store: Store) -> None:
    run = store.start_run("p")
    assert store.stage("p", "orders", run, [StagedRow("1", "v1", b"{}"), StagedRow("2", "v1", b"{}")]) == 2
    assert store.stage("p", "orders", run, [StagedRow("1", "v1", b"{}"), StagedRow("1", "v2", b"{}")]) == 1
    staged = [r for chunk in store.staged("p", ["orders"], chunk=2) for r in chunk]
    assert [(r.key, r.version) for r in staged] == [("1", "v1"), ("2", "v1"), ("1", "v2")]


def test_outbox_keeps_newest_version_and_removal_is_version_exact(store: Store) -> None:
    store.put_outbox("p", "Contact", [("k", "v2", {"LastName": "new"}, None)])
    store.put_outbox("p", "Contact", [("k", "v1", {"LastName": "old"}, None)])
    rows = [r for chunk in store.outbox("p", "Contact") for r in chunk]
    assert [(r.version, r.payload["LastName"]) for r in rows] == [("v2", "new")]
    store.remove_outbox("p", "Contact", [("k", "v1")])  # an older delivery must not remove the newer entry
    assert store.outbox_count("p", "Contact") == 1
    store.remove_outbox("p", "Contact", [("k", "v2")])
    assert store.outbox_count("p", "Contact") == 0


def test_versions_never_go_back_and_writing_resolves_dead_letters(store: Store) -> None:
    store.dead_letter(
        "p", None, [NewDeadLetter("Contact", "k", "v1", [{"code": "X", "message": "m", "fields": []}], None, None)]
    )
    assert store.dead_letter_keys("p", "Contact") == {"k"}
    store.record_written("p", "Contact", [("k", "v3", "003000000000001AAA")])
    store.record_written("p", "Contact", [("k", "v2", None)])
    assert store.versions_for("p", "Contact", ["k"]) == {"k": "v3"}
    assert store.target_id("p", "Contact", "k") == "003000000000001AAA"
    assert store.dead_letter_keys("p", "Contact") == set()


def test_dead_letter_keeps_every_detail_and_counts_attempts(store: Store) -> None:
    err = {"code": "STRING_TOO_LONG", "message": "Contact 7: LastName is 95 characters, max 80", "fields": ["LastName"]}
    letter = NewDeadLetter("Contact", "7", "v1", [err], b'{"id": 7}', {"LastName": "x" * 95})
    store.dead_letter("p", 1, [letter])
    store.dead_letter("p", 2, [letter])
    [d] = store.list_dead_letters(pipeline="p")
    assert (d.error_code, d.fields, d.attempts, d.run_id) == ("STRING_TOO_LONG", ["LastName"], 2, 2)
    assert d.source_payload == {"id": 7} and d.mapped_payload == {"LastName": "x" * 95}
    assert store.get_dead_letter(d.id) is not None
    assert store.list_dead_letters(pipeline="p", code="OTHER") == []


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
    store.put_outbox("p", "Contact", [(k, "v1", {"LastName": k}, None) for k in "abde"])
    store.put_outbox("p", "Contact", [("d", "v2", {"LastName": "newer"}, None)])
    store.dead_letter("p", None, [NewDeadLetter("Contact", "e", "v0", [{"code": "X", "message": "m", "fields": []}],
                                                None, None)])
    store.save_bulk_job("p", "Contact", "750J", [(k, "v1", k.upper()) for k in "abcde"])
    written = store.record_job_written("p", "Contact", "750J", {"B"}, page=2)  # three journal pages
    assert written == 2  # a and e; d's newer version still goes out
    assert store.versions_for("p", "Contact", list("abcde")) == {"a": "v1", "e": "v1"}
    rows = {r.key: r.version for chunk in store.outbox("p", "Contact") for r in chunk}
    assert rows == {"b": "v1", "d": "v2"}
    assert store.dead_letter_keys("p", "Contact") == set()
    assert store.record_job_written("p", "Contact", "750J", set()) == 1  # now only b is left of the job
