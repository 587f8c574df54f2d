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


@pytest.mark.parametrize("strategy", ["batch", "single"])
def test_a_lost_create_renamed_before_the_retry_is_found_by_its_source_key_not_made_again(
    books: Books, strategy: str
) -> None:
    """The create commits, its answer is lost; the source renames the customer before the next attempt: the
    DisplayName is a new one (no duplicate fault), the requestid too. ``SourceKey`` finds it all the same."""
    # Every attempt of the first write is reset after it committed (the HTTP core's repeats replay it).
    path, count = ("batch", 5) if strategy == "batch" else ("customer", 15)  # 5 tries of each call
    books.admin("POST", "faults", json={"rules": [{"kind": "commit_then_reset", "path": path, "count": count}]})
    first = [{**c, "SourceKey": str(1000 + i)} for i, c in enumerate(customers(3))]
    renamed = [{**c, "DisplayName": f"Renamed {i} ({1000 + i})", "SourceKey": str(1000 + i)}
               for i, c in enumerate(customers(3))]

    async def run() -> tuple[list[Any], list[Any], QuickBooksSink]:
        async with books.sink() as sink:
            lost = await sink.upsert("Customer", "DisplayName", first, strategy)
        async with books.sink() as sink:  # the next run (a new process)
            return lost, await sink.upsert("Customer", "DisplayName", renamed, strategy), sink

    lost, found, sink = asyncio.run(run())
    assert books.admin("GET", "faults")["injected"].get("commit_then_reset", 0) >= 3
    assert not any(r.success for r in lost)  # every answer was lost for good
    assert all(r.success for r in found), [r.errors for r in found]
    stored = books.records("Customer")
    assert sorted(r["DisplayName"] for r in stored) == sorted(r["DisplayName"] for r in renamed)  # latest wins
    assert {r["Id"] for r in stored} == {r.id for r in found}
    assert sink.adopted_by_source_key == sum(1 for r in lost if not r.success)
    assert all("SourceKey" not in r for r in stored)  # ferry's, never sent


def test_a_source_key_inside_a_longer_id_is_not_taken_for_it(books: Books) -> None:
    """Customer (1234) exists; a new record keyed 123 is created, not adopted."""
    async def run() -> list[Any]:
        async with books.sink() as sink:
            await sink.upsert("Customer", "DisplayName", [{"DisplayName": "Bob (1234)", "SourceKey": "1234"}], "batch")
        async with books.sink() as sink:
            return await sink.upsert("Customer", "DisplayName", [{"DisplayName": "Ann (123)", "SourceKey": "123"}],
                                     "batch")

    [result] = asyncio.run(run())
    assert result.success and result.created
    assert len(books.records("Customer")) == 2


def test_names_with_colon_tab_or_newline_are_refused_by_quickbooks_and_cleaned_by_the_sink(books: Books) -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        async with books.sink() as sink:
            income = str(await sink.constant(INCOME))
            people = await sink.upsert("Customer", "DisplayName", [
                {"DisplayName": "Ada (guest:ada@example.com)"}, {"DisplayName": "Tab\tand\nline (7)"}], "batch")
            things = await sink.upsert("Item", "Name", [
                {"Name": "9 Cable: USB-C", "Type": "NonInventory", "IncomeAccountRef": income}], "single")
            # Again (a second run): found by the same cleaned names, updated, not created twice.
            again = await sink.upsert("Customer", "DisplayName", [{"DisplayName": "Ada (guest:ada@example.com)",
                                                                   "GivenName": "Ada"}], "single")
            return people + things, again

    written, again = asyncio.run(run())
    assert all(r.success for r in written), [r.errors for r in written]
    names = sorted(r["DisplayName"] for r in books.records("Customer"))
    assert names == ["Ada (guest-ada@example.com)", "Tab and line (7)"]
    assert [r["Name"] for r in books.records("Item") if r["Name"][0].isdigit()] == ["9 Cable- USB-C"]
    assert again[0].success and again[0].created is False


def test_quickbooks_refuses_a_colon_in_a_display_name_with_2040(books: Books) -> None:
    """The sandbox as Intuit: ``2040 Invalid String`` naming the element (what the sink's cleaning avoids)."""
    import ssl

    import httpx

    async def token() -> str:
        async with books.sink() as sink:
            headers, _ = await sink.client.auth.authorize()
            return headers["Authorization"]

    auth = asyncio.run(token())
    verify = ssl.create_default_context(cafile=str(books.running.ca_file))
    response = httpx.post(f"{books.url}/v3/company/{books.sandbox.realm_id}/customer?minorversion=75",
                          json={"DisplayName": "Rob:Barnett:Company"}, verify=verify,
                          headers={"Authorization": auth, "Accept": "application/json"})
    assert response.status_code == 400
    error = response.json()["Fault"]["Error"][0]
    assert error["code"] == "2040" and error["element"] == "DisplayName"
    assert "Invalid String" in error["Message"] and "Rob:Barnett:Company" in error["Detail"]


def test_past_the_minutes_batch_calls_records_go_one_a_call_not_into_a_429(books: Books) -> None:
    """The company allows this app 2 batch calls a minute (Intuit: 40): the sink sends 2 batches and, rather than
    wait most of a minute for the next slot, writes the other batches' records one a call; none meets a 429."""
    books.admin("PATCH", "limits", json={"batch_per_app_minute": 2})

    async def run() -> tuple[list[Any], QuickBooksSink]:
        async with books.sink(batch_per_minute=2, batch_size=5) as sink:
            return await sink.upsert("Customer", "DisplayName", customers(25), "batch"), sink

    results, sink = asyncio.run(run())
    stats = books.admin("GET", "stats")
    assert stats["limits"]["throttled"] == 0 and stats["limits"]["batch_throttled"] == 0
    assert stats["by_endpoint"]["batch"] == 2 and sink.batches_as_singles == 3
    assert all(r.success and r.created for r in results), [r.errors for r in results if not r.success]
    assert len(books.records("Customer")) == 25 and duplicates(books, "Customer", "DisplayName") == {}


def test_records_sent_one_a_call_for_want_of_a_batch_slot_are_written_once_despite_lost_answers(
        books: Books) -> None:
    """The singles that stand in for a batch carry the single path's requestids: a lost answer repeated is
    replayed by QuickBooks, not written twice."""
    books.admin("PATCH", "limits", json={"per_second": 0, "per_minute": 0, "batch_per_app_minute": 1})
    books.admin("POST", "faults", json={"seed": 5, "rules": [{"kind": "commit_then_reset", "rate": 0.4,
                                                           "path": "customer"}]})  # singles only

    async def run() -> tuple[list[Any], QuickBooksSink]:
        async with books.sink(batch_per_minute=1, batch_size=4) as sink:
            return await sink.upsert("Customer", "DisplayName", customers(16), "batch"), sink

    results, sink = asyncio.run(run())
    assert books.admin("GET", "faults")["injected"].get("commit_then_reset", 0) >= 2
    assert sink.batches_as_singles == 3
    assert all(r.success for r in results), [r.errors for r in results if not r.success]
    assert len(books.records("Customer")) == 16 and duplicates(books, "Customer", "DisplayName") == {}
