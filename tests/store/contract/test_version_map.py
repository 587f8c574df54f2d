"""Version map port: the newest version each key has in the target and the target's id for it; versions only
move forward, and a record that lands resolves its open dead letter."""

from __future__ import annotations

from ferry.store import PlannedRow, Written

from .conftest import Backend, letter


def test_versions_never_go_back_and_writing_resolves_dead_letters(store: Backend) -> None:
    store.dead_letter("p", None, [letter("Contact", "k")])
    assert store.dead_letter_keys("p", "Contact") == {"k"}
    store.record_written("p", "Contact", [Written("k", "v3", "003000000000001AAA")])
    store.record_written("p", "Contact", [Written("k", "v2", "003000000000002AAA")])
    assert store.versions_for("p", "Contact", ["k"]) == {"k": "v3"}
    assert store.target_ids("p", "Contact", ["k"]) == {"k": "003000000000001AAA"}
    assert store.dead_letter_keys("p", "Contact") == set()
    resolved = store.dead_letter_for("p", "Contact", "k")
    assert resolved is not None and (resolved.status, resolved.resolution) == ("resolved", "written")
    assert resolved.resolved_at


def test_a_write_without_the_target_s_id_keeps_the_known_one(store: Backend) -> None:
    store.record_written("p", "Contact", [Written("k", "v1", "003A")])
    store.record_written("p", "Contact", [Written("k", "v2")])  # a Bulk job answered by its counts says no id
    assert store.versions_for("p", "Contact", ["k"]) == {"k": "v2"}
    assert store.target_ids("p", "Contact", ["k"]) == {"k": "003A"}
    store.record_written("p", "Contact", [Written("n", "v1")])
    assert store.target_ids("p", "Contact", ["k", "n", "missing"]) == {"k": "003A"}


def test_the_id_map_is_looked_up_in_one_batch_per_object_and_pipeline(store: Backend) -> None:
    keys = [f"{i:05}" for i in range(1500)]
    store.record_written("p", "Account", [Written(k, "v1", f"001{k}") for k in keys])
    store.record_written("p", "Contact", [Written("00001", "v1", "003X")])
    store.record_written("q", "Account", [Written("00002", "v1", "001Q")])
    ids = store.target_ids("p", "Account", keys)
    assert len(ids) == 1500 and ids["00001"] == "00100001" and ids["00002"] == "00100002"
    assert store.versions_for("p", "Account", [*keys[:3], "nope"]) == dict.fromkeys(keys[:3], "v1")


def test_a_replayed_write_says_so_on_the_letter_it_resolves(store: Backend) -> None:
    store.dead_letter("p", None, [letter("Contact", "k")])
    store.record_written("p", "Contact", [Written("k", "v1")], "replayed")
    got = store.dead_letter_for("p", "Contact", "k")
    assert got is not None and (got.status, got.resolution) == ("resolved", "replayed")


def test_writing_resolves_only_the_open_letters_of_the_batch(store: Backend) -> None:
    store.dead_letter("p", 1, [letter("Contact", "b")])
    store.dead_letter("p", 1, [letter("Account", "a")])
    store.dead_letter("q", 1, [letter("Contact", "a")])
    store.put_outbox("p", "Contact", [PlannedRow(k, "v2", {}) for k in "abc"])
    written = [Written("a", "v2", "003A"), Written("b", "v2", "003B"), Written("c", "v2")]
    store.record_results("p", "Contact", 2, written, [], [("a", "v2"), ("b", "v2"), ("c", "v2")])
    statuses = [store.dead_letter_for(p, obj, k) for p, obj, k in (("p", "Contact", "b"), ("p", "Account", "a"),
                                                                    ("q", "Contact", "a"))]
    # Same key, other object or other pipeline: untouched.
    assert [d.status if d else None for d in statuses] == ["resolved", "open", "open"]
    assert store.outbox_count("p", "Contact") == 0


def test_one_batch_holding_several_versions_of_a_key_records_as_if_row_by_row(store: Backend) -> None:
    store.record_written(
        "p",
        "Contact",
        [Written("k", "v2", "003A"), Written("k", "v2"), Written("k", "v1", "003OLD"), Written("j", "v1", "003J")],
    )
    assert store.versions_for("p", "Contact", ["k", "j"]) == {"k": "v2", "j": "v1"}
    assert store.target_ids("p", "Contact", ["k", "j"]) == {"k": "003A", "j": "003J"}
    store.record_written("p", "Contact", [Written("k", "v2", "003B"), Written("k", "v2")])
    assert store.target_ids("p", "Contact", ["k"]) == {"k": "003B"}


def test_the_id_map_read_backwards_names_the_key_written_at_each_target_id(store: Backend) -> None:
    keys = [f"{i:05}" for i in range(1500)]  # past an IN list's part size
    store.record_written("p", "Account", [Written(k, "v1", f"001{k}") for k in keys])
    store.record_written("p", "Account", [Written("no-id", "v1")])
    store.record_written("q", "Account", [Written("other", "v1", "00100001")])  # another pipeline's map
    store.record_written("p", "Contact", [Written("contact", "v1", "00100002")])  # another object's map
    back = store.keys_for_targets("p", "Account", [f"001{k}" for k in keys] + ["001missing"])
    assert len(back) == 1500 and back["00100001"] == "00001" and back["00101499"] == "01499"
    assert store.keys_for_targets("p", "Account", []) == {}


def test_any_target_id_shows_the_form_of_an_objects_target_ids(store: Backend) -> None:
    # A two-way sync reads a GraphQL global id's type path from the peer's id map (engine/twoway.py).
    assert store.any_target_id("p", "Customer", "gid://") is None
    store.record_written("p", "Customer", [Written("001A", "v1", "gid://shopify/Customer/7"), Written("001B", "v1")])
    store.record_written("q", "Customer", [Written("001C", "v1", "gid://other/Customer/8")])  # another pipeline
    store.record_written("p", "Order", [Written("801A", "v1", "gid://shopify/Order/9")])  # another object
    assert store.any_target_id("p", "Customer", "gid://") == "gid://shopify/Customer/7"
    assert store.any_target_id("p", "Customer", "gid://*") is None  # the prefix is literal, not a pattern
    assert store.any_target_id("p", "Account", "gid://") is None
