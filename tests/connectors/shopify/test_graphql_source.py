"""ShopifySource on the GraphQL Admin API against the Shopify sandbox: bulk backfill (and its resume after a
crash), cost-paced incremental pages (an edit mid-read is not skipped; no THROTTLED), and canonical records
equal to the REST read's on the messy generated store."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ferry.connectors.shopify import ShopifySource
from ferry.connectors.shopify import normalize as shopify_normalize
from ferry.mapping.spec import ObjectMapping, mapped_entities
from ferry.observe import metrics
from tests.connectors.shopify.sandbox_store import SandboxStore, read_all

COUNTS = {"customers": 120, "products": 40, "orders": 300}


Store = SandboxStore


def _tls(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store.start(tmp_path_factory.mktemp("gqlshop"), **COUNTS)
    yield s
    s.running.stop()


_read = read_all


def _canonical(stream: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {str(r["id"]): shopify_normalize.normalize(stream, r) for r in records}


def _without_local_day(records: Any) -> Any:
    """An order's ``processed_on`` is the day in the offset REST wrote: GraphQL's DateTime is UTC and the shop's
    zone gives that day back, except for orders the messy store stamped in another offset (checked apart)."""
    out = []
    for entity, record in records:
        out.append((entity, dataclasses.replace(record, processed_on=None) if entity == "order" else record))
    return out


async def test_bulk_backfill_equals_rest_read_record_for_record(store: Store) -> None:
    async with ShopifySource(store.config(api="rest")) as rest:
        rest_reads = {s: (await _read(rest, s))[0] for s in ("customers", "products", "orders")}
    async with ShopifySource(store.config(bulk_threshold=0)) as gql:
        gql_reads = {s: (await _read(gql, s))[0] for s in ("customers", "products", "orders")}
        assert {s: p["mode"] for s, p in gql.read_plans.items()} == dict.fromkeys(gql_reads, "bulk")
        calls = gql.api_calls
    # Per stream: count, run, a poll or few, the file; orders add their refunds' details.
    assert calls <= 30
    entities: dict[str, int] = {}
    local_day_differs = 0
    for stream in ("customers", "products", "orders"):
        rest_records, gql_records = _canonical(stream, rest_reads[stream]), _canonical(stream, gql_reads[stream])
        assert rest_records.keys() == gql_records.keys()
        assert len(rest_records) == COUNTS[stream]
        for key, expected in rest_records.items():
            got = gql_records[key]
            for entity, _ in expected:
                entities[entity] = entities.get(entity, 0) + 1
            if expected != got:
                assert _without_local_day(expected) == _without_local_day(got), key
                local_day_differs += 1
    # Every kind of record was compared; only a few orders carry an offset other than the shop's.
    assert {"customer", "product", "product_variant", "order", "order_line", "refund"} <= entities.keys()
    assert local_day_differs < COUNTS["orders"] // 10


async def test_bulk_read_resumes_its_operation_after_a_crash(store: Store) -> None:
    async with ShopifySource(store.config(bulk_threshold=0, bulk_page_size=50)) as source:
        pages = source.read("orders", None)
        first = await anext(pages)  # the operation's id, saved before any record
        assert first.records == [] and first.state["bulk"]["id"].startswith("gid://shopify/BulkOperation/")
        second = await anext(pages)
        assert len(second.records) >= 50
        await pages.aclose()  # the run dies here, its operation possibly still running
    saved = second.state
    async with ShopifySource(store.config(bulk_threshold=0, bulk_page_size=50)) as again:
        records, states = await _read(again, "orders", saved)
        runs = again._graphql.client.http.calls["bulk_run"]  # type: ignore[union-attr]
    assert runs == 0  # found again by id, not started twice
    ids = [r["id"] for r in second.records] + [r["id"] for r in records]
    # Every order once, but for the few whose refunds were still being read when the page was saved: staging
    # takes a record read twice at one version once.
    assert len(set(ids)) == COUNTS["orders"] and len(ids) - len(set(ids)) < 50
    assert "bulk" not in states[-1] and states[-1]["cursor"]


async def test_a_crash_before_the_id_was_saved_adopts_the_running_operation(store: Store) -> None:
    store.graphql_settings({"bulk": {"seconds_per_object": 0.01}})  # still running when the next run starts
    try:
        # Before 2026-01 the shop has one slot for an app's bulk queries (from 2026-01 five: a second starts).
        async with ShopifySource(store.config(bulk_threshold=0, api_version="2025-10")) as source:
            pages = source.read("customers", None)
            first = await anext(pages)
            await pages.aclose()  # dies before the engine saved this page: the next run starts from scratch
        async with ShopifySource(store.config(bulk_threshold=0, api_version="2025-10")) as again:
            records, states = await _read(again, "customers", None)
    finally:
        store.graphql_settings({"bulk": {"seconds_per_object": 0.0005}})
    # The shop's one slot held our own query: the new run adopted that operation instead of a second one.
    assert states[0]["bulk"]["id"] == first.state["bulk"]["id"]
    assert len(records) == COUNTS["customers"]


async def test_paged_incremental_read_meets_an_edit_made_mid_read(store: Store) -> None:
    async with ShopifySource(store.config(api="rest")) as rest:
        orders, _ = await _read(rest, "orders")
    oldest = sorted(orders, key=lambda o: shopify_normalize.record_version("orders", o))
    since = shopify_normalize.record_version("orders", oldest[-40])
    async with ShopifySource(store.config(bulk_threshold=1000, page_size=10)) as source:
        seen: list[dict[str, Any]] = []
        edited = False
        async for page in source.read("orders", {"cursor": since}):
            seen += page.records
            if not edited and page.records:
                target = page.records[0]
                await _edit_order(store, target["id"])
                edited = True
        assert source.read_plans["orders"]["mode"] == "paged"
        assert source._graphql.client.throttled_answers == 0  # type: ignore[union-attr]
    first_id = seen[0]["id"]
    versions = [shopify_normalize.record_version("orders", r) for r in seen if r["id"] == first_id]
    assert len(versions) == 2 and versions[1] > versions[0]  # met again, at its new version


async def _edit_order(store: Store, order_id: int) -> None:
    cfg = store.config()
    async with httpx.AsyncClient(verify=_tls(store.running.ca_file)) as client:
        r = await client.put(
            f"{cfg.url}/admin/api/{cfg.api_version}/orders/{order_id}.json",
            json={"order": {"id": order_id, "note": "edited mid-read"}},
            headers={"X-Shopify-Access-Token": cfg.access_token.get_secret_value()},
        )
        r.raise_for_status()


async def test_pages_pace_themselves_by_throttle_status(store: Store) -> None:
    """A bucket smaller than the read: the reader waits for points instead of being answered THROTTLED."""
    store.graphql_settings({"maximum_available": 150, "restore_rate": 300})
    try:
        async with ShopifySource(store.config(bulk_threshold=100_000, page_size=25)) as source:
            records, _ = await _read(source, "customers")
            gql = source._graphql.client  # type: ignore[union-attr]
            assert gql.throttled_answers == 0
            assert gql.pacer.waited_seconds > 0 and gql.pacer.maximum == 150
            # The store's points as the dashboard shows them live (ferry_api_budget_remaining, with its size).
            row = next(r for r in metrics.budgets_remaining() if r["budget"] == "graphql_points")
            assert row["system"] == "shopify" and row["limit"] == 150 and 0 <= float(row["remaining"]) <= 150  # type: ignore[arg-type]
    finally:
        store.graphql_settings({"plan": "standard"})
    assert len(records) == COUNTS["customers"]


async def test_fetch_one_record_again_gives_the_rest_records_canonical_form(store: Store) -> None:
    async with ShopifySource(store.config(api="rest")) as rest:
        orders, _ = await _read(rest, "orders")
        refunded = next(o for o in orders if o.get("refunds"))
        products, _ = await _read(rest, "products")
        expected = {
            "orders": await rest.fetch("orders", str(refunded["id"])),
            "products": await rest.fetch("products", str(products[0]["id"])),
        }
    async with ShopifySource(store.config()) as gql:
        for stream, raw in expected.items():
            assert raw is not None
            got = await gql.fetch(stream, str(raw["id"]))
            assert got is not None
            assert _without_local_day(shopify_normalize.normalize(stream, got)) == _without_local_day(
                shopify_normalize.normalize(stream, raw)
            )
        assert await gql.fetch("orders", "999999999") is None


async def test_plan_read_picks_bulk_for_a_backfill_and_pages_for_a_few_changes(store: Store) -> None:
    async with ShopifySource(store.config(api="rest")) as rest:
        _, states = await _read(rest, "orders")
    async with ShopifySource(store.config()) as source:
        backfill = await source.plan_read("orders", None)
        catch_up = await source.plan_read("orders", states[-1])  # only what changed at the cursor's second
    assert backfill == {"stream": "orders", "mode": "bulk", "expected": COUNTS["orders"]}
    assert catch_up["mode"] == "paged" and 1 <= catch_up["expected"] <= 50


async def _prepared_read(source: ShopifySource) -> dict[str, list[dict[str, Any]]]:
    """Every stream read as the engine reads them: ``prepare_reads`` first, its states handed to each read."""
    states = await source.prepare_reads(dict.fromkeys(source.streams))
    return {s: (await _read(source, s, states.get(s)))[0] for s in source.streams}


async def test_from_2026_01_one_count_and_one_request_start_every_bulk_operation(store: Store) -> None:
    async with ShopifySource(store.config(api="rest")) as rest:
        rest_reads = {s: (await _read(rest, s))[0] for s in ("customers", "products", "orders")}
    async with ShopifySource(store.config(bulk_threshold=0, api_version="2026-01")) as gql:
        reads = await _prepared_read(gql)
        calls = dict(gql._graphql.client.http.calls)  # type: ignore[union-attr]
        files = gql._graphql.client.files.calls  # type: ignore[union-attr]
        assert {s: p["mode"] for s, p in gql.read_plans.items()} == dict.fromkeys(reads, "bulk")
        assert gql.read_plans["orders"]["expected"] == COUNTS["orders"]
    assert calls["count"] == 1 and calls["bulk_run"] == 1  # aliased counts; aliased bulkOperationRunQuery
    assert 1 <= calls["bulk_poll"] <= 4  # nodes(ids:) answers for all three
    assert files["bulk_file"] == 3
    for stream, records in reads.items():
        assert _canonical(stream, records).keys() == _canonical(stream, rest_reads[stream]).keys()


async def test_before_2026_01_prepare_starts_only_the_first_bulk_operation(store: Store) -> None:
    async with ShopifySource(store.config(bulk_threshold=0, api_version="2025-10")) as gql:
        states = await gql.prepare_reads(dict.fromkeys(gql.streams))
        assert list(states) == ["customers"]  # the shop's one slot
        reads = {s: (await _read(gql, s, states.get(s)))[0] for s in gql.streams}
        calls = dict(gql._graphql.client.http.calls)  # type: ignore[union-attr]
    assert calls["count"] == 1 and calls["bulk_run"] == 3
    assert {s: len(r) for s, r in reads.items()} == COUNTS


async def test_operations_started_ahead_are_found_again_after_a_crash(store: Store) -> None:
    """The states ``prepare_reads`` returns are saved before any read: a run that dies while reading the first
    stream finds every operation it started by id, and starts none again."""
    store.graphql_settings({"bulk": {"seconds_per_object": 0.005}})  # still running when the next run starts
    try:
        async with ShopifySource(store.config(bulk_threshold=0, api_version="2026-01")) as source:
            saved = await source.prepare_reads(dict.fromkeys(source.streams))
            assert set(saved) == {"customers", "products", "orders"}
        async with ShopifySource(store.config(bulk_threshold=0, api_version="2026-01")) as again:
            assert await again.prepare_reads(saved) == {}  # reads in flight: nothing to plan or start
            reads = {s: (await _read(again, s, saved[s]))[0] for s in again.streams}
            calls = dict(again._graphql.client.http.calls)  # type: ignore[union-attr]
    finally:
        store.graphql_settings({"bulk": {"seconds_per_object": 0.0005}})
    assert calls.get("bulk_run", 0) == 0 and calls.get("count", 0) == 0
    assert {s: len({r["id"] for r in recs}) for s, recs in reads.items()} == COUNTS


# ------------------------------------------------------------------ entity selection (SelectsEntities)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "shopify-to-salesforce.yml"


def _example_entities() -> frozenset[str]:
    """The entities the example pipeline's objects map from, as the engine computes them."""
    objects = yaml.safe_load(EXAMPLE.read_text())["objects"]
    return mapped_entities([ObjectMapping.model_validate(o) for o in objects])


