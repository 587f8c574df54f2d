"""The reconciliation against a clean run finds each way an org can be wrong (it must be able to fail)."""

from __future__ import annotations

import copy
from typing import Any

from ferry.store import DeadLetter
from tests.chaos.reconcile import Reconciliation, reconcile_with_reference
from tests.e2e.test_sync_fidelity import OBJECTS

EXT = {o: f"Ext_{o}__c" for o in OBJECTS}
FIELDS = {o: [EXT[o], "Name", "AccountId"] for o in OBJECTS}
KEYS: dict[str, set[str]] = {o: set() for o in OBJECTS} | {"Account": {"1", "2", "3"}, "Contact": {"1", "2", "3"}}


def _letter(obj: str, key: str, code: str, field: str) -> DeadLetter:
    return DeadLetter(0, "chaos", 1, obj, key, None, code, "refused", [field],
                      [{"code": code, "fields": [field]}], None, None, 1, "", "", "open")


def _org(prefix: str, names: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Accounts 1 and 2 (3 is invalid), each with a Contact pointing at it; Ids differ per org."""
    records: dict[str, list[dict[str, Any]]] = {o: [] for o in OBJECTS}
    for key in ("1", "2"):
        records["Account"].append({"Id": f"{prefix}A{key}", EXT["Account"]: key, "Name": f"Acme {key}"})
        records["Contact"].append({"Id": f"{prefix}C{key}", EXT["Contact"]: key, "Name": names.get(key, "Ann"),
                                   "AccountId": f"{prefix}A{key}"})
    return records


CLEAN = (_org("clean", {}), [_letter("Account", "3", "STRING_TOO_LONG", "Name"),
                             _letter("Contact", "3", "PARENT_DEAD_LETTERED", "AccountId")])


def _reconcile(records: dict[str, list[dict[str, Any]]], letters: list[DeadLetter] | None = None,
               newest: dict[str, dict[str, dict[str, Any]]] | None = None) -> Reconciliation:
    return reconcile_with_reference(KEYS, EXT, FIELDS, records, CLEAN[1] if letters is None else letters,
                                    CLEAN, newest or {}, {"Contact": {"2"}})


def test_an_org_as_the_clean_run_left_it_is_clean() -> None:
    r = _reconcile(_org("chaos", {}))
    assert r.clean and r.total("invalid") == r.total("invalid_right_reason") == 2


def test_lost_duplicated_stale_and_wrong_references_are_each_found() -> None:
    org = _org("chaos", {"2": "Old name"})
    org["Contact"].append(copy.deepcopy(org["Contact"][0]))  # the same external id twice
    org["Contact"][0]["AccountId"] = "chaosA2"  # points at another account
    org["Account"].pop(0)
    r = _reconcile(org)
    assert not r.clean
    assert r.objects["Account"].lost == 1 and r.objects["Contact"].duplicated == 1
    assert r.objects["Contact"].wrong == 2 and r.objects["Contact"].stale == 1


def test_a_wrong_reason_or_a_valid_record_dead_lettered_is_found() -> None:
    letters = [_letter("Account", "3", "INVALID_FIELD", "Name"), _letter("Contact", "2", "UNKNOWN", "Name"),
               CLEAN[1][1]]
    org = _org("chaos", {})
    org["Contact"].pop(1)
    r = _reconcile(org, letters)
    assert r.objects["Account"].invalid_right_reason == 0 and r.objects["Contact"].wrongly_dead_lettered == 1
    assert not r.clean


def test_the_source_newest_value_is_checked_even_where_the_clean_run_agrees() -> None:
    r = _reconcile(_org("chaos", {}), newest={"Contact": {"2": {"Name": "Chaos42"}}})
    assert r.objects["Contact"].stale == 1 and not r.clean
