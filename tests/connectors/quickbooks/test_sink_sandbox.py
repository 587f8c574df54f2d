"""The QuickBooks sink against the sandbox over HTTPS: idempotent creates under lost answers, SyncToken
conflicts, batch per-item results, paced calls."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from ferry.connectors.quickbooks import QuickBooksSink
from tests.connectors.quickbooks.conftest import Books

INCOME = "SELECT Id FROM Account WHERE Name = 'Sales of Product Income'"


def customers(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"DisplayName": f"Customer {i} ({1000 + i})", "GivenName": f"Given {i}",
             "PrimaryEmailAddr.Address": f"c{i}@example.com"} for i in range(start, start + n)]


def items(n: int, income: str) -> list[dict[str, Any]]:
    return [{"Name": f"{2000 + i} Widget {i}", "Type": "NonInventory", "UnitPrice": 1.5 + i,
             "IncomeAccountRef": income} for i in range(n)]


def invoices(n: int, n_customers: int, n_items: int) -> list[dict[str, Any]]:
    def line(i: int, j: int) -> dict[str, Any]:
        k = (i + j) % n_items
        return {"Description": "line", "SalesItemLineDetail.ItemRef@Name": f"{2000 + k} Widget {k}",
                "SalesItemLineDetail.Qty": 1 + j, "SalesItemLineDetail.UnitPrice": "2.25"}

    def customer(i: int) -> str:
        return f"Customer {i % n_customers} ({1000 + i % n_customers})"

    return [{"DocNumber": f"#{3000 + i}", "CustomerRef@DisplayName": customer(i), "TxnDate": "2026-03-01",
             "Line": [line(i, j) for j in range(2)]} for i in range(n)]


def duplicates(books: Books, entity: str, field: str) -> dict[str, int]:
    counts = Counter(str(r.get(field)).lower() for r in books.records(entity))
    return {k: c for k, c in counts.items() if c > 1}


async def write_all(sink: QuickBooksSink, strategy: str) -> dict[str, list[Any]]:
    income = str(await sink.constant(INCOME))
    out = {}
    for obj, key, records in (("Customer", "DisplayName", customers(12)), ("Item", "Name", items(8, income)),
                              ("Invoice", "DocNumber", invoices(20, 12, 8))):
        results = await sink.upsert(obj, key, records, strategy)
        # The engine sends what failed again (a lost answer past the HTTP core's retries is transient).
        for _ in range(3):
            again = [i for i, r in enumerate(results) if not r.success]
            if not again:
                break
            retried = await sink.upsert(obj, key, [records[i] for i in again], strategy)
            for i, r in zip(again, retried, strict=True):
                results[i] = r
        out[obj] = results
    return out


@pytest.mark.parametrize("strategy", ["batch", "single"])
def test_lost_answers_after_commit_create_nothing_twice(books: Books, strategy: str) -> None:
    # Half the calls are processed and then their connection is reset before any byte of the answer.
    books.admin("POST", "faults", json={"seed": 11, "rules": [{"kind": "commit_then_reset", "rate": 0.5}]})
    books.admin("PATCH", "limits", json={"per_second": 0, "per_minute": 0})  # faults only

    async def run() -> dict[str, list[Any]]:
        async with books.sink() as sink:
            return await write_all(sink, strategy)

    results = asyncio.run(run())
    assert books.admin("GET", "faults")["injected"].get("commit_then_reset", 0) >= 3
    for obj, field, n in (("Customer", "DisplayName", 12), ("Item", "Name", 8), ("Invoice", "DocNumber", 20)):
        assert all(r.success for r in results[obj]), [r.errors for r in results[obj] if not r.success]
        assert duplicates(books, obj, field) == {}, obj
        written = [r for r in books.records(obj) if obj != "Item" or r["Name"][0].isdigit()]
        assert len(written) == n, obj
        assert {r.id for r in results[obj]} == {r["Id"] for r in written}


def test_a_create_whose_batch_changed_is_found_by_its_lookup_field_not_made_again(books: Books) -> None:
    """Past requestid's reach (another batch, another id): QuickBooks refuses the duplicate name and the sink
    finds the record it made and updates it instead."""
    # Every attempt of the first batch is reset: the first commits, the HTTP core's repeats replay, all lost.
    books.admin("POST", "faults", json={"rules": [{"kind": "commit_then_reset", "path": "batch", "count": 5}]})

    async def run() -> tuple[list[Any], list[Any], QuickBooksSink]:
        async with books.sink() as sink:
            lost = await sink.upsert("Customer", "DisplayName", customers(3), "batch")
            changed = [{**c, "GivenName": "Newer"} for c in reversed(customers(3))]  # a newer version, reordered
            return lost, await sink.upsert("Customer", "DisplayName", changed, "batch"), sink

    lost, found, sink = asyncio.run(run())
    assert all(not r.success and r.transient for r in lost)
    assert all(r.success and r.created is False for r in found)
    assert sink.adopted == 3
    stored = books.records("Customer")
    assert len(stored) == 3 and {r["GivenName"] for r in stored} == {"Newer"}  # latest wins
    assert {r["Id"] for r in stored} == {r.id for r in found}


def test_a_stale_synctoken_is_read_again_and_ferrys_fields_reapplied(books: Books) -> None:
    async def create() -> str:
        async with books.sink() as sink:
            [result] = await sink.upsert("Customer", "DisplayName", customers(1), "single")
            assert result.id is not None
            return result.id

    rid = asyncio.run(create())
    books.admin("POST", f"records/Customer/{rid}", json={"Notes": "edited in QuickBooks", "GivenName": "Theirs"})

    async def update() -> tuple[Any, QuickBooksSink]:
        async with books.sink() as sink:
            async def tokens_read_before_the_edit(obj: str, ids: list[str]) -> dict[str, str]:
                return {i: "0" for i in ids}

            sink._sync_tokens = tokens_read_before_the_edit  # type: ignore[method-assign]
            [result] = await sink.upsert("Customer", "DisplayName", [{**customers(1)[0], "GivenName": "Ours"}],
                                         "batch", target_ids=[rid])
            return result, sink

    result, sink = asyncio.run(update())
    assert result.success and result.id == rid and result.created is False
    assert sink.stale_rereads == 1
    [stored] = books.records("Customer")
    assert stored["GivenName"] == "Ours"  # ferry owns the mapped field: its value wins
    assert stored["Notes"] == "edited in QuickBooks"  # a sparse update leaves the others alone
    assert stored["SyncToken"] == "2"


def test_batch_items_fail_on_their_own_with_code_field_and_reason(books: Books) -> None:
    async def run() -> list[Any]:
        async with books.sink() as sink:
            income = str(await sink.constant(INCOME))
            good = items(2, income)
            no_account = {"Name": "9 No account", "Type": "NonInventory"}
            bad_line = {"DocNumber": "#1", "CustomerRef@DisplayName": "Nobody (0)", "Line": []}
            await sink.upsert("Item", "Name", good, "batch")
            return [*await sink.upsert("Item", "Name", [good[0], no_account, good[1]], "batch"),
                    *await sink.upsert("Invoice", "DocNumber", [bad_line, {"DocNumber": "x" * 22, "Line": []}],
                                       "batch")]

    ok1, bad, ok2, unresolved, too_long = asyncio.run(run())
    assert ok1.success and ok2.success
    assert not bad.success and bad.errors[0].code == "QBO_6000" and bad.errors[0].fields == ["IncomeAccountRef"]
    assert "income account" in bad.errors[0].message and not bad.transient
    assert unresolved.errors[0].code == "QBO_REFERENCE_NOT_FOUND" and unresolved.errors[0].fields == ["CustomerRef"]
    assert too_long.errors[0].code in ("QBO_2050", "QBO_2020")


def test_calls_are_paced_under_the_per_second_limit(books: Books) -> None:
    """The sandbox throttles at Intuit's 10 requests/s: the sink waits instead of meeting a 429."""
    async def run() -> QuickBooksSink:
        async with books.sink(per_second=10) as sink:
            await sink.upsert("Customer", "DisplayName", customers(25), "single")
            return sink

    sink = asyncio.run(run())
    limits = books.admin("GET", "stats")["limits"]
    assert limits["per_second"] == 10 and limits["throttled"] == 0
    assert sink.client.pacer.waited > 0
    assert len(books.records("Customer")) == 25


def test_lookup_before_create_finds_what_exists_without_meeting_a_duplicate(books: Books) -> None:
    async def run() -> tuple[list[Any], QuickBooksSink]:
        async with books.sink() as first:
            await first.upsert("Customer", "DisplayName", customers(2), "batch")
        async with books.sink(lookup_before_create=True) as sink:  # a crash lost the id map's answers
            return await sink.upsert("Customer", "DisplayName", customers(3), "batch"), sink

    results, sink = asyncio.run(run())
    assert [r.created for r in results] == [False, False, True] and all(r.success for r in results)
    assert sink.adopted == 2 and sink.api_calls["lookup"] == 1
    assert len(books.records("Customer")) == 3