def _selected(records: Any, entities: frozenset[str]) -> Any:
    """A raw record's canonical records of the selected entities, an order without its refunds list (the
    refund entity's records, which nothing selected maps)."""
    return [
        (entity, dataclasses.replace(record, refunds=()) if entity == "order" else record)
        for entity, record in records
        if entity in entities
    ]


async def _refund_reads_compared(store: Store, **config: Any) -> tuple[dict[str, int], int]:
    """Orders read over GraphQL for the example pipeline's entities against REST's read of everything: equal
    for every selected entity, ``total_refunded`` included. The GraphQL client's calls by label, and how many
    orders have a refund (so the comparison covered some)."""
    entities = _example_entities()
    async with ShopifySource(store.config(api="rest")) as rest:
        assert rest.select_entities(entities) == frozenset()  # REST's pages carry refunds at no extra call
        rest_orders = _canonical("orders", (await _read(rest, "orders"))[0])
    async with ShopifySource(store.config(**config)) as gql:
        assert gql.select_entities(entities) == frozenset({"refund"})
        gql_orders = _canonical("orders", (await _read(gql, "orders"))[0])
        calls = dict(gql._graphql.client.http.calls)  # type: ignore[union-attr]
    assert rest_orders.keys() == gql_orders.keys() and len(rest_orders) == COUNTS["orders"]
    refunded = 0
    for key, expected in rest_orders.items():
        want, got = _selected(expected, entities), _selected(gql_orders[key], entities)
        if want != got:
            assert _without_local_day(want) == _without_local_day(got), key
        assert not any(entity == "refund" for entity, _ in gql_orders[key])
        order = next(record for entity, record in expected if entity == "order")
        refunded += bool(order.refunds)
        assert order.total_refunded == next(r for e, r in gql_orders[key] if e == "order").total_refunded, key
    return calls, refunded


