"""soql_quote keeps every value a literal (limits-and-reliability.md §4.2)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from ferry.connectors.salesforce.soql import soql_identifier, soql_like, soql_quote


def _unescape_literal(literal: str) -> str:
    """Parse a SOQL string literal the way Salesforce does; fail if a quote escapes the literal early."""
    assert literal[0] == "'" and literal[-1] == "'"
    out, i, body = [], 0, literal[1:-1]
    table = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\",
             "%": "\\%", "_": "\\_"}
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            out.append(table[body[i + 1]])  # KeyError = a backslash Salesforce would reject
            i += 2
            continue
        assert ch != "'", f"unescaped quote ends the literal early in {literal!r}"
        out.append(ch)
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    "value",
    ["O'Brien' OR Name != '", "'x' OR Id != null OR Name = 'y'", "back\\slash", "\\'", "ends with \\",
     "tab\tnew\nline\rcr", 'dq"uote', "émoji 🚢 ünïcode", "", "'", "''", "\\\\'", "%_"],
)
def test_strings_stay_literals(value: str) -> None:
    literal = soql_quote(value)
    assert _unescape_literal(literal) == value


def test_injection_attempt_is_one_literal() -> None:
    where = f"Name = {soql_quote(chr(39) + ' OR Name != ' + chr(39))}"
    # Exactly two unescaped quotes remain: the ones soql_quote put around the value.
    assert len(re.findall(r"(?<!\\)'", where)) == 2


@pytest.mark.parametrize(
    ("value", "literal"),
    [(None, "null"), (True, "true"), (False, "false"), (42, "42"), (1.5, "1.5"),
     (dt.date(2026, 1, 2), "2026-01-02"),
     (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2026-01-02T01:04:05Z"),
     (["a", 1, None], "('a', 1, null)")],
)
def test_other_types(value: object, literal: str) -> None:
    assert soql_quote(value) == literal


def test_unknown_types_and_nan_are_refused() -> None:
    with pytest.raises(TypeError):
        soql_quote(object())
    with pytest.raises(ValueError):
        soql_quote(float("nan"))


def test_like_escapes_wildcards() -> None:
    assert soql_like("50%_off's") == "'50\\%\\_off\\'s'"


@pytest.mark.parametrize("bad", ["Name; DELETE", "Name OR 1=1", "", "1Name", "Account.", "Na me"])
def test_identifiers_are_checked_not_escaped(bad: str) -> None:
    with pytest.raises(ValueError):
        soql_identifier(bad)
    assert soql_identifier("Account.Shopify_Customer_Id__c") == "Account.Shopify_Customer_Id__c"
