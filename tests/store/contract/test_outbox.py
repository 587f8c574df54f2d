"""Outbox port: what is queued for the target, newest version per key; a chunk planned with its mark and a
batch's answers recorded are each all or nothing."""

from __future__ import annotations

import pytest

from ferry.store import FailedAttempt, JournalEntry, LetterFilter, PlannedRow, Written

from .conftest import Backend, letter, queued, seq_of, stage, unserialisable_letter

RAW = b'{"id": 7, "line_items": [{"id": 1}, {"id": 2}]}'
MARK = "planned_seq"


def test_a_newer_version_replaces_a_queued_one_and_an_older_never_does(store: Backend) -> None:
    store.put_outbox("p", "Contact", [PlannedRow("k", "v2", {"LastName": "new"})])
    store.put_outbox("p", "Contact", [PlannedRow("k", "v1", {"LastName": "old"})])
    rows = [r for chunk in store.outbox("p", "Contact") for r in chunk]
    assert [(r.version, r.payload["LastName"]) for r in rows] == [("v2", "new")]
    store.put_outbox("p", "Contact", [PlannedRow("k", "v3", {"LastName": "newest"})])
    rows = [r for chunk in store.outbox("p", "Contact") for r in chunk]
    assert [(r.version, r.payload["LastName"]) for r in rows] == [("v3", "newest")]


def test_a_newer_version_starts_its_attempts_afresh_and_the_same_version_keeps_them(store: Backend) -> None:
    store.put_outbox("p", "Contact", [PlannedRow("k", "v1", {"x": 1})])
    errors = [{"code": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}]
    store.record_results("p", "Contact", None, [], [], [], retry=[FailedAttempt("k", errors)])
    store.put_outbox("p", "Contact", [PlannedRow("k", "v1", {"x": 2})])  # read again at the same version
    (row,) = store.outbox_rows("p", "Contact", ["k"])
    assert (row.attempts, row.payload, row.history[0]["errors"]) == (1, {"x": 1}, errors)
    store.put_outbox("p", "Contact", [PlannedRow("k", "v2", {"x": 3})])
    (row,) = store.outbox_rows("p", "Contact", ["k"])
    assert (row.version, row.attempts, row.history) == ("v2", 0, [])


def test_removal_is_version_exact(store: Backend) -> None:
    store.put_outbox("p", "Contact", [PlannedRow("k", "v2", {"LastName": "new"})])
    store.record_results("p", "Contact", None, [], [], [("k", "v1")])  # an older delivery must not remove v2
    assert store.outbox_count("p", "Contact") == 1
    store.record_results("p", "Contact", None, [], [], [("k", "v2")])
    assert store.outbox_count("p", "Contact") == 0


def test_outbox_is_read_in_key_pages_unshifted_by_removals_and_counted_per_object(store: Backend) -> None:
    store.put_outbox("p", "Contact", [PlannedRow(f"k{i:02}", "v1", {"n": i}) for i in range(25)])
    store.put_outbox("p", "Account", [PlannedRow("a", "v1", {})])
    store.put_outbox("q", "Contact", [PlannedRow("k00", "v1", {})])
    seen: list[str] = []
    for chunk in store.outbox("p", "Contact", chunk=10):
        assert len(chunk) <= 10
        seen += [r.key for r in chunk]
        # The page just read is answered before the next is read, as the loader does.
        store.record_results("p", "Contact", None, [], [], [(r.key, r.version) for r in chunk])
    assert seen == [f"k{i:02}" for i in range(25)]
    assert (store.outbox_count("p"), store.outbox_count("p", "Contact"), store.outbox_count("q")) == (1, 0, 1)


def test_target_rows_of_one_source_record_share_its_staged_payload(store: Backend) -> None:
    stage(store, "p", "orders", [("7", "v1", RAW)])
    seq = seq_of(store, "p", "orders", "7")
    store.put_outbox(
        "p",
        "OrderItem",
        [PlannedRow("1", "v1", {"n": 1}, seq, "orders", "7"), PlannedRow("2", "v1", {"n": 2}, seq, "orders", "7")],
    )
    assert store.source_payloads("p", "OrderItem", ["1", "2"]) == {"1": RAW, "2": RAW}
    full = [r for chunk in store.outbox("p", "OrderItem") for r in chunk]
    assert [(r.source_payload, r.stream, r.source_key) for r in full] == [(RAW, "orders", "7")] * 2
    assert [r.source_payload for r in store.outbox_rows("p", "OrderItem", ["2"])] == [RAW]