async def test_a_bulk_read_for_the_example_pipeline_reads_no_refund_and_equals_rest(store: Store) -> None:
    assert "refund" not in _example_entities() and {"order", "order_line"} <= _example_entities()
    calls, refunded = await _refund_reads_compared(store, bulk_threshold=0)
    assert refunded >= 10  # the messy store refunds some orders: their totals were compared
    assert calls.get("refunds", 0) == 0  # not one refund's line items read
    assert calls["bulk_run"] == 1


async def test_a_paged_read_for_the_example_pipeline_reads_no_refund_and_equals_rest(store: Store) -> None:
    store.graphql_settings({"plan": "plus"})  # 300 orders in pages: the Standard plan would pace it for minutes
    try:
        calls, refunded = await _refund_reads_compared(store, bulk_threshold=100_000)
    finally:
        store.graphql_settings({"plan": "standard"})
    assert refunded >= 10
    assert calls.get("refunds", 0) == 0 and calls["orders"] >= 2 and "bulk_run" not in calls


async def test_with_refund_selected_orders_read_their_refunds_as_before(store: Store) -> None:
    async with ShopifySource(store.config(bulk_threshold=0)) as gql:
        assert gql.select_entities(_example_entities() | {"refund"}) == frozenset()
        orders, states = await _read(gql, "orders")
        calls = dict(gql._graphql.client.http.calls)  # type: ignore[union-attr]
    assert calls["refunds"] >= 1
    assert sum(1 for o in orders if o.get("refunds")) >= 10 and "without" not in states[-1]


