"""The validator's shortcuts (absent values, short plain text) answer exactly what the field checkers answer."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from ferry.connectors.salesforce.dialect import SALESFORCE, truncate_utf16
from ferry.mapping.spec import ObjectMapping
from ferry.mapping.validate import RecordValidator, build_validator

from .test_validate import SCHEMA

# Every field of the test schema mapped (plain paths and a reference), plus one the schema does not have.
FIELDS = [name for name in SCHEMA.fields if name != "ParentId"] + ["Missing__c"]
VALUES: list[Any] = [
    None, "", " ", "a", "abcdefghij", "abcdefghijk", "x" * 40, "x" * 41, "😀" * 5, "😀" * 6, "Retail", "retail",
    "a@b.co", "not an email", "12.50", "1,234.00", "nan", "2026-03-04", "2026-03-04T10:11:12-05:00", "true", 0, 1,
    2.5, True, False, ["vip", "b2b"], 10**12,
]


def _validator() -> RecordValidator:
    # Validation reads the mapped record by payload key, so the source paths do not matter here.
    fields: dict[str, Any] = dict.fromkeys(FIELDS, "note")
    fields["Ext__c"] = "key"
    fields["Note__c"] = {"path": "note", "on_too_long": "truncate"}
    fields["ParentId"] = {"ref": "Parent__c", "by": "Ext__c", "value": "key"}
    spec = ObjectMapping.model_validate({"name": "Thing__c", "from": "customer", "external_id": "Ext__c",
                                         "fields": fields})
    return build_validator(spec, SCHEMA, SALESFORCE)


def _answers(v: RecordValidator, record: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, list[str]]]]:
    out, errors = v.validate(record, "k1")
    return out, [(e.code, e.message, e.fields) for e in errors]


def test_the_shortcuts_change_no_answer() -> None:
    fast = _validator()
    assert any(f.none_passes for f in fast.fast) and any(f.text_limit > 0 for f in fast.fast)
    slow = replace(fast, fast=())  # every value through its checker
    keys = [k for k, _, _ in fast.rules]
    rnd = random.Random(5)
    for value in VALUES:  # each value in every field at once
        record = dict.fromkeys(keys, value)
        assert _answers(fast, record) == _answers(slow, record), value
    for _ in range(300):  # and mixed records
        record = {k: rnd.choice(VALUES) for k in keys}
        assert _answers(fast, record) == _answers(slow, record), record


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 5, 9])
def test_truncate_never_splits_a_surrogate_pair(limit: int) -> None:
    for text in ("", "abc", "😀😀😀", "a😀b😀c", "é中😀x"):
        units, cut = 0, text
        for i, ch in enumerate(text):
            units += 2 if ord(ch) > 0xFFFF else 1
            if units > limit:
                cut = text[:i]
                break
        assert truncate_utf16(text, limit) == cut
