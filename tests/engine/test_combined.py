"""Combined calls: how a micro-batch's outbox is cut into calls that write several objects at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from ferry.core.contracts import TogetherLimits
from ferry.core.ports import PlannedRow, Written
from ferry.core.results import RecordResult
from ferry.engine.combined import CallPart, plan_calls
from ferry.engine.loader import _children_wait
from ferry.engine.plan import ObjectPlan, ParentRef
from ferry.errors import RecordError
from ferry.store import Store

P = "p"
ACCOUNT_REF = ParentRef("Account", "AccountId", "Account.Ext__c")
SF = TogetherLimits(parts=5, records=200)


def plan(name: str, parents: list[ParentRef] | None = None) -> ObjectPlan:
    return ObjectPlan(name, "customer", "Ext__c", cast(Any, None), cast(Any, None), parents or [])


def queue(store: Store, obj: str, rows: dict[str, dict[str, Any]]) -> None:
    store.commit_planned(P, None, {obj: [PlannedRow(k, "v1", p) for k, p in rows.items()]}, [], ("planned_seq", 0))


def families(store: Store, n: int, start: int = 0) -> None:
    queue(store, "Account", {f"a{i}": {"Ext__c": f"a{i}"} for i in range(start, start + n)})
    queue(store, "Contact", {f"a{i}": {"Ext__c": f"a{i}", "Account.Ext__c": f"a{i}"} for i in range(start, start + n)})


def shape(groups: list[list[list[CallPart]]]) -> list[list[list[tuple[str, int]]]]:
    return [[[(p.plan.name, len(p.rows)) for p in call] for call in group] for group in groups]


def test_a_small_batch_is_one_call_parents_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    families(store, 30)
    groups = plan_calls(store, P, [plan("Contact", [ACCOUNT_REF]), plan("Account")], SF, 100)
    assert groups is not None and shape(groups) == [[[("Account", 30), ("Contact", 30)]]]


def test_a_larger_batch_is_calls_at_once_each_child_with_its_parent(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    families(store, 150)
    queue(store, "Contact", {"lone": {"Ext__c": "lone", "Account.Ext__c": "held-by-the-target"}})
    groups = plan_calls(store, P, [plan("Account"), plan("Contact", [ACCOUNT_REF])], SF, 100)
    assert groups is not None and len(groups) == 4  # 301 records, <= 100 a call
    for group in groups:
        assert len(group) == 1  # each group fits one call
        parts = {p.plan.name: p.rows for p in group[0]}
        assert [p.plan.name for p in group[0]] == ["Account", "Contact"]
        accounts = {r.key for r in parts["Account"]}
        # Every child whose parent is in the batch travels with it (its parent's subrequest runs first).
        assert all(r.payload["Account.Ext__c"] in accounts for r in parts["Contact"] if r.key != "lone")
    sent = [(p.plan.name, r.key) for g in groups for c in g for p in c for r in p.rows]
    assert len(sent) == len(set(sent)) == 301  # every row once


def test_a_group_larger_than_a_call_sends_its_calls_in_turn(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    queue(store, "Account", {f"a{i}": {"Ext__c": f"a{i}"} for i in range(10)})
    queue(store, "Contact", {f"c{i}": {"Ext__c": f"c{i}", "Account.Ext__c": f"a{i % 10}"} for i in range(300)})
    small = TogetherLimits(parts=2, records=100)
    groups = plan_calls(store, P, [plan("Account"), plan("Contact", [ACCOUNT_REF])], small, 1000)
    assert groups is not None
    # 310 records, <= 2 x 100 a call: 2 groups of 5 families (155 records) each; a family stays in its group, so
    # a group needs two calls, sent one after the other (the Accounts' call first).
    assert shape(groups) == [
        [[("Account", 5), ("Contact", 100)], [("Contact", 50)]],
        [[("Account", 5), ("Contact", 100)], [("Contact", 50)]],
    ]


def test_updates_of_records_the_target_holds_are_packed_full(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    families(store, 1000)
    store.record_results(P, "Account", None, [Written(f"a{i}", "v0") for i in range(1000)], [], [])
    plans = [plan("Account"), plan("Contact", [ACCOUNT_REF])]
    # Leaning to calls (records_per_call 1,000): 2,000 records in 2 calls of 5 full subrequests, sent at once.
    groups = plan_calls(store, P, plans, SF, 1000)
    assert groups is not None and shape(groups) == [[[("Account", 200)] * 5], [[("Contact", 200)] * 5]]
    small = Store(tmp_path / "small.db")
    families(small, 150)
    small.record_results(P, "Account", None, [Written(f"a{i}", "v0") for i in range(150)], [], [])
    groups = plan_calls(small, P, plans, SF, 100)  # the default: <= 100 records a call
    assert groups is not None
    assert sorted(shape(groups)) == sorted([[[("Account", 100)]], [[("Contact", 100)]], [[("Account", 50),
                                                                                          ("Contact", 50)]]])


def test_what_is_not_combined(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    assert plan_calls(store, P, [plan("Account")], SF, 100) is None  # nothing queued
    queue(store, "Contact", {"1": {"Ext__c": "1", "Account.Email__c": "x@example.com"}})
    by_email = ParentRef("Account", "AccountId", "Account.Email__c")
    assert plan_calls(store, P, [plan("Account"), plan("Contact", [by_email])], SF, 100) is None
    big = Store(tmp_path / "big.db")
    families(big, 1000)
    assert plan_calls(big, P, [plan("Account"), plan("Contact", [ACCOUNT_REF])], SF, 100) is None  # > 8 calls
    assert plan_calls(big, P, [plan("Account"), plan("Contact", [ACCOUNT_REF])], SF, 1000) is not None


def test_a_child_whose_parent_failed_in_the_same_call_waits_for_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    families(store, 2)
    groups = plan_calls(store, P, [plan("Account"), plan("Contact", [ACCOUNT_REF])], SF, 100)
    assert groups is not None
    contacts = groups[0][0][1]
    missing = RecordError("INVALID_FIELD", "Foreign key external ID: a0 not found", ["AccountId"])
    bad_own = RecordError("REQUIRED_FIELD_MISSING", "LastName", ["LastName"])
    results = [RecordResult("a0", False, errors=[missing]), RecordResult("a1", False, errors=[bad_own])]
    out = _children_wait(contacts, results, {"Account": {"a0"}})
    assert out[0].transient and out[0].errors[0].code == "PARENT_FAILED" and "Foreign key" in out[0].errors[0].message
    assert out[1] is results[1]  # its parent was written: its own error stands
