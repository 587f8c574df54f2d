"""The runs page's budgets: Salesforce's daily budget (the pipeline's share), the source API calls the runs made
(what spends a Shopify store's leaky bucket, from the store for past runs), and the live gauges of this process
(the Shopify bucket as the shop last reported it)."""

from __future__ import annotations

import datetime as dt
import re

import httpx

from ferry.web.figures import source_calls
from tests.web.conftest import DemoWorld


def test_the_runs_page_shows_the_shopify_bucket_beside_the_salesforce_budget(demo_world: DemoWorld) -> None:
    demo_world.restore_budgets()  # as the demo's runs left them (a test of another shop may have run since)
    page = httpx.get(demo_world.url + "/", timeout=30).text
    assert 'class="budget" data-pipeline="demo"' in page  # the Salesforce share, from the newest run
    # Past runs, from the store: the source's calls in the last 24 h and in the newest run.
    rows = demo_world.store.list_runs("demo", 10)
    expected = source_calls(rows)[0]
    assert expected["calls_last_run"] == demo_world.stats.source_api_calls > 0
    assert expected["calls_24h"] == sum(r.stats["source_api_calls"] for r in rows)
    block = re.search(r'<div class="budget source-calls" data-pipeline="demo">(.*?)</div>', page)
    assert block and f">{expected['calls_24h']:,}</span> calls in the last 24 h" in block.group(1)
    assert f"({expected['calls_last_run']:,} in run {demo_world.stats.run_id})" in block.group(1)
    # Live, this process: the demo's runs read the shop here over GraphQL (the default), whose answers carry
    # extensions.cost.throttleStatus.
    bucket = re.search(r'data-system="shopify" data-budget="graphql_points"><strong>Shopify GraphQL cost points '
                       r'[^<]*</strong>: <span class="remaining">([\d,]+)</span> of ([\d,]+) points left', page)
    assert bucket, "no Shopify GraphQL points on the runs page"
    left, size = (int(g.replace(",", "")) for g in bucket.groups())
    assert size == 2000 and 0 <= left <= size  # the sandbox's bucket is Shopify's Standard plan: 2,000 points
    live = httpx.get(demo_world.url + "/api/throughput", timeout=30).json()["live_budgets"]
    org = [b for b in live if (b["system"], b["budget"]) == ("salesforce", "org_daily")]
    assert org and org[0]["limit"] and 0 < org[0]["remaining"] <= org[0]["limit"]


def test_source_calls_counts_only_the_last_24_hours() -> None:
    from ferry.core.ports import RunRow

    now = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)

    def row(i: int, hours_ago: float, calls: int) -> RunRow:
        at = (now - dt.timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return RunRow(id=i, pipeline="p", status="succeeded", started_at=at, finished_at=at, error=None,
                      stats={"source_api_calls": calls, "source_api": "graphql"})

    got = source_calls([row(1, 30, 100), row(2, 5, 7), row(3, 1, 3)], now)
    assert got == [{"pipeline": "p", "run_id": 3, "source_api": "graphql", "calls_last_run": 3, "calls_24h": 10}]
