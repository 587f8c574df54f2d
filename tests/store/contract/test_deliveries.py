"""Deliveries port: an inbound event's records staged together with its delivery key, once; a duplicate
delivery stores nothing; keys are forgotten after the retention; runs carry their origin."""

from __future__ import annotations

import pytest

from ferry.core.ports import RUN_ORIGINS
from ferry.store import LetterFilter, StagedRow

from .conftest import Backend, letter


def _rows(*pairs: tuple[str, str]) -> list[StagedRow]:
    return [StagedRow(k, v, b'{"id": %s}' % k.encode()) for k, v in pairs]


def test_a_delivery_is_staged_with_its_key_once(store: Backend) -> None:
    assert store.accept_delivery("p", "shopify:w1", "orders", _rows(("1", "v1"), ("2", "v1"))) is True
    assert store.delivery_seen("p", "shopify:w1") and not store.delivery_seen("q", "shopify:w1")
    # The sender's retry of the same delivery: acknowledged by the caller, nothing stored again.
    assert store.accept_delivery("p", "shopify:w1", "orders", _rows(("3", "v1"))) is False
    staged = [(r.stream, r.key, r.version) for chunk in store.staged("p", ["orders"]) for r in chunk]
    assert staged == [("orders", "1", "v1"), ("orders", "2", "v1")]
    assert store.read_state("p", "orders") is None  # a delivery never moves the batch read's cursor


def test_another_delivery_of_a_staged_version_keeps_one_copy(store: Backend) -> None:
    assert store.accept_delivery("p", "a", "orders", _rows(("1", "v1")))
    assert store.accept_delivery("p", "b", "orders", _rows(("1", "v1"), ("1", "v2")))
    assert [(r.key, r.version) for chunk in store.staged("p", ["orders"]) for r in chunk] == [("1", "v1"), ("1", "v2")]


def test_a_delivery_can_carry_dead_letters_only(store: Backend) -> None:
    bad = letter("webhook", "d1")
    assert store.accept_delivery("p", "d1", None, [], [bad]) is True
    assert store.accept_delivery("p", "d1", None, [], [bad]) is False
    letters = store.find_dead_letters(LetterFilter(pipeline="p"))
    assert [(d.object, d.record_key) for d in letters] == [("webhook", "d1")]
    assert store.staged_count("p") == 0


def test_delivery_keys_are_forgotten_after_the_retention(store: Backend) -> None:
    store.accept_delivery("p", "old", "orders", _rows(("1", "v1")))
    assert store.prune_deliveries("1970-01-01T00:00:00Z") == 0
    assert store.delivery_seen("p", "old")
    assert store.prune_deliveries("9999-01-01T00:00:00Z") == 1
    assert not store.delivery_seen("p", "old")
    assert store.accept_delivery("p", "old", "orders", _rows(("1", "v1")))


@pytest.mark.parametrize("origin", RUN_ORIGINS)
def test_a_run_keeps_its_origin(store: Backend, origin: str) -> None:
    run = store.start_run("p", origin=origin)
    got = store.get_run(run)
    assert got is not None and got.origin == origin
    assert store.list_runs("p")[0].origin == origin


def test_a_run_without_origin_is_manual_and_an_unknown_one_is_refused(store: Backend) -> None:
    got = store.get_run(store.start_run("p"))
    assert got is not None and got.origin == "manual"
    with pytest.raises(ValueError, match="origin"):
        store.start_run("p", origin="cron")
