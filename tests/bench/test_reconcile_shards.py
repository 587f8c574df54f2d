"""The streamed reconciliation (SQLite on disk, shard by shard) catches what the in-memory one catches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from ferry.sandbox.shopify.generator import generate_shards

from .test_reconcile import _break, _perfect_org, reconcile

SIZES = {"customers": 80, "products": 20, "orders": 240}


@pytest.fixture(scope="module")
def shards() -> list[tuple[list[Any], list[Any], list[Any]]]:
    return [(s.customers, s.products, s.orders) for s in generate_shards(seed=3, **SIZES, shard_orders=80)]


@pytest.fixture(scope="module")
def whole(shards: list[tuple[list[Any], ...]]) -> reconcile.Expected:
    """The expectation over the whole store at once (the shards concatenated)."""
    return reconcile.derive(*([r for s in shards for r in s[k]] for k in range(3)))


def _check(tmp_path: Path, org: dict[str, list[dict[str, Any]]], shards: list[Any]) -> reconcile.Reconciliation:
    dump = reconcile.TargetDump(tmp_path / "target.db")
    for obj in reconcile.OBJECTS:
        dump.load(obj, (orjson.dumps(row) for row in org.get(obj, [])))
    dump.index()
    return reconcile.reconcile_shards(dump, iter(shards))


def test_shards_are_independent_and_a_correct_org_passes(tmp_path: Path, shards: list[Any],
                                                          whole: reconcile.Expected) -> None:
    assert len(shards) == 3
    check = _check(tmp_path, _perfect_org(whole), shards)
    assert check.correct, check.summary()
    # Shard by shard adds up to the whole store's expectation: no record refers across shards.
    assert {o: c.expected for o, c in check.objects.items()} == {o: len(whole.valid(o)) for o in reconcile.OBJECTS}
    assert all(c.present == c.expected > 0 for c in check.objects.values())


@pytest.mark.parametrize(
    ("how", "obj", "counter"),
    [
        ("missing", "OrderItem", "missing"),
        ("duplicated", "Contact", "duplicated"),
        ("wrong value", "Order", "wrong"),
        ("wrong parent", "OrderItem", "wrong"),
        ("invalid written", "Contact", "unexpected"),
        ("unknown key", "Account", "unexpected"),
    ],
)
def test_each_kind_of_wrong_answer_is_caught(tmp_path: Path, shards: list[Any], whole: reconcile.Expected,
                                             how: str, obj: str, counter: str) -> None:
    if how == "unknown key":
        org = _perfect_org(whole)
        org["Account"].append({"Id": "001nosuch", "Shopify_Customer_Id__c": "no-such-customer"})
    else:
        org = _break(_perfect_org(whole), how, whole)
    check = _check(tmp_path, org, shards)
    assert not check.correct
    assert getattr(check.objects[obj], counter) == 1, check.objects[obj]
    assert sum(getattr(c, n) for c in check.objects.values() for n in ("missing", "duplicated", "wrong",
                                                                        "unexpected")) == 1, check.summary()
