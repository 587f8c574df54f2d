"""The SOQL builder: every value a literal, every name checked, the watermark a strict order."""

from __future__ import annotations

import datetime as dt

import pytest

from ferry.connectors.salesforce.select import Select, Watermark, after_watermark, eq, gt, in_, like, ne
from ferry.connectors.salesforce.soql import soql_quote

HOSTILE = "O'Brien' OR Name != '"


def test_a_hostile_value_stays_one_literal() -> None:
    query = Select("Contact", ["Id", "Name"]).where(eq("LastName", HOSTILE)).soql()
    assert query == "SELECT Id, Name FROM Contact WHERE LastName = 'O\\'Brien\\' OR Name != \\''"


@pytest.mark.parametrize("value", [HOSTILE, "\\' OR 1=1 --", "'x' OR Id != null OR Name = 'y'", "a\\", "\n'\t"])
def test_every_literal_is_escaped_in_every_operator(value: str) -> None:
    for cond in (eq("Name", value), ne("Name", value), gt("Name", value), in_("Name", [value, "b"])):
        text = cond.text
        # Strip escaped pairs; what is left must hold exactly the quotes that delimit literals.
        bare = text.replace("\\\\", "").replace("\\'", "")
        assert bare.count("'") == (4 if "IN" in text else 2), text


def test_like_escapes_wildcards() -> None:
    assert like("Name", "50%_off").text == "Name LIKE '50\\%\\_off'"


def test_names_are_refused_not_escaped() -> None:
    with pytest.raises(ValueError):
        Select("Contact", ["Id FROM User --"])
    with pytest.raises(ValueError):
        eq("Name = 'x' OR Id", 1)
    with pytest.raises(ValueError):
        Select("Contact", ["Id"]).order_by("Id; DELETE")


def test_conditions_compose_and_order_and_limit() -> None:
    query = Select("Account", ["Id"]).where(eq("A", 1) & (gt("B", 2) | ~eq("C", True))).order_by("Id").limit(10)
    assert str(query) == "SELECT Id FROM Account WHERE (A = 1 AND (B > 2 OR (NOT C = true))) ORDER BY Id LIMIT 10"


def test_watermark_condition_and_advance() -> None:
    mark = Watermark("2026-12-01T10:00:00.123+0000", "003000000000002AAA")
    text = after_watermark(mark).text
    assert text == ("(SystemModstamp > 2026-12-01T10:00:00.123Z OR (SystemModstamp = 2026-12-01T10:00:00.123Z "
                    "AND Id > '003000000000002AAA'))")
    assert mark.advance("2026-12-01T10:00:00.123+0000", "003000000000001AAA") is mark  # older: unchanged
    later = mark.advance("2026-12-01T10:00:00.123+0000", "003000000000003AAA")
    assert later.id == "003000000000003AAA"
    assert soql_quote(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) == "2026-01-01T00:00:00Z"
