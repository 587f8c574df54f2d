"""The ``query:`` search syntax of the sandbox's GraphQL connections, compiled against a table of the store."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ferry.sandbox.shopify import generate_store
from ferry.sandbox.shopify.graphql.search import SearchError, compile_search
from ferry.sandbox.shopify.tables import Table
from ferry.sandbox.shopify.times import parse


@pytest.fixture(scope="module")
def orders() -> Table:
    return Table("orders", generate_store(seed=3, customers=40, products=8, orders=150).orders)


def ids(table: Table, query: str) -> list[int]:
    compiled = compile_search(query, "orders", table)
    return [table.ids[i] for i in range(len(table)) if compiled.predicate is None or compiled.predicate(i)]


def where(table: Table, keep: Any) -> list[int]:
    return [r["id"] for r in table.records if keep(r)]


def test_comparators_connectives_and_quotes(orders: Table) -> None:
    recs = sorted(orders.records, key=lambda r: r["id"])
    pivot = recs[50]["id"]
    assert ids(orders, f"id:>{pivot}") == where(orders, lambda r: r["id"] > pivot)
    assert ids(orders, f"id:>={pivot} id:<={pivot}") == [pivot]  # whitespace is AND
    assert ids(orders, f"id:{pivot} OR id:{recs[3]['id']}") == sorted([pivot, recs[3]["id"]])
    assert ids(orders, "status:cancelled") == where(orders, lambda r: r["cancelled_at"] is not None)
    assert ids(orders, "-status:cancelled") == ids(orders, "NOT status:cancelled") == where(
        orders, lambda r: r["cancelled_at"] is None)
    assert ids(orders, "(financial_status:refunded OR financial_status:voided) AND status:closed") == where(
        orders, lambda r: r["financial_status"] in ("refunded", "voided") and r["closed_at"] is not None)
    assert ids(orders, "financial_status:'partially_refunded'") == where(
        orders, lambda r: r["financial_status"] == "partially_refunded")
    email = next(r["email"] for r in recs if r["email"])
    assert ids(orders, f"email:{email.upper()}") == where(orders, lambda r: (r["email"] or "").lower() == email.lower())
    assert ids(orders, f"email:{email[:4]}*") == where(orders, lambda r: (r["email"] or "").lower().startswith(
        email[:4].lower()))


def test_dates_quoted_bare_day_and_year(orders: Table) -> None:
    stamp = sorted(parse(r["updated_at"]) for r in orders.records)[75]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    assert ids(orders, f"updated_at:>'{iso}'") == where(orders, lambda r: parse(r["updated_at"]) > stamp)
    assert ids(orders, f"updated_at:>={iso}") == where(orders, lambda r: parse(r["updated_at"]) >= stamp)
    assert ids(orders, f'updated_at:<="{iso}"') == where(orders, lambda r: parse(r["updated_at"]) <= stamp)
    day_start, day_end = parse("2026-03-10T00:00:00"), parse("2026-03-11T00:00:00")  # naive = the shop's zone
    assert ids(orders, "created_at:2026-03-10") == where(
        orders, lambda r: day_start <= parse(r["created_at"]) < day_end)
    assert ids(orders, "created_at:<2026") == []  # the store starts in 2026
    compiled = compile_search(f"updated_at:>='{iso}' AND id:>5", "orders", orders)
    assert compiled.bounds == {"updated_at_min": stamp, "since_id": 5}


def test_unknown_fields_are_warnings_and_bad_syntax_is_an_error(orders: Table) -> None:
    compiled = compile_search("colour:red", "orders", orders)
    assert compiled.predicate is None
    assert compiled.warnings == [{"field": "colour", "message": "Invalid search field for this query."}]
    for bad in ("updated_at:>nonsense", "(status:open", "id:>abc"):
        with pytest.raises(SearchError):
            compile_search(bad, "orders", orders)
