"""SalesforceSource against the sandbox: streamed REST pages, streamed Bulk query, (SystemModstamp, Id) watermark."""

from __future__ import annotations

import datetime as dt

from ferry.connectors.salesforce import SalesforceSink, SalesforceSource
from ferry.connectors.salesforce.select import eq
from ferry.connectors.salesforce.strategy import Strategy

from .conftest import Org

EXT = "Shopify_Customer_Id__c"


async def _seed(org: Org, n: int) -> None:
    records = [{EXT: f"w{i}", "LastName": "O'Brien" if i % 2 else f"L{i}", "Description": "a\nb, \"c\""}
               for i in range(n)]
    async with SalesforceSink(org.config()) as sink:
        results = await sink.upsert("Contact", EXT, records, Strategy.BULK)
    assert all(r.success for r in results)


async def test_rest_pages_stream_and_the_watermark_skips_nothing_at_a_shared_timestamp(org: Org) -> None:
    dml = org.sandbox.state.org
    real_clock = dml.clock
    dml.clock = lambda: dt.datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)  # every record: one timestamp
    try:
        await _seed(org, 5000)
    finally:
        dml.clock = real_clock
    async with SalesforceSource(org.config()) as source:
        pages = source.read("Contact", [EXT])
        first = await anext(pages)  # one page (2,000) only: the run "stops" here
        await pages.aclose()
        mark = source.watermark
        assert mark is not None and len(first) == 2000
        shared = sum(1 for r in first if r["SystemModstamp"] == mark.modstamp)
        rest = [r async for batch in source.read("Contact", [EXT], since=mark) for r in batch]
        assert source.api_calls["read:Contact"] == 1 + 2  # pages stream: 2,000 + 2,000 + 1,000
    seen = [r[EXT] for r in first] + [r[EXT] for r in rest]
    assert len(seen) == len(set(seen)) == 5000  # nothing skipped, nothing read twice
    assert shared == 2000 and all(r["SystemModstamp"] == mark.modstamp for r in rest)  # the hard case


async def test_bulk_query_streams_pages_by_locator(org: Org) -> None:
    await _seed(org, 12_000)
    async with SalesforceSource(org.config()) as source:
        source.bulk.page_records = 5000  # three results pages, followed by Sforce-Locator
        source.bulk.row_batch = 1000
        batches = [b async for b in source.read("Contact", [EXT, "LastName", "Description"], bulk=True)]
        assert source.bulk.pages == 3 and max(len(b) for b in batches) <= 1000
        rows = [r for b in batches for r in b]
        assert len({r[EXT] for r in rows}) == 12_000
        assert rows[0]["Description"] == "a\nb, \"c\""
        assert source.watermark is not None
        calls = source.api_calls["read:Contact"]
        assert calls <= 1 + 4 + 3  # create, a few backed-off polls, three pages
        hostile = [r async for b in source.read("Contact", [EXT], where=eq("LastName", "O'Brien' OR Name != '"))
                   for r in b]
        assert hostile == []
        obrien = await source.count("Contact", where=eq("LastName", "O'Brien"))
        assert obrien == 6000


async def test_auto_bulk_read_above_threshold(org: Org) -> None:
    await _seed(org, 300)
    async with SalesforceSource(org.config(), bulk_read_threshold=200) as source:
        rows = [r async for b in source.read("Contact", [EXT], bulk=None) for r in b]
        assert source.last_strategy == "bulk" and len(rows) == 300
