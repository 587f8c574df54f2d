"""Read-checkpoint port: a stream's read state is the source's own JSON, saved in the transaction that stages the
page it follows, so a restarted run continues exactly after the last staged page."""

from __future__ import annotations

import pytest

from ferry.errors import ReadSuperseded
from ferry.store import StagedRow

from .conftest import Backend, BackendFactory


def test_a_stream_has_no_state_before_its_first_page(store: Backend) -> None:
    assert store.read_state("p", "orders") is None


def test_the_state_is_the_one_saved_with_the_last_staged_page(store: Backend) -> None:
    store.stage("p", "orders", 1, [StagedRow("1", "v1", b"{}")], {"read": {"offset": 100}, "cursor": None})
    store.stage("p", "orders", 1, [StagedRow("2", "v1", b"{}")], {"read": {"offset": 200}, "cursor": None})
    assert store.read_state("p", "orders") == {"read": {"offset": 200}, "cursor": None}
    store.stage("p", "orders", 1, [], {"cursor": "2026-03-01T00:00:00.000000Z"})  # a read's last page: its cursor
    assert store.read_state("p", "orders") == {"cursor": "2026-03-01T00:00:00.000000Z"}


def test_states_are_kept_per_pipeline_and_stream_and_nested_json_round_trips(store: Backend) -> None:
    nested = {"format": 2, "tail": [["7", "v1"], ["8", "v2"]], "newest": None, "ok": True, "n": 1.5, "é": "ü"}
    store.stage("p", "orders", 1, [], nested)
    store.stage("p", "customers", 1, [], {"cursor": "c"})
    store.stage("q", "orders", 1, [], {"cursor": "q"})
    assert store.read_state("p", "orders") == nested
    assert (store.read_state("p", "customers"), store.read_state("q", "orders")) == ({"cursor": "c"}, {"cursor": "q"})


def test_a_read_of_an_earlier_run_cannot_move_a_state_a_later_run_saved(store: Backend) -> None:
    store.stage("p", "orders", 1, [StagedRow("1", "v1", b"{}")], {"read": {"offset": 100}})  # run 1 reading
    store.stage("p", "orders", 2, [], {"read": {"op": "new"}})  # run 2's prepare: the stream is its own now
    with pytest.raises(ReadSuperseded) as refused:  # run 1's reader, still going, stages its next page
        store.stage("p", "orders", 1, [StagedRow("2", "v1", b"{}")], {"read": {"offset": 200}})
    assert (refused.value.stream, refused.value.run_id) == ("orders", 1)
    assert store.read_state("p", "orders") == {"read": {"op": "new"}}
    assert [r.key for chunk in store.staged("p", ["orders"]) for r in chunk] == ["1"]  # its page rolled back too
    store.stage("p", "orders", 1, [StagedRow("3", "v1", b"{}")], None)  # rows alone move no state: not fenced
    store.stage("p", "orders", 0, [], {"cursor": "event"})  # no run (a change feed): saved, fence kept
    with pytest.raises(ReadSuperseded):
        store.stage("p", "orders", 1, [], {"read": {"offset": 300}})
    store.stage("p", "orders", 3, [], {"cursor": "run 3"})  # a later run takes over
    store.stage("p", "customers", 1, [], {"cursor": "c"})  # per stream
    assert (store.read_state("p", "orders"), store.read_state("p", "customers")) == ({"cursor": "run 3"},
                                                                                      {"cursor": "c"})


def test_staging_without_a_state_keeps_the_saved_one(store: Backend) -> None:
    store.stage("p", "orders", 1, [], {"cursor": "v1"})
    store.stage("p", "orders", 1, [StagedRow("1", "v1", b"{}")], None)
    assert store.read_state("p", "orders") == {"cursor": "v1"}


def test_a_page_and_its_state_are_saved_together_or_not_at_all(store: Backend) -> None:
    store.stage("p", "orders", 1, [StagedRow("1", "v1", b"{}")], {"read": {"page": 1}})
    with pytest.raises(TypeError):  # a state that cannot be stored as JSON fails the whole page
        store.stage("p", "orders", 1, [StagedRow("2", "v1", b"{}")], {"read": {"page": object()}})
    assert store.read_state("p", "orders") == {"read": {"page": 1}}
    assert [r.key for chunk in store.staged("p", ["orders"]) for r in chunk] == ["1"]


def test_another_handle_sees_the_state_and_reset_forgets_it(backend: BackendFactory) -> None:
    first = backend.open()
    first.stage("p", "orders", 1, [], {"cursor": "v9"})
    first.stage("other", "orders", 1, [], {"cursor": "v1"})
    first.close()
    second = backend.open()
    try:
        assert second.read_state("p", "orders") == {"cursor": "v9"}
        second.reset_pipeline("p")
        assert second.read_state("p", "orders") is None
        assert second.read_state("other", "orders") == {"cursor": "v1"}
    finally:
        second.close()
