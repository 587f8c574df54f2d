"""Intake: a read whose call gives up past the HTTP core's retries pauses and goes on from its last staged page;
the cursor of a read in updated_at order (where it may move without a catch-up read)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from ferry.connectors.shopify.source import ShopifySource, SourcePage
from ferry.engine.intake import Intake
from ferry.engine.runner import Runner
from ferry.model.values import version_of
from ferry.store import LetterFilter, Store
from tests.engine.world import world


async def test_a_throttling_burst_longer_than_the_client_retries_pauses_the_read_not_the_run(tmp_path: Path) -> None:
    with world(tmp_path, customers=30, products=3, orders=6) as w:
        # Nine 429s in a row on the customers list: more than the Shopify client's six attempts per call.
        w.shop.faults.configure(
            {
                "rules": [
                    {"kind": "429", "rate": 1.0, "count": 1, "burst": 9, "retry_after": 0.1, "path": "customers.json"}
                ]
            }
        )
        spec = w.spec(w.pipeline_file("burst", lambda s: s["source"].update(page_size=10)))
        store = Store(tmp_path / "ferry.db")
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert w.shop.faults.injected["429"] == 9
        dead = store.dead_letter_keys("burst", "Account")
        assert {str(c["id"]) for c in w.shop.store.customers} <= set(w.keys("Account")) | dead
        assert not {d.error_code for d in store.find_dead_letters(LetterFilter(pipeline="burst"), 1000)} & {
            "RETRIES_EXHAUSTED",
            "HTTP_429",
        }


# ---------------------------------------------------------------------- the cursor rule of an ordered read


class ScriptedShop:
    """A store read the way ShopifySource.read_pages reads Shopify: keyset pages in (updated_at, id) order from
    an inclusive updated_at_min, each page with the store's clock. The clock is scripted (``step`` seconds a
    page), and ``after_page`` may change the store between pages, as a write committing late would."""

    def __init__(self, records: list[dict[str, Any]], now: int, *, page_size: int = 5, step: int = 1) -> None:
        self.records = records
        self.now = now
        self.page_size = page_size
        self.step = step
        self.calls = 0
        self.after_page: Callable[[int], None] = lambda served: None

    async def read_pages(
        self, stream: str, *, updated_at_min: str | None = None, resume_url: str | None = None
    ) -> AsyncIterator[SourcePage]:
        if resume_url is not None:
            _, u, rid = resume_url.rsplit("/", 2)
            after: tuple[int, int] = (int(u), int(rid))
        else:
            lo = _epoch(updated_at_min) if updated_at_min else -1
            after = (lo, -1)  # strictly after (lo, -1): updated at lo or later, inclusive as Shopify's filter
        while True:
            ranked = sorted((_epoch(r["updated_at"]), r["id"]) for r in self.records)
            keys = [k for k in ranked if k > after][: self.page_size + 1]
            page, more = keys[: self.page_size], len(keys) > self.page_size
            by_id = {r["id"]: r for r in self.records}
            self.calls += 1
            served_at = self.now
            self.now += self.step
            next_url = f"scripted://after/{page[-1][0]}/{page[-1][1]}" if more else None
            yield SourcePage([dict(by_id[rid]) for _, rid in page], next_url, _iso(served_at))
            self.after_page(self.calls)
            if not more:
                return
            after = page[-1]


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _customers(updated: list[int]) -> list[dict[str, Any]]:
    return [{"id": 1000 + i, "updated_at": _iso(u), "created_at": _iso(min(updated) - 86400)}
            for i, u in enumerate(updated)]


NOW = _epoch("2026-12-02T06:00:00Z")


async def _read(store: Store, shop: ScriptedShop, run_id: int = 1) -> int:
    intake = Intake(store, "p", run_id)
    return await intake.read_stream(cast(ShopifySource, shop), "customers")


def _staged(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for chunk in store.staged("p", ["customers"]):
        for r in chunk:
            out.setdefault(r.key, []).append(r.version)
    return out


async def test_a_backfill_of_history_moves_the_cursor_to_the_newest_version(tmp_path: Path) -> None:
    shop = ScriptedShop(_customers([NOW - 7200 + 60 * i for i in range(23)]), NOW)
    store = Store(tmp_path / "ferry.db")
    assert await _read(store, shop) == 23
    assert shop.calls == 5  # 23 records, 5 a page: no read beyond the pages
    assert store.get_cursor("p", "customers") == version_of(_iso(NOW - 7200 + 60 * 22))
    assert store.read_progress("p", "customers") is None


async def test_a_read_that_reached_the_present_stops_its_cursor_where_a_late_commit_could_hide(
    tmp_path: Path,
) -> None:
    # Old records, then five changed in the last seconds: the read reaches the present on its third page.
    updated = [NOW - 7200 + 60 * i for i in range(10)] + [NOW - 4, NOW - 3, NOW - 3, NOW - 2, NOW - 1]
    shop = ScriptedShop(_customers(updated), NOW, step=1)
    late = {"id": 5000, "updated_at": _iso(NOW - 1), "created_at": _iso(NOW - 100)}

    def commit_late(served: int) -> None:
        # A write stamped NOW - 1 that becomes visible only after the page holding NOW - 1 was served: the
        # keyset read has passed its place and will not meet it.
        if served == 3:
            shop.records.append(late)

    shop.after_page = commit_late
    store = Store(tmp_path / "ferry.db")
    assert await _read(store, shop) == 15
    assert "5000" not in _staged(store)
    # Page 3 was served at NOW + 2 and its newest (NOW - 1) is past NOW + 2 - 5 s: the cursor stops at NOW - 3,
    # not at the newest version seen (NOW - 1), which would leave the late write behind for good.
    cursor = store.get_cursor("p", "customers")
    assert cursor == version_of(_iso(NOW + 2 - 5)) < version_of(_iso(NOW - 1))
    assert shop.calls == 3

    shop.after_page = lambda served: None
    assert await _read(store, shop, run_id=2) >= 1
    assert _staged(store)["5000"] == [version_of(late["updated_at"])]  # read by the next run


async def test_where_the_read_reached_the_present_survives_a_crash(tmp_path: Path) -> None:
    updated = [NOW - 9, NOW - 8, NOW - 8, NOW - 7, NOW - 7] + [NOW + 10 * i for i in range(1, 11)]
    shop = ScriptedShop(_customers(updated), NOW, step=1)

    class Killed(Exception):
        pass

    def kill(served: int) -> None:
        if served == 2:
            raise Killed

    shop.after_page = kill
    store = Store(tmp_path / "ferry.db")
    with pytest.raises(Killed):
        await _read(store, shop)
    saved = store.read_progress("p", "customers")
    assert saved is not None and saved.phase == "ordered" and saved.pages == 2
    # The first page (newest NOW - 7, served at NOW: NOW - 5 is the bound) did not reach the present; the second
    # (served at NOW + 1, newest NOW + 50) did: NOW + 1 - 5 s is kept with the page.
    assert saved.started_at == version_of(_iso(NOW - 4))
    shop.after_page = lambda served: None
    shop.now += 600  # the restart comes ten minutes later: its pages reach the present at a later time
    assert await _read(store, shop, run_id=2) == 5
    assert store.get_cursor("p", "customers") == version_of(_iso(NOW - 4))