def test_the_send_path_reads_the_outbox_without_source_payloads(store: Backend) -> None:
    store.put_outbox(
        "p", "Contact", [PlannedRow("a", "v1", {"x": 1}, b'{"id": 1}', "customers", "1"), PlannedRow("b", "v1", {})]
    )
    lean = [r for chunk in store.outbox("p", "Contact", with_source=False) for r in chunk]
    assert [(r.key, r.payload, r.source_payload, r.source_key) for r in lean] == [
        ("a", {"x": 1}, None, "1"),
        ("b", {}, None, None),
    ]
    assert store.outbox_rows("p", "Contact", ["a"], with_source=False)[0].source_payload is None
    assert store.source_payloads("p", "Contact", ["a", "b", "zz"]) == {"a": b'{"id": 1}', "b": None}


def test_many_keys_are_looked_up_at_once(store: Backend) -> None:
    keys = [f"k{i:04}" for i in range(1200)]  # past any backend's bound-parameter batch
    store.put_outbox("p", "Contact", [PlannedRow(k, "v1", {"k": k}, k.encode()) for k in keys])
    assert len(store.outbox_rows("p", "Contact", keys)) == 1200
    assert store.source_payloads("p", "Contact", keys) == {k: k.encode() for k in keys}


# -- commit_planned ------------------------------------------------------------------------------------------


def test_a_planned_chunk_is_queued_with_its_letters_and_its_mark(store: Backend) -> None:
    assert store.get_mark("p", MARK) == 0
    store.commit_planned(
        "p",
        1,
        {"Account": [PlannedRow("a", "v1", {"Name": "A"})], "Contact": [PlannedRow("c", "v1", {"LastName": "C"})]},
        [letter("Contact", "bad", code="INVALID_EMAIL_ADDRESS")],
        (MARK, 42),
    )
    assert (queued(store, "p", "Account"), queued(store, "p", "Contact")) == ({"a": "v1"}, {"c": "v1"})
    assert store.dead_letter_keys("p", "Contact") == {"bad"}
    assert store.get_mark("p", MARK) == 42
    store.commit_planned("p", 1, {}, [], (MARK, 7))  # a mark never goes back
    assert store.get_mark("p", MARK) == 42


@pytest.mark.parametrize("broken", ["letter", "row"])
def test_a_planned_chunk_is_all_or_nothing(store: Backend, broken: str) -> None:
    """Rows of two objects, letters and the mark: one of them cannot be stored, so none of them is."""
    store.commit_planned("p", 1, {"Account": [PlannedRow("a0", "v0", {})]}, [], (MARK, 10))
    letters = [letter("Contact", "bad")]
    contacts = [PlannedRow("c", "v1", {"LastName": "C"})]
    if broken == "letter":
        letters.append(unserialisable_letter("Contact", "worse"))
    else:
        contacts.append(PlannedRow("d", "v1", {"LastName": object()}))
    with pytest.raises(TypeError):
        store.commit_planned(
            "p", 1, {"Account": [PlannedRow("a", "v1", {"Name": "A"})], "Contact": contacts}, letters, (MARK, 20)
        )
    assert queued(store, "p", "Account") == {"a0": "v0"}
    assert queued(store, "p", "Contact") == {}
    assert store.find_dead_letters(LetterFilter(pipeline="p", status=None)) == []
    assert store.get_mark("p", MARK) == 10
    # The store is usable after the failed unit: the same chunk without the bad record goes through.
    store.commit_planned("p", 1, {"Contact": [PlannedRow("c", "v1", {"LastName": "C"})]}, [], (MARK, 20))
    assert (queued(store, "p", "Contact"), store.get_mark("p", MARK)) == ({"c": "v1"}, 20)


# -- record_results ------------------------------------------------------------------------------------------


