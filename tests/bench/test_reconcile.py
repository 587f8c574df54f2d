"""The benchmark's reconciliation counts a fast wrong answer as wrong: missing, duplicated, wrong or extra records."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import reconcile

from ferry.sandbox.shopify.generator import generate_store


@pytest.fixture(scope="module")
def expected() -> reconcile.Expected:
    store = generate_store(seed=3, customers=40, products=10, orders=120)
    return reconcile.derive(store.customers, store.products, store.orders)


def _perfect_org(exp: reconcile.Expected) -> dict[str, list[dict[str, Any]]]:
    """What a correct contender leaves in Salesforce: every valid record once, right values, right parents."""
    ids = {obj: {key: f"{obj[:3]}{n:015d}" for n, key in enumerate(sorted(exp.valid(obj)))} for obj in exp.keys}
    org: dict[str, list[dict[str, Any]]] = {}
    for obj in reconcile.OBJECTS:
        rows = []
        for key in sorted(exp.valid(obj)):
            row = {"Id": ids[obj][key], reconcile.EXTERNAL_ID[obj]: key, **exp.values[obj][key]}
            for ref, (parent, pkey) in exp.parents[obj].get(key, {}).items():
                row[ref] = ids[parent][pkey or ""]
            rows.append(row)
        org[obj] = rows
    return org


def test_a_complete_and_correct_org_passes(expected: reconcile.Expected) -> None:
    check = reconcile.reconcile(expected, _perfect_org(expected))
    assert check.correct, check.summary()
    assert all(c.present == c.expected > 0 for c in check.objects.values())
    # The store is messy: some of every object but PricebookEntry's parents are invalid and must stay out.
    assert expected.invalid["Contact"] and expected.invalid["OrderItem"]


def _break(org: dict[str, list[dict[str, Any]]], how: str, exp: reconcile.Expected) -> dict[str, Any]:
    broken = copy.deepcopy(org)
    if how == "missing":
        broken["OrderItem"].pop()
    elif how == "duplicated":
        broken["Contact"].append(dict(broken["Contact"][0], Id="003dup"))
    elif how == "wrong value":
        broken["Order"][0]["Shopify_Total_Price__c"] += 0.01
    elif how == "wrong parent":
        broken["OrderItem"][0]["OrderId"] = broken["Order"][1]["Id"]
    elif how == "invalid written":
        bad_key = sorted(exp.invalid["Contact"])[0]
        broken["Contact"].append({"Id": "003bad", "Shopify_Customer_Id__c": bad_key})
    return broken


@pytest.mark.parametrize(
    ("how", "obj", "counter"),
    [
        ("missing", "OrderItem", "missing"),
        ("duplicated", "Contact", "duplicated"),
        ("wrong value", "Order", "wrong"),
        ("wrong parent", "OrderItem", "wrong"),
        ("invalid written", "Contact", "unexpected"),
    ],
)
def test_each_kind_of_wrong_answer_is_caught(expected: reconcile.Expected, how: str, obj: str, counter: str) -> None:
    check = reconcile.reconcile(expected, _break(_perfect_org(expected), how, expected))
    assert not check.correct
    assert getattr(check.objects[obj], counter) == 1, check.objects[obj]
    assert sum(getattr(c, n) for c in check.objects.values() for n in ("missing", "duplicated", "wrong",
                                                                        "unexpected")) == 1, check.summary()
