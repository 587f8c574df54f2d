"""SalesforceReadSource (the contract Source) against the sandbox over HTTPS: streams with their children,
incremental reads by (SystemModstamp, Id), a read continued after a crash, deletes through queryAll, Bulk and
REST reads alike, the clock margin, and the link back of target ids."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.connectors.salesforce import SalesforceReadSource, SalesforceSourceConfig
from ferry.connectors.salesforce.read_source import LOWEST_ID
from ferry.core.contracts import SourcePage, TargetLink
from ferry.sandbox.salesforce.retail import generate_retail_org, seed_retail_org

from .conftest import Org


def _config(org: Org, **overrides: Any) -> SalesforceSourceConfig:
    c = org.creds
    return SalesforceSourceConfig.model_validate({
        "system": "salesforce", "login_url": c["login_url"], "client_id": c["client_id"], "auth": "client_credentials",
        "client_secret": c["client_secret"], "ca_file": str(org.running.ca_file), "clock_margin_seconds": 0,
        **overrides,
    })


def _fill(org: Org, *, accounts: int = 12, products: int = 6, orders: int = 20) -> None:
    retail = generate_retail_org(11, accounts=accounts, products=products, orders=orders)
    c = org.creds
    seed_retail_org(c["url"], c["client_id"], c["client_secret"], org.running.ca_file, retail)


async def _read(source: SalesforceReadSource, stream: str, state: dict[str, Any] | None) -> list[SourcePage]:
    return [page async for page in source.read(stream, state)]


def _records(pages: list[SourcePage]) -> list[dict[str, Any]]:
    return [r for p in pages for r in p.records]


def _table(org: Org, sobject: str) -> dict[str, dict[str, Any]]:
    return dict(org.sandbox.state.store.table(sobject).rows)


async def test_each_stream_carries_its_children_and_the_newest_stamp_is_the_version(org: Org) -> None:
    _fill(org)
    async with SalesforceReadSource(_config(org)) as source:
        accounts = _records(await _read(source, "Account", None))
        products = _records(await _read(source, "Product2", None))
        orders = _records(await _read(source, "Order", None))
    assert {a["Id"] for a in accounts} == set(_table(org, "Account"))
    assert {p["Id"] for p in products} == set(_table(org, "Product2"))
    activated = {k for k, o in _table(org, "Order").items() if o["Status"] == "Activated"}
    assert {o["Id"] for o in orders} == activated and len(activated) < 20  # drafts are not read
    contacts = sorted(_table(org, "Contact").values(), key=lambda c: (c["CreatedDate"], c["Id"]))
    for account in accounts:
        own = [c for c in contacts if c["AccountId"] == account["Id"]]
        assert (account.get("_contact") or {}).get("Id") == (own[0]["Id"] if own else None)
    entries = {e["Product2Id"]: e for e in _table(org, "PricebookEntry").values()}
    for product in products:
        assert (product.get("_price") or {}).get("UnitPrice") == entries.get(product["Id"], {}).get("UnitPrice")
    items = _table(org, "OrderItem")
    for order in orders:
        assert sorted(i["Id"] for i in order["_items"]) == sorted(k for k, i in items.items()
                                                                   if i["OrderId"] == order["Id"])
        key, version = source.identify("Order", order)
        stamps = [order["SystemModstamp"], *(i["SystemModstamp"] for i in order["_items"])]
        assert key == order["Id"] and version[:23] == max(stamps)[:23]
        [(entity, canonical), *lines] = source.normalize("Order", order)
        assert entity == "order" and len(lines) == len(order["_items"]) == len(canonical.lines)


async def test_a_next_read_returns_only_what_changed_after_the_cursor(org: Org) -> None:
    _fill(org)
    async with SalesforceReadSource(_config(org)) as source:
        first = await _read(source, "Account", None)
        cursor = first[-1].state
        assert "cursor" in cursor and not first[-1].resumed
        assert _records(await _read(source, "Account", cursor)) == []
        target = sorted(_table(org, "Account"))[3]
        await source._client.json("PATCH", source._client.data_path(f"/sobjects/Account/{target}"),
                                  label="edit", json={"Phone": "+1 555 0100"})
        again = _records(await _read(source, "Account", cursor))
    assert [r["Id"] for r in again] == [target] and again[0]["Phone"] == "+1 555 0100"


async def test_a_read_continued_after_a_crash_skips_nothing_at_a_shared_timestamp(org: Org) -> None:
    dml = org.sandbox.state.org
    real_clock = dml.clock
    dml.clock = lambda: dt.datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)  # every record: one stamp
    try:
        _fill(org, accounts=1300, products=0, orders=0)
    finally:
        dml.clock = real_clock
    async with SalesforceReadSource(_config(org, query_batch_size=500)) as source:
        pages = source.read("Account", None)
        page = await anext(pages)  # the first 500 staged with their state; then the run dies
        await pages.aclose()
        assert len(page.records) == 500 and "cursor" not in page.state
        rest = await _read(source, "Account", page.state)
    assert all(p.resumed for p in rest) and "cursor" in rest[-1].state
    assert [len(p.records) for p in rest] == [500, 300]  # pages of batchSize, the last one carrying the cursor
    seen = [r["Id"] for r in page.records] + [r["Id"] for r in _records(rest)]
    assert len(seen) == len(set(seen)) == 1300  # nothing skipped, nothing read twice


async def test_a_delete_is_read_through_query_all_and_yields_no_canonical_record(org: Org) -> None:
    _fill(org)
    async with SalesforceReadSource(_config(org)) as source:
        cursor = (await _read(source, "Product2", None))[-1].state
        victim = sorted(_table(org, "Product2"))[0]
        await source._client.request("DELETE", source._client.data_path(f"/sobjects/Product2/{victim}"),
                                     label="delete")
        [deleted] = _records(await _read(source, "Product2", cursor))
        assert deleted["Id"] == victim and deleted["IsDeleted"] is True
        assert source.normalize("Product2", deleted) == []
        assert source.read_plans["Product2"]["deleted"] == 1
        assert await source.fetch("Product2", victim) is None  # replay finds nothing to write


async def test_bulk_and_rest_reads_give_the_same_canonical_records(org: Org) -> None:
    _fill(org)
    canonical: dict[str, dict[str, Any]] = {}
    for threshold in (1, 1_000_000):
        async with SalesforceReadSource(_config(org, bulk_read_threshold=threshold)) as source:
            for stream in source.streams:
                pages = await _read(source, stream, None)
                assert source.read_plans[stream]["strategy"] == ("bulk" if threshold == 1 else "rest")
                for raw in _records(pages):
                    canonical.setdefault(f"{stream}/{raw['Id']}", {})[source.read_plans[stream]["strategy"]] = (
                        source.identify(stream, raw), source.normalize(stream, raw))
    assert len(canonical) > 30
    for key, by_mode in canonical.items():
        assert by_mode["bulk"] == by_mode["rest"], key


async def test_the_cursor_stays_a_margin_behind_the_orgs_clock(org: Org) -> None:
    _fill(org)
    async with SalesforceReadSource(_config(org, clock_margin_seconds=3600)) as source:
        first = await _read(source, "Account", None)
        _, record_id = first[-1].state["cursor"]
        assert record_id == LOWEST_ID  # held back: the newest records were stamped inside the margin
        again = _records(await _read(source, "Account", first[-1].state))
    assert len(again) == len(_table(org, "Account"))  # read again (the engine finds them unchanged)


async def test_link_back_writes_only_missing_ids_and_returns_the_records_as_changed(org: Org) -> None:
    _fill(org)
    config = _config(org, link_back={"Account": "QuickBooks_Id__c"})
    async with SalesforceReadSource(config) as source:
        accounts = _records(await _read(source, "Account", None))
        links = [TargetLink(a["Id"], a, {"Customer": str(100 + n)}) for n, a in enumerate(accounts)]
        echoed = await source.link_back("Account", links)
        assert set(echoed) == {a["Id"] for a in accounts}
        for n, account in enumerate(accounts):
            assert _table(org, "Account")[account["Id"]]["QuickBooks_Id__c"] == str(100 + n)
            assert echoed[account["Id"]]["QuickBooks_Id__c"] == str(100 + n)
            assert source.identify("Account", echoed[account["Id"]])[1] >= source.identify("Account", account)[1]
            [(_, before)], [(_, after)] = source.normalize("Account", account), source.normalize("Account", echoed[
                account["Id"]])
            # Only the change stamps moved: the canonical record (what a mapping reads) is otherwise the same.
            before.version, before.updated_at = after.version, after.updated_at
            assert before == after
        calls = source.api_calls
        relinked = [TargetLink(k, raw, {"Customer": raw["QuickBooks_Id__c"]}) for k, raw in echoed.items()]
        assert await source.link_back("Account", relinked) == {} and source.api_calls == calls  # nothing to write
        assert source.linked["Account"] == {"linked": len(accounts), "refused": 0}
        assert source.links_back("Account") and not source.links_back("Order")


def test_link_back_must_name_a_stream_that_is_read(org: Org) -> None:
    with pytest.raises(ValidationError, match="Order"):
        _config(org, streams=["Account"], link_back={"Order": "QuickBooks_Id__c"})
    with pytest.raises(ValidationError, match="SOQL identifier"):
        _config(org, link_back={"Account": "Id; DELETE"})
