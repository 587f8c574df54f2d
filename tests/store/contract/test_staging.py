"""Staging port: each raw source record kept once per (key, version), read in arrival order a page at a time,
cleared once loaded except what a queued row still points at."""

from __future__ import annotations

from ferry.store import LetterFilter, PlannedRow

from .conftest import Backend, letter, seq_of, stage

RAW = b'{"id": 7, "line_items": [{"id": 1}, {"id": 2}]}'


def test_staging_keeps_one_copy_per_key_and_version(store: Backend) -> None:
    run = store.start_run("p")
    assert stage(store, "p", "orders", [("1", "v1", b"{}"), ("2", "v1", b"{}")], run) == 2
    assert stage(store, "p", "orders", [("1", "v1", b"{}"), ("1", "v2", b"{}")], run) == 1
    staged = [r for chunk in store.staged("p", ["orders"], chunk=2) for r in chunk]
    assert [(r.key, r.version) for r in staged] == [("1", "v1"), ("2", "v1"), ("1", "v2")]


def test_staged_records_are_read_in_arrival_order_after_a_seq_per_stream(store: Backend) -> None:
    stage(store, "p", "orders", [("o1", "v1", b"1"), ("o2", "v1", b"2")])
    stage(store, "p", "customers", [("c1", "v1", b"3")])
    stage(store, "p", "orders", [("o3", "v1", b"4")])
    stage(store, "q", "orders", [("o1", "v1", b"5")])
    every = [r for chunk in store.staged("p", ["orders", "customers"], chunk=2) for r in chunk]
    assert [(r.stream, r.key, r.payload) for r in every] == [
        ("orders", "o1", b"1"), ("orders", "o2", b"2"), ("customers", "c1", b"3"), ("orders", "o3", b"4"),
    ]
    seqs = [r.seq for r in every]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert [r.key for chunk in store.staged("p", ["orders"], after=seqs[1]) for r in chunk] == ["o3"]
    assert (store.staged_count("p"), store.staged_count("p", after=seqs[1]), store.staged_count("q")) == (4, 2, 1)
    assert store.max_staged_seq("p") == seqs[-1] and store.max_staged_seq("nobody") == 0
    assert list(store.staged("p", ["orders"], after=seqs[-1])) == []


def test_clearing_staging_keeps_a_record_an_outbox_row_still_points_at(store: Backend) -> None:
    stage(store, "p", "orders", [("7", "v1", RAW), ("8", "v1", b'{"id": 8}')])
    seq = seq_of(store, "p", "orders", "7")
    store.put_outbox("p", "Order", [PlannedRow("7", "v1", {"n": 7}, seq, "orders", "7")])
    store.clear_staging("p", store.max_staged_seq("p"))
    # Order 7 is still queued (a later attempt): its source must survive the clear; order 8's need not.
    assert [r.key for chunk in store.staged("p", ["orders"]) for r in chunk] == ["7"]
    row = store.outbox_rows("p", "Order", ["7"], with_source=False)[0]
    source = store.source_payloads("p", "Order", ["7"])["7"]
    store.record_results("p", "Order", 1, [], [letter("Order", "7", source=source, mapped=row.payload)], [("7", "v1")])
    got = store.dead_letter_for("p", "Order", "7")
    assert got is not None and got.source_payload == {"id": 7, "line_items": [{"id": 1}, {"id": 2}]}
    store.clear_staging("p", store.max_staged_seq("p"))  # the row has left: its source goes with the next clear
    assert store.staged_count("p") == 0
    assert len(store.find_dead_letters(LetterFilter(pipeline="p"))) == 1


def test_clearing_stops_at_the_seq_given_and_at_the_pipeline(store: Backend) -> None:
    stage(store, "p", "orders", [("1", "v1", b"{}"), ("2", "v1", b"{}")])
    stage(store, "q", "orders", [("1", "v1", b"{}")])
    store.clear_staging("p", seq_of(store, "p", "orders", "1"))
    assert [r.key for chunk in store.staged("p", ["orders"]) for r in chunk] == ["2"]
    assert store.staged_count("q") == 1


def test_a_raw_payload_given_in_place_of_a_staged_record_is_kept_with_the_row(store: Backend) -> None:
    store.put_outbox("p", "Contact", [PlannedRow("k", "v1", {"x": 1}, b'{"id": 1}', "customers", "1")])
    store.clear_staging("p", 10**9)
    assert store.source_payloads("p", "Contact", ["k"]) == {"k": b'{"id": 1}'}


def test_payloads_come_back_byte_for_byte_whatever_their_size(store: Backend) -> None:
    # Pages travel as binary bytea arrays on PostgreSQL (docs/store.md): every byte value, NULs and a large payload
    # round-trip exactly through staging, the outbox's source payload and a plain outbox payload.
    every_byte = bytes(range(256)) * 4
    big = b'{"blob": "' + b"x\\\"\xc3\xa9" * 50_000 + b'"}'
    stage(store, "p", "orders", [("1", "v1", every_byte), ("2", "v1", big), ("3", "v1", b"")])
    staged = {r.key: r.payload for chunk in store.staged("p", ["orders"]) for r in chunk}
    assert staged == {"1": every_byte, "2": big, "3": b""}
    store.put_outbox("p", "Order", [PlannedRow("a", "v1", {"n": "\x00é"}, every_byte, "orders", "1"),
                                    PlannedRow("b", "v1", {}, seq_of(store, "p", "orders", "2"), "orders", "2")])
    assert store.source_payloads("p", "Order", ["a", "b"]) == {"a": every_byte, "b": big}
    assert {r.key: r.payload for chunk in store.outbox("p", "Order") for r in chunk} == {"a": {"n": "\x00é"}, "b": {}}