async def test_a_state_reached_without_refunds_is_read_again_once_refunds_are_selected(store: Store) -> None:
    """Orders staged without their refunds cannot give refund records later: a run that selects refunds after
    one that did not reads every order again (the version map then skips what is loaded already)."""
    async with ShopifySource(store.config(bulk_threshold=0)) as narrow:
        narrow.select_entities(_example_entities())
        _, states = await _read(narrow, "orders")
    assert states[-1]["without"] == ["refund"] and states[-1]["cursor"]
    async with ShopifySource(store.config(bulk_threshold=0)) as wide:
        wide.select_entities(_example_entities() | {"refund"})
        plan = (await wide.prepare_reads({"orders": states[-1]}))
        records, after = await _read(wide, "orders", plan.get("orders", states[-1]))
    assert len(records) == COUNTS["orders"] and sum(1 for o in records if o.get("refunds")) >= 10
    assert "without" not in after[-1]


async def test_fetch_for_the_example_pipeline_gives_the_order_total_refunded_without_its_refunds(
    store: Store,
) -> None:
    async with ShopifySource(store.config(api="rest")) as rest:
        orders, _ = await _read(rest, "orders")
    refunded = next(o for o in orders if o.get("refunds"))
    async with ShopifySource(store.config()) as gql:
        gql.select_entities(_example_entities())
        got = await gql.fetch("orders", str(refunded["id"]))
        calls = dict(gql._graphql.client.http.calls)  # type: ignore[union-attr]
    assert got is not None and "refunds" not in got and calls.get("refunds", 0) == 0
    want = shopify_normalize.order(refunded)
    assert shopify_normalize.order(got).total_refunded == want.total_refunded != "0.00"
