"""The validation-rule formula subset (formula.py): operators, functions, blanks, ISCHANGED/PRIORVALUE."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.sandbox.salesforce.formula import Context, FormulaError, compile_formula

_FIELDS = {"a": "A", "b": "B", "lastname": "LastName", "amount": "Amount", "stage": "Stage"}


def _eval(formula: str, record: dict[str, Any], old: dict[str, Any] | None = None) -> Any:
    node = compile_formula(formula, lambda n: n.lower() in _FIELDS)
    return node(Context(record, old, lambda n: _FIELDS[n.lower()]))


@pytest.mark.parametrize(("formula", "record", "expected"), [
    ("Amount > 100 && LEN(A) >= 3", {"Amount": 150, "A": "abc"}, True),
    ("Amount > 100", {"Amount": None}, False),  # blank as blank: a comparison with a blank is false
    ("ISBLANK(A)", {"A": ""}, True),
    ('IF(Amount > 1, "big", "small") = "big"', {"Amount": 2}, True),
    ('NOT(REGEX(A, "[0-9]+"))', {"A": "12a"}, True),  # REGEX matches the whole text
    ('A & "-" & B = "x-y"', {"A": "x", "B": "y"}, True),
    ("-Amount < 0", {"Amount": 5}, True),
    ("ISPICKVAL(Stage, 'Won') || !ISBLANK(B)", {"Stage": "Won"}, True),
    ("OR(BEGINS(A, \"ab\"), CONTAINS(B, \"z\"))", {"A": "abc", "B": ""}, True),
    ("Amount / 0 = NULL", {"Amount": 1}, True),
    ("UPPER(TRIM(A)) <> \"X\"", {"A": " x "}, False),
    ("BLANKVALUE(A, \"none\") = \"none\"", {"A": None}, True),
    ("VALUE(A) + 1 = 3", {"A": "2"}, True),
    ("ISNEW()", {}, True),
])
def test_formula_values(formula: str, record: dict[str, Any], expected: Any) -> None:
    assert _eval(formula, record) is expected


def test_is_changed_and_prior_value_see_the_stored_record() -> None:
    assert _eval("ISCHANGED(LastName)", {"LastName": "x"}, {"LastName": "y"}) is True
    assert _eval("ISCHANGED(LastName)", {"LastName": "x"}, None) is False  # never true on insert
    assert _eval("PRIORVALUE(Stage) <> Stage", {"Stage": "b"}, {"Stage": "a"}) is True
    assert _eval("ISNEW()", {}, {"Stage": "a"}) is False


@pytest.mark.parametrize(("formula", "message"), [
    ("ISCHANGED(A & B)", "ISCHANGED needs a field name"),
    ("FOO(A)", "unsupported function FOO"),
    ("Nope__c = 1", "unknown field Nope__c"),
    ("Account.Name = 'x'", "cross-object reference Account.Name is not supported"),
    ("AND(A", "expected ), got the end"),
    ("LEN(A, B)", "LEN takes 1 argument(s), got 2"),
    ("A # B", "unexpected character"),
])
def test_formulas_outside_the_subset_are_refused(formula: str, message: str) -> None:
    with pytest.raises(FormulaError) as exc:
        compile_formula(formula, lambda n: n.lower() in _FIELDS)
    assert message in str(exc.value)
