"""A large stream read over GraphQL as several bulk operations over id ranges, against the Shopify sandbox over
HTTP: the same records as one operation, each once; a kill while the operations run (or mid-file) resumes
without starting any again; before API 2026-01 the read stays one operation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from ferry.connectors.shopify import ShopifySource
from ferry.connectors.shopify import normalize as shopify_normalize
from ferry.connectors.shopify.gql_split import BulkProgress, Part, id_ranges, share_slots
from tests.connectors.shopify.sandbox_store import SandboxStore, read_all

COUNTS = {"customers": 60, "products": 20, "orders": 240}
SPLIT = {"bulk_threshold": 0, "bulk_split_min": 50, "api_version": "2026-01"}


class Store(SandboxStore):
    def bulk_pace(self, seconds_per_object: float) -> None:
        self.graphql_settings({"bulk": {"seconds_per_object": seconds_per_object}})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store.start(tmp_path_factory.mktemp("gqlsplit"), **COUNTS)
    yield s
    s.running.stop()


_read = read_all


def _canonical(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {str(r["id"]): shopify_normalize.normalize("orders", r) for r in records}


def _calls(source: ShopifySource) -> dict[str, int]:
    gql = source._graphql
    assert gql is not None
    return {**gql.client.http.calls, **gql.client.files.calls}


async def test_a_split_read_gives_the_records_of_one_operation_each_once(store: Store) -> None:
    async with ShopifySource(store.config(**SPLIT)) as split:
        states = await split.prepare_reads(dict.fromkeys(split.streams))
        plan = split.read_plans["orders"]
        orders, pages = await _read(split, "orders", states["orders"])
        calls = _calls(split)
        # `ferry plan` asks stream by stream: the other two configured streams are taken to hold a slot each.
        assert (await split.plan_read("orders", None))["operations"] == 3
    async with ShopifySource(store.config(bulk_threshold=0, api_version="2026-01", bulk_split_min=10**6)) as one:
        alone, _ = await _read(one, "orders", None)
        assert "operations" not in one.read_plans["orders"]
    # Two streams hold a slot each: the orders take the other three, one request started all five operations.
    assert plan == {"stream": "orders", "mode": "bulk", "expected": COUNTS["orders"], "operations": 3}
    parts = states["orders"]["bulk"]["parts"]
    assert parts[0][1].startswith("id:<=") and parts[-1][1].startswith("id:>")
    assert all(job for job, _ in parts) and calls["count"] == 1 and calls["bulk_run"] == 1
    assert calls["bulk_file"] == 3  # the orders' three files (the other streams were not read here)
    assert len(orders) == len({o["id"] for o in orders}) == COUNTS["orders"]  # the ranges are disjoint
    assert _canonical(orders) == _canonical(alone)
    assert "bulk" not in pages[-1] and pages[-1]["cursor"]
    # The read moved from one operation's file to the next in range order; each file read to its end.
    assert [p["bulk"]["part"] for p in pages[:-1]] == sorted(p["bulk"]["part"] for p in pages[:-1])


async def test_a_split_read_without_prepare_starts_its_operations_in_one_request(store: Store) -> None:
    async with ShopifySource(store.config(**SPLIT)) as source:
        orders, pages = await _read(source, "orders", None)
        calls = _calls(source)
    assert pages[0]["bulk"]["done"] == 0 and all(job for job, _ in pages[0]["bulk"]["parts"])  # saved first
    assert calls["bulk_run"] == 1 and calls["bulk_file"] == 3
    assert len(orders) == len({o["id"] for o in orders}) == COUNTS["orders"]


async def test_a_kill_while_the_operations_run_finds_every_one_again(store: Store) -> None:
    store.bulk_pace(0.004)  # ~1 s an operation: all three still running when the run dies
    try:
        async with ShopifySource(store.config(**SPLIT)) as source:
            saved = await source.prepare_reads(dict.fromkeys(source.streams))
        assert len(saved["orders"]["bulk"]["parts"]) == 3
        async with ShopifySource(store.config(**SPLIT)) as again:
            assert await again.prepare_reads(saved) == {}  # reads in flight: nothing started
            with capture_logs() as logs:
                orders, pages = await _read(again, "orders", saved["orders"])
            calls = _calls(again)
    finally:
        store.bulk_pace(0.0005)
    assert calls.get("bulk_run", 0) == 0 and calls.get("count", 0) == 0
    # One nodes(ids:) poll answers for all of them: every poll saw the three operations, and none was made once
    # all three were known finished (a poll per operation would ask again for the ones after the first). How many
    # polls the wait takes depends on the machine's load, so the count itself is not bounded.
    parts = [job for job, _ in saved["orders"]["bulk"]["parts"]]
    polled = [e["ops"] for e in logs if e["event"] == "bulk.polled"]
    assert len(polled) == calls["bulk_poll"] >= 1 and all(set(parts) <= set(ops) for ops in polled)
    finished = [all(ops[p] == "COMPLETED" for p in parts) for ops in polled]
    assert finished.index(True) == len(polled) - 1
    assert len({o["id"] for o in orders}) == COUNTS["orders"]
    assert pages[0]["bulk"]["parts"] == saved["orders"]["bulk"]["parts"]


@pytest.mark.parametrize("api_version", ["2026-01", "2025-07"])
async def test_a_kill_between_starting_the_operations_and_saving_them_adopts_them(
    store: Store, api_version: str
) -> None:
    """Killed right after ``bulkOperationRunQuery`` answered, before the engine saved the states: the operations
    run on and hold the shop's slots (five from 2026-01, one before). The next run's prepare finds them (the
    app's running operations, listed in its count request), takes their ids and reads them as resumed: it starts
    none of them again, and no start is refused for want of a slot."""
    config = store.config(**{**SPLIT, "api_version": api_version})
    ops = store.sandbox.graphql.bulk.ops
    store.bulk_pace(0.004)  # ~1 s an operation: still running when the next run starts
    try:
        async with ShopifySource(config) as source:
            lost = await source.prepare_reads(dict.fromkeys(source.streams))  # the process dies before the save
        before = len(ops)
        async with ShopifySource(config) as again:
            with capture_logs() as logs:
                states = await again.prepare_reads(dict.fromkeys(again.streams))
                read = {s: await _read(again, s, states.get(s)) for s in again.streams}
            calls = _calls(again)
    finally:
        store.bulk_pace(0.0005)
    assert lost and states == lost  # the same operations, by id: adopted, not started again
    adopted = {e["id"] for e in logs if e["event"] == "bulk.adopt_running"}
    assert adopted == {job for st in lost.values() for job in _job_ids(st)}
    # Only the streams the killed run had not started yet start now (one slot: after the adopted one ended).
    assert len(ops) - before == calls.get("bulk_run", 0) == len(set(again.streams) - set(lost))
    assert not [e for e in logs if e["event"] == "bulk.start_refused"]
    assert {e["stream"] for e in logs if e["event"] == "read.bulk_resume"} == set(lost)  # read as resumed
    assert {s: len({r["id"] for r in records}) for s, (records, _) in read.items()} == COUNTS
    assert all(len(records) == COUNTS[s] for s, (records, _) in read.items())


def _job_ids(state: dict[str, Any]) -> list[str]:
    bulk = state["bulk"]
    return [job for job, _ in bulk["parts"]] if "parts" in bulk else [bulk["id"]]


async def test_a_kill_in_the_second_operations_file_resumes_there(store: Store) -> None:
    config = store.config(**SPLIT, bulk_page_size=20)
    async with ShopifySource(config) as source:
        states = await source.prepare_reads(dict.fromkeys(source.streams))
        seen: list[dict[str, Any]] = []
        pages = source.read("orders", states["orders"])
        async for page in pages:
            seen += page.records
            if page.state.get("bulk", {}).get("part") == 1 and page.state["bulk"]["done"] > 0:
                saved = page.state  # staged with this page; the run dies right after
                break
        await pages.aclose()
    async with ShopifySource(config) as again:
        rest, states_after = await _read(again, "orders", saved)
        calls = _calls(again)
    assert calls.get("bulk_run", 0) == 0  # found again, by id
    assert calls["bulk_file"] == 2  # the second file again (read on from where it stopped) and the third
    ids = [o["id"] for o in seen + rest]
    assert set(ids) == {o["id"] for o in seen} | {o["id"] for o in rest} and len(set(ids)) == COUNTS["orders"]
    assert len(ids) - len(set(ids)) < 20  # only orders still waiting for their refunds when the page was saved
    assert "bulk" not in states_after[-1]


async def test_before_2026_01_a_large_stream_stays_one_operation(store: Store) -> None:
    async with ShopifySource(store.config(**(SPLIT | {"api_version": "2025-10"}))) as source:
        states = await source.prepare_reads(dict.fromkeys(source.streams))
        plan = await source.plan_read("orders", None)
        records = {s: (await _read(source, s, states.get(s)))[0] for s in source.streams}
        calls = _calls(source)
    assert plan == {"stream": "orders", "mode": "bulk", "expected": COUNTS["orders"]}
    assert "parts" not in states["customers"]["bulk"]
    assert calls["bulk_run"] == 3 and calls["bulk_file"] == 3  # one slot: one operation per stream, in turn
    assert {s: len(r) for s, r in records.items()} == COUNTS


def test_the_free_slots_go_to_the_largest_stream_while_its_operations_stay_large() -> None:
    # The generated store of 10,000 orders: the orders take the two free slots.
    assert share_slots({"customers": 5000, "products": 1000, "orders": 10000}, 5, 2500) == {
        "customers": 1, "products": 1, "orders": 3}
    assert share_slots({"orders": 6000}, 5, 2500) == {"orders": 2}  # not three of 2,000
    assert share_slots({"orders": None}, 5, 2500) == {"orders": 1}  # unknown size: no split
    assert share_slots({"customers": 9000, "orders": 2000}, 5, 2500) == {"customers": 3, "orders": 1}


def test_id_ranges_are_disjoint_and_cover_every_id() -> None:
    ranges = id_ranges(1000, 1900, 3)
    assert ranges == ["id:<=1300", "id:>1300 id:<=1600", "id:>1600"]
    assert id_ranges(1000, 1001, 3) == [None]  # too narrow to split
    assert id_ranges(1000, 5000, 1) == [None]


def test_a_split_reads_state_keeps_the_earliest_start_and_reads_back() -> None:
    progress = BulkProgress("2026-01-01T00:00:00Z", [Part("gid://a", "id:<=5"), Part("gid://b", "id:>5")])
    progress.saw_start("2026-12-06T10:00:05Z")
    progress.saw_start("2026-12-06T10:00:01Z")
    progress.saw_start("2026-12-06T10:00:09Z")
    assert progress.started == "2026-12-06T10:00:01Z"  # the cursor stops at the earliest operation's start
    after = BulkProgress.from_json(progress.next_json())
    assert (after.part, after.done, after.current.id, after.started) == (1, 0, "gid://b", "2026-12-06T10:00:01Z")
    one = BulkProgress.from_json({"id": "gid://c", "since": None, "done": 7, "newest": None})  # an older state
    assert (len(one.parts), one.current.id, one.done) == (1, "gid://c", 7)
    assert set(one.as_json()) == {"id", "since", "done", "newest"}


# ------------------------------------------------------------------ with entity selection (SelectsEntities)

NO_REFUND = frozenset({"customer", "product", "order", "order_line"})  # what the example pipeline maps


def _order_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each raw order's canonical order record, its refunds list left out (nothing selected maps refunds)."""
    out = {}
    for key, normalized in _canonical(records).items():
        order = next(record for entity, record in normalized if entity == "order")
        out[key] = dataclasses.replace(order, refunds=())
    return out


async def test_a_split_read_without_refund_selected_reads_no_refund_in_any_part(store: Store) -> None:
    async with ShopifySource(store.config(**SPLIT)) as split:
        assert split.select_entities(NO_REFUND) == frozenset({"refund"})
        states = await split.prepare_reads(dict.fromkeys(split.streams))
        orders, pages = await _read(split, "orders", states["orders"])
        calls = _calls(split)
    async with ShopifySource(store.config(**(SPLIT | {"bulk_split_min": 10**6}))) as whole:  # refunds read, one op
        with_refunds, _ = await _read(whole, "orders", None)
    assert len(states["orders"]["bulk"]["parts"]) == 3 and calls["bulk_run"] == 1
    # Every part ran in the selection's shape: no order came with refunds, so no refund's line items were read.
    assert calls.get("refunds", 0) == 0 and not any("refunds" in o for o in orders)
    # Every state says so, the one saved before the read and each part's: a run selecting refunds reads again.
    assert states["orders"]["without"] == ["refund"] and all(p["without"] == ["refund"] for p in pages)
    assert len(orders) == len({o["id"] for o in orders}) == COUNTS["orders"]
    got, want = _order_records(orders), _order_records(with_refunds)
    assert sum(1 for o in want.values() if o.total_refunded not in (None, "0.00")) >= 10  # refunded orders compared
    assert got == want  # total_refunded from the order's own totalRefundedSet equals the refunds' sum


async def test_a_split_read_stopped_without_refunds_is_read_again_whole_once_refunds_are_selected(
    store: Store,
) -> None:
    config = store.config(**SPLIT, bulk_page_size=20)
    async with ShopifySource(config) as narrow:
        narrow.select_entities(NO_REFUND)
        states = await narrow.prepare_reads(dict.fromkeys(narrow.streams))
        pages = narrow.read("orders", states["orders"])
        async for page in pages:
            if page.state.get("bulk", {}).get("part") == 1:
                saved = page.state  # the run dies in the second part's file
                break
        await pages.aclose()
    assert saved["without"] == ["refund"]
    async with ShopifySource(config) as wide:
        assert wide.select_entities(NO_REFUND | {"refund"}) == frozenset()
        started = await wide.prepare_reads({"orders": saved})  # the saved place is dropped: a fresh split read
        assert len(started["orders"]["bulk"]["parts"]) == 3 and "without" not in started["orders"]
        orders, after = await _read(wide, "orders", started["orders"])
        calls = _calls(wide)
    assert calls["refunds"] >= 1 and sum(1 for o in orders if o.get("refunds")) >= 10
    assert len({o["id"] for o in orders}) == COUNTS["orders"]  # every order again, each part's refunds flushed
    assert not any("without" in s for s in after) and "bulk" not in after[-1]