def test_results_retries_and_the_remote_job_are_recorded_in_one_go(store: Backend) -> None:
    store.put_outbox(
        "p", "Contact", [PlannedRow("a", "v1", {"x": 1}, None, "customers", "a"), PlannedRow("b", "v1", {"x": 2})]
    )
    store.save_remote_job("p", "Contact", "750000000000001AAA", [JournalEntry("a", "v1"), JournalEntry("b", "v1")])
    assert [j.entries for j in store.remote_jobs("p", "Contact")] == [[("a", "v1"), ("b", "v1")]]
    errors = [{"code": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}]
    store.record_results(
        "p",
        "Contact",
        None,
        [Written("a", "v1", "003x")],
        [],
        [("a", "v1")],
        ["750000000000001AAA"],
        [FailedAttempt("b", errors)],
    )
    assert store.remote_jobs("p") == []
    (left,) = [r for chunk in store.outbox("p", "Contact") for r in chunk]
    assert (left.key, left.attempts, left.history[0]["errors"], left.history[0]["attempt"]) == ("b", 1, errors, 1)
    assert store.target_ids("p", "Contact", ["a", "b"]) == {"a": "003x"}
    store.record_results("p", "Contact", None, [], [], [], retry=[FailedAttempt("b", errors)])
    (left,) = store.outbox_rows("p", "Contact", ["b"])
    assert [h["attempt"] for h in left.history] == [1, 2] and left.attempts == 2


def test_a_failed_record_becomes_a_letter_and_leaves_the_outbox(store: Backend) -> None:
    stage(store, "p", "orders", [("7", "v1", RAW)])
    store.put_outbox("p", "Order", [PlannedRow("7", "v1", {"n": 7}, seq_of(store, "p", "orders", "7"), "orders", "7")])
    source = store.source_payloads("p", "Order", ["7"])["7"]
    store.record_results(
        "p", "Order", 3, [], [letter("Order", "7", source=source, mapped={"n": 7}, stream="orders")], [("7", "v1")]
    )
    assert store.outbox_count("p", "Order") == 0
    got = store.dead_letter_for("p", "Order", "7")
    assert got is not None and got.run_id == 3 and got.source_payload == {"id": 7, "line_items": [{"id": 1}, {"id": 2}]}


@pytest.mark.parametrize("broken", ["letter", "retry"])
def test_a_batch_s_answers_are_all_or_nothing(store: Backend, broken: str) -> None:
    store.put_outbox("p", "Contact", [PlannedRow(k, "v1", {"k": k}) for k in "abcd"])
    store.save_remote_job("p", "Contact", "750J", [JournalEntry(k, "v1", k.upper()) for k in "abcd"])
    store.dead_letter("p", 1, [letter("Contact", "a", "v0")])
    letters = [letter("Contact", "b")]
    retry = [FailedAttempt("c", [{"code": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}])]
    if broken == "letter":
        letters.append(unserialisable_letter("Contact", "d"))
    else:
        retry.append(FailedAttempt("d", [{"code": "X", "message": object(), "fields": []}]))
    with pytest.raises(TypeError):
        store.record_results(
            "p", "Contact", 2, [Written("a", "v1", "003A")], letters, [("a", "v1"), ("b", "v1")], ["750J"], retry
        )
    assert store.versions_for("p", "Contact", list("abcd")) == {}
    assert queued(store, "p", "Contact") == dict.fromkeys("abcd", "v1")
    assert [r.attempts for r in store.outbox_rows("p", "Contact", list("abcd"))] == [0, 0, 0, 0]
    assert store.dead_letter_keys("p", "Contact") == {"a"}
    assert [j.job_id for j in store.remote_jobs("p")] == ["750J"]


def test_one_batch_holding_several_versions_of_a_key_queues_as_if_row_by_row(store: Backend) -> None:
    store.put_outbox(
        "p",
        "Contact",
        [
            PlannedRow("k", "v1", {"n": 1}),
            PlannedRow("k", "v3", {"n": 3}),
            PlannedRow("k", "v2", {"n": 2}),
            PlannedRow("k", "v3", {"n": 33}),  # equal: never replaces
            PlannedRow("a", "v1", {"n": 0}),
        ],
    )
    rows = [r for chunk in store.outbox("p", "Contact") for r in chunk]
    assert [(r.key, r.version, r.payload) for r in rows] == [("a", "v1", {"n": 0}), ("k", "v3", {"n": 3})]
