"""Load waves: a child object joins its parent's wave only when every row names a parent the target holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from ferry.core.ports import PlannedRow, Written
from ferry.engine.plan import ObjectPlan, ParentRef
from ferry.engine.waves import load_waves
from ferry.store import Store

P = "p"
ACCOUNT_REF = ParentRef("Account", "AccountId", "Account.Ext__c")


def plan(name: str, parents: list[ParentRef] | None = None, external_id: str = "Ext__c") -> ObjectPlan:
    return ObjectPlan(name, "customer", external_id, cast(Any, None), cast(Any, None), parents or [])


def queue(store: Store, obj: str, rows: dict[str, dict[str, Any]]) -> None:
    planned = {obj: [PlannedRow(k, "v2", payload) for k, payload in rows.items()]}
    store.commit_planned(P, None, planned, [], ("planned_seq", 0))


def written(store: Store, obj: str, keys: list[str]) -> None:
    store.record_results(P, obj, None, [Written(k, "v1") for k in keys], [], [])


def names(waves: list[list[ObjectPlan]]) -> list[list[str]]:
    return [[p.name for p in wave] for wave in waves]


def test_children_of_parents_the_target_holds_go_with_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    written(store, "Account", ["1", "2"])
    queue(store, "Account", {"1": {"Ext__c": "1"}, "2": {"Ext__c": "2"}})
    queue(store, "Contact", {"1": {"Account.Ext__c": "1"}, "2": {"Account.Ext__c": "2"}, "3": {"Account.Ext__c": None}})
    plans = [plan("Contact", [ACCOUNT_REF]), plan("Account")]
    assert names(load_waves(store, P, plans)) == [["Account", "Contact"]]


def test_one_new_parent_keeps_the_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    written(store, "Account", ["1"])
    queue(store, "Account", {"1": {"Ext__c": "1"}, "9": {"Ext__c": "9"}})
    queue(store, "Contact", {"1": {"Account.Ext__c": "1"}, "9": {"Account.Ext__c": "9"}})
    plans = [plan("Account"), plan("Contact", [ACCOUNT_REF])]
    assert names(load_waves(store, P, plans)) == [["Account"], ["Contact"]]


def test_a_ref_by_another_field_or_missing_from_the_payload_keeps_the_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    written(store, "Account", ["1"])
    queue(store, "Contact", {"1": {"Account.Email__c": "1"}})
    by_email = [plan("Account"), plan("Contact", [ParentRef("Account", "AccountId", "Account.Email__c")])]
    assert names(load_waves(store, P, by_email)) == [["Account"], ["Contact"]]
    queue(store, "Opportunity", {"1": {"Name": "x"}})
    missing = [plan("Account"), plan("Opportunity", [ACCOUNT_REF])]
    assert names(load_waves(store, P, missing)) == [["Account"], ["Opportunity"]]


def test_grandchildren_wait_for_a_wave_with_a_new_parent(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    written(store, "Account", ["1"])
    queue(store, "Contact", {"1": {"Account.Ext__c": "1"}})
    queue(store, "Case", {"c1": {"Contact.Ext__c": "new"}})
    plans = [plan("Account"), plan("Contact", [ACCOUNT_REF]), plan("Case", [ParentRef("Contact", "ContactId",
                                                                                           "Contact.Ext__c")])]
    assert names(load_waves(store, P, plans)) == [["Account", "Contact"], ["Case"]]


def test_latency_sensitive_writes_go_in_concurrent_slices(tmp_path: Path) -> None:
    from ferry.engine.loader import LATENCY_PARALLEL, LATENCY_SLICE, Loader, RetryBudget
    from ferry.engine.stats import RunStats
    from ferry.store import OutboxRow

    store = Store(tmp_path / "ferry.db")
    loader = Loader(store, P, 1, RunStats(run_id=1, pipeline=P), RetryBudget(4, 1.0), latency_sensitive=True)

    def sizes(n: int) -> list[int]:
        rows = [OutboxRow(str(i), "v", {}, None, 0) for i in range(n)]
        slices = loader._latency_slices(cast(Any, None), plan("Contact"), rows, "collections")
        assert [r.key for part, _ in slices for r in part] == [r.key for r in rows]  # every row once, in order
        assert {how for _, how in slices} == {"collections"}
        return [len(part) for part, _ in slices]

    assert sizes(30) == [30]
    assert sizes(250) == [LATENCY_SLICE, LATENCY_SLICE, 50]
    assert sizes(4000) == [4000 // LATENCY_PARALLEL] * LATENCY_PARALLEL
