"""ShopifySource against the real Shopify sandbox over HTTPS: Link paging, filters, leaky bucket, 429."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.connectors.shopify import ShopifyConfig, ShopifySource
from ferry.errors import AuthError
from ferry.sandbox.serve import start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from tests.connectors.shopify.sandbox_store import SandboxStore

COUNTS = {"customers": 120, "products": 40, "orders": 300}


class Store(SandboxStore):
    api = "rest"

    def config(self, **overrides: Any) -> ShopifyConfig:
        return super().config(**({"streams": ["customers", "products", "orders"]} | overrides))

    def count(self, resource: str, **params: str) -> int:
        """The store's own count, asked directly (waiting out 429s: the tests share its bucket)."""
        cfg = self.config()
        for _ in range(50):
            response = httpx.get(
                f"{cfg.url}/admin/api/{cfg.api_version}/{resource}/count.json", params=params,
                headers={"X-Shopify-Access-Token": cfg.access_token.get_secret_value()},
                verify=ssl.create_default_context(cafile=str(self.running.ca_file)),
            )
            if response.status_code != 429:
                break
            time.sleep(float(response.headers["Retry-After"]))
        response.raise_for_status()
        return int(response.json()["count"])


def _start(state_dir: Path, **kw: Any) -> Store:
    sandbox = ShopifySandbox(state_dir, customers=COUNTS["customers"], products=COUNTS["products"],
                             orders=COUNTS["orders"], **kw)
    return Store(sandbox, start_in_thread(sandbox.app, state_dir))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = _start(tmp_path_factory.mktemp("shop"))
    yield s
    s.running.stop()


async def _read_all(source: ShopifySource, stream: str, **kw: Any) -> list[list[dict[str, Any]]]:
    return [page.records async for page in source.read_pages(stream, **kw)]


@pytest.mark.parametrize("stream", ["customers", "products", "orders"])
async def test_paging_reads_every_record_exactly_once(store: Store, stream: str) -> None:
    async with ShopifySource(store.config(page_size=25)) as source:
        pages = await _read_all(source, stream)
        calls = source.api_calls
    ids = [r["id"] for page in pages for r in page]
    expected = store.count(stream, **({"status": "any"} if stream == "orders" else {}))
    assert len(ids) == len(set(ids)) == expected
    assert all(len(page) <= 25 for page in pages) and len(pages) == calls == -(-expected // 25)


async def test_updated_at_filter_is_carried_by_the_cursor(store: Store) -> None:
    async with ShopifySource(store.config(page_size=50)) as source:
        everything = [r for page in await _read_all(source, "customers") for r in page]
        stamps = sorted(r["updated_at"] for r in everything)
        since = stamps[len(stamps) // 2]
        recent = [r for page in await _read_all(source, "customers", updated_at_min=since) for r in page]
    assert recent and all(r["updated_at"] >= since for r in recent)
    assert len(recent) == len({r["id"] for r in recent}) == sum(1 for s in stamps if s >= since)


async def test_records_are_untouched(store: Store) -> None:
    async with ShopifySource(store.config(page_size=5)) as source:
        pages = source.read_pages("orders")
        first = (await anext(pages)).records[0]
        await pages.aclose()  # type: ignore[attr-defined]
    assert {"id", "line_items", "total_price", "updated_at"} <= set(first)
    assert isinstance(first["total_price"], str)  # money stays a string, exactly as Shopify sends it


async def test_bad_token_is_an_auth_error(store: Store) -> None:
    async with ShopifySource(store.config(access_token="shpat_wrong")) as source:
        with pytest.raises(AuthError) as info:
            await _read_all(source, "customers")
    assert "shpat_wrong" not in str(info.value)


async def test_tiny_bucket_throttles_before_429(tmp_path: Path) -> None:
    tiny = _start(tmp_path, bucket_size=3, leak_rate=5)
    try:
        async with ShopifySource(tiny.config(page_size=10), leak_rate=5) as source:
            ids = [r["id"] for page in await _read_all(source, "customers") for r in page]
            assert source.throttled_seconds > 0
        assert len(ids) == len(set(ids)) == COUNTS["customers"]
        assert tiny.sandbox.stats.throttled == 0  # slowed down before the store had to refuse
    finally:
        tiny.running.stop()


async def test_429_with_retry_after_is_waited_out(tmp_path: Path) -> None:
    tiny = _start(tmp_path, bucket_size=3, leak_rate=5)
    try:
        # Throttling off: back-to-back pages overflow the 3-call bucket, the store answers 429 with
        # Retry-After, and the core waits it out and repeats the call.
        async with ShopifySource(tiny.config(page_size=10), throttle=False) as source:
            pages = await _read_all(source, "customers")
            calls = source.api_calls
        ids = [r["id"] for page in pages for r in page]
        assert len(ids) == len(set(ids)) == COUNTS["customers"]
        assert tiny.sandbox.stats.throttled > 0 and calls == len(pages) + tiny.sandbox.stats.throttled
    finally:
        tiny.running.stop()


async def test_concurrent_streams_share_one_bucket(tmp_path: Path) -> None:
    tiny = _start(tmp_path, bucket_size=3, leak_rate=5)
    try:
        async with ShopifySource(tiny.config(page_size=25), leak_rate=5) as source:
            streams = ("customers", "products", "orders")
            results = await asyncio.gather(*(_read_all(source, s) for s in streams))
        assert tiny.sandbox.stats.throttled == 0  # one bucket estimate for all streams, calls in flight included
        for stream, pages in zip(streams, results, strict=True):
            ids = [r["id"] for page in pages for r in page]
            expected = tiny.count(stream, **({"status": "any"} if stream == "orders" else {}))
            assert len(ids) == len(set(ids)) == expected
    finally:
        tiny.running.stop()


async def test_fetch_many_reads_records_by_ids_in_pages_of_250(store: Store) -> None:
    async with ShopifySource(store.config()) as source:
        every = {str(r["id"]): r for page in await _read_all(source, "orders") for r in page}
        before = source.api_calls
        wanted = [*sorted(every)[:260], "999999999", "not-an-id"]  # two calls of ids; unknown ids are absent
        found = await source.fetch_many("orders", wanted)
        calls = source.api_calls - before
        one = await source.fetch("orders", wanted[0])
    assert set(found) == set(sorted(every)[:260]) and calls == 2
    assert found[wanted[0]] == one == every[wanted[0]]  # as fetch gives it, untouched
    assert any(r["cancelled_at"] or r.get("closed_at") for r in found.values()), "status=any: closed orders too"


async def test_probe_and_estimate_are_one_cheap_call_each(store: Store) -> None:
    async with ShopifySource(store.config()) as source:
        sample = await source.probe("orders", 7)
        total = await source.estimate("orders", None)
        recent = sorted(r["updated_at"] for r in await source.probe("customers", 250))
        since = {"cursor": recent[len(recent) // 2]}  # a finished read's state, as the reader saves it
        changed = await source.estimate("customers", since)
        calls = source.api_calls
    assert len(sample) == 7 and "line_items" in sample[0]
    assert total == store.count("orders", status="any") == COUNTS["orders"]
    assert changed == store.count("customers", updated_at_min=since["cursor"]) and 0 < changed < COUNTS["customers"]
    assert calls == 4


async def test_probe_with_a_bad_token_is_an_auth_error(store: Store) -> None:
    async with ShopifySource(store.config(access_token="shpat_wrong")) as source:
        with pytest.raises(AuthError):
            await source.probe("customers", 1)
