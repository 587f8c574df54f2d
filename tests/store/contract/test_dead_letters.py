"""Dead-letter port: every detail kept, attempts counted, never deleted: discarded with a reason, resolved when
the record lands, reopened by a new version that fails again."""

from __future__ import annotations

from dataclasses import replace

from ferry.store import LetterFilter, NewDeadLetter

from .conftest import Backend, letter


def test_dead_letter_keeps_every_detail_and_counts_attempts(store: Backend) -> None:
    err = {"code": "STRING_TOO_LONG", "message": "Contact 7: LastName is 95 characters, max 80", "fields": ["LastName"]}
    other = {"code": "INVALID_EMAIL_ADDRESS", "message": "bad email", "fields": ["Email"]}
    history = [{"attempt": 1, "at": "2026-01-01T00:00:00.000000Z", "errors": [err]}]
    new = NewDeadLetter("Contact", "7", "v1", [err, other], b'{"id": 7}', {"LastName": "x" * 95}, "customers", "7",
                        history)
    store.dead_letter("p", 1, [new])
    store.dead_letter("p", 2, [new])
    [d] = store.find_dead_letters(LetterFilter(pipeline="p"))
    assert (d.error_code, d.fields, d.attempts, d.run_id, d.status) == (
        "STRING_TOO_LONG", ["Email", "LastName"], 2, 2, "open"
    )
    assert d.message == "Contact 7: LastName is 95 characters, max 80; bad email"
    assert d.errors == [err, other] and d.history == history
    assert d.source_payload == {"id": 7} and d.mapped_payload == {"LastName": "x" * 95}
    assert (d.stream, d.source_key, d.version, d.object, d.record_key) == ("customers", "7", "v1", "Contact", "7")
    assert d.first_seen <= d.last_seen
    assert store.get_dead_letter(d.id) == d
    assert store.dead_letter_for("p", "Contact", "7") == d
    assert store.get_dead_letter(d.id + 1000) is None and store.dead_letter_for("p", "Contact", "8") is None


def test_a_letter_seen_again_without_its_source_keeps_the_one_it_had(store: Backend) -> None:
    store.dead_letter("p", 1, [letter("Contact", "1", source=b'{"id": 1}', stream="customers", source_key="1")])
    store.dead_letter("p", 2, [letter("Contact", "1", "v2")])
    got = store.dead_letter_for("p", "Contact", "1")
    assert got is not None and (got.source_payload, got.stream, got.version) == ({"id": 1}, "customers", "v2")


def test_discard_keeps_the_letter_with_its_reason_and_filters_select(store: Backend) -> None:
    store.dead_letter(
        "p",
        None,
        [
            letter("Contact", "1", code="INVALID_EMAIL_ADDRESS", source=b'{"id": 1}', mapped={"Email": "x"},
                   stream="customers", source_key="1"),
            letter("Order", "2", code="STRING_TOO_LONG", source=b'{"id": 2}', mapped={"Name": "x"}, stream="orders"),
        ],
    )
    assert [d.object for d in store.find_dead_letters(LetterFilter(code="STRING_TOO_LONG"))] == ["Order"]
    assert store.find_dead_letters(LetterFilter(since="2999-01-01T00:00:00.000000Z")) == []
    assert store.discard_dead_letters(LetterFilter(object="Contact"), "test customer, ignore") == 1
    assert store.discard_dead_letters(LetterFilter(object="Contact"), "again") == 0  # only open ones
    (gone,) = store.find_dead_letters(LetterFilter(status="discarded"))
    assert gone.resolution == "discarded: test customer, ignore" and gone.resolved_at
    assert len(store.find_dead_letters(LetterFilter(status=None))) == 2  # nothing deleted
    assert store.dead_letter_keys("p", "Contact") == set()  # open ones only
    # Read again at the same version (an inclusive cursor does that): it stays discarded.
    store.dead_letter("p", None, [letter("Contact", "1", code="INVALID_EMAIL_ADDRESS", mapped={"Email": "x"})])
    again = store.dead_letter_for("p", "Contact", "1")
    assert again is not None and again.status == "discarded" and again.resolution == "discarded: test customer, ignore"
    # A new version failing again reopens it.
    store.dead_letter("p", None, [letter("Contact", "1", "v2", code="INVALID_EMAIL_ADDRESS", mapped={"Email": "y"})])
    reopened = store.dead_letter_for("p", "Contact", "1")
    assert reopened is not None and reopened.status == "open" and reopened.attempts == 3
    assert reopened.stream == "customers" and reopened.source_payload == {"id": 1}
    assert reopened.resolution is None and reopened.resolved_at is None


def test_filters_combine_and_a_limit_caps_the_list(store: Backend) -> None:
    store.dead_letter("p", 1, [letter("Contact", str(i), code="A" if i % 2 else "B") for i in range(10)])
    store.dead_letter("q", 1, [letter("Contact", "x", code="A")])
    assert len(store.find_dead_letters(LetterFilter(pipeline="p", code="A"))) == 5
    assert len(store.find_dead_letters(LetterFilter(code="A"))) == 6
    assert len(store.find_dead_letters(LetterFilter(pipeline="p"), limit=3)) == 3
    ids = [d.id for d in store.find_dead_letters(LetterFilter(pipeline="p"))]
    assert ids == sorted(ids)  # oldest first
    picked = store.find_dead_letters(LetterFilter(ids=ids[:2]))
    assert [d.id for d in picked] == ids[:2]
    assert store.find_dead_letters(LetterFilter(pipeline="p", ids=ids[:2], code="A")) == [picked[1]]
    assert store.count_dead_letters("p") == {"Contact": 10}
    assert store.count_dead_letters() == {"Contact": 11}
    store.discard_dead_letters(LetterFilter(pipeline="p", code="B"), "noise")
    assert store.count_dead_letters("p") == {"Contact": 5}
    assert store.count_dead_letters("p", status="discarded") == {"Contact": 5}


def test_lean_letters_leave_the_source_payload_to_a_second_look(store: Backend) -> None:
    store.dead_letter("p", 1, [
        letter("Contact", "1", source=b'{"id": 1, "note": "big"}', mapped={"Email": "x"}, stream="customers",
               source_key="1"),
        letter("Contact", "2", mapped={"Email": "y"}),
    ])
    full = store.find_dead_letters(LetterFilter(pipeline="p"))
    lean = store.find_dead_letters_lean(LetterFilter(pipeline="p"))
    assert [d.source_payload for d in lean] == [None, None]
    assert [replace(d, source_payload=None) for d in full] == lean  # everything else as find_dead_letters gives it
    assert store.dead_letter_source_payloads([d.id for d in lean] + [999]) == {full[0].id: {"id": 1, "note": "big"}}
    assert store.dead_letter_source_payloads([]) == {}
