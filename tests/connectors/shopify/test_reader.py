"""Shopify's read as the Source contract's pages and states: the cursor of a read in updated_at order (where
it may move without a catch-up read), a crash mid-read, a saved page link the store refuses, an older ferry's
read. Driven through the engine's intake, which stages each page with its state."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from ferry.connectors.shopify.normalize import identify, record_version
from ferry.connectors.shopify.reader import ORDERED, ReadState, ShopifyPage, read_stream
from ferry.core.contracts import Source, SourcePage
from ferry.engine.intake import Intake
from ferry.errors import PermanentError
from ferry.model.values import version_of
from ferry.store import Store


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
        self.refuse_links = False  # answer a saved link as a store that no longer honours it would
        self.after_page: Callable[[int], None] = lambda served: None

    async def read_pages(
        self, stream: str, *, updated_at_min: str | None = None, resume_url: str | None = None
    ) -> AsyncIterator[ShopifyPage]:
        if resume_url is not None:
            if self.refuse_links:
                self.calls += 1
                raise PermanentError("HTTP 400: page_info is invalid", code="HTTP_400")
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
            yield ShopifyPage([dict(by_id[rid]) for _, rid in page], next_url, _iso(served_at))
            self.after_page(self.calls)
            if not more:
                return
            after = page[-1]


class ScriptedSource:
    """The Source contract over a scripted store: Shopify's reader and record identity, as ShopifySource has."""

    system = "shopify"
    streams = ("customers",)

    def __init__(self, shop: ScriptedShop) -> None:
        self.shop = shop

    def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        return read_stream(self.shop, stream, state, record_version)

    identify = staticmethod(identify)


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
    return await intake.read_stream(cast(Source, ScriptedSource(shop)), "customers")


def _state(store: Store) -> ReadState:
    return ReadState.parse(store.read_state("p", "customers"))


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
    assert _state(store).cursor == version_of(_iso(NOW - 7200 + 60 * 22))
    assert _state(store).read is None


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
    cursor = _state(store).cursor
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
    saved = _state(store).read
    assert saved is not None and saved.phase == ORDERED and saved.pages == 2
    # The first page (newest NOW - 7, served at NOW: NOW - 5 is the bound) did not reach the present; the second
    # (served at NOW + 1, newest NOW + 50) did: NOW + 1 - 5 s is kept with the page.
    assert saved.started_at == version_of(_iso(NOW - 4))
    shop.after_page = lambda served: None
    shop.now += 600  # the restart comes ten minutes later: its pages reach the present at a later time
    intake = Intake(store, "p", 2)
    assert await intake.read_stream(cast(Source, ScriptedSource(shop)), "customers") == 5
    assert intake.resumed == ["customers"]
    assert _state(store).cursor == version_of(_iso(NOW - 4))
    assert _state(store).read is None


async def test_a_saved_page_link_the_store_refuses_reads_the_phase_again_from_its_lower_bound(tmp_path: Path) -> None:
    shop = ScriptedShop(_customers([NOW - 7200 + 60 * i for i in range(12)]), NOW)

    class Killed(Exception):
        pass

    def kill(served: int) -> None:
        if served == 1:
            raise Killed

    shop.after_page = kill
    store = Store(tmp_path / "ferry.db")
    with pytest.raises(Killed):
        await _read(store, shop)
    saved = _state(store).read
    assert saved is not None and saved.next_url is not None and saved.pages == 1
    shop.after_page, shop.refuse_links, shop.calls = (lambda served: None), True, 0
    # The refused link (one call), then the whole phase again from its start: 12 records in 3 pages.
    assert await _read(store, shop, run_id=2) == 12
    assert shop.calls == 1 + 3
    assert _state(store).cursor == version_of(_iso(NOW - 7200 + 60 * 11)) and _state(store).read is None
    assert sorted(_staged(store)) == sorted(str(1000 + i) for i in range(12))


async def test_a_refused_link_on_a_fresh_read_is_an_error_not_a_loop(tmp_path: Path) -> None:
    class Refusing(ScriptedShop):
        async def read_pages(
            self, stream: str, *, updated_at_min: str | None = None, resume_url: str | None = None
        ) -> AsyncIterator[ShopifyPage]:
            raise PermanentError("HTTP 403: forbidden", code="HTTP_403")
            yield  # pragma: no cover - makes this an async generator

    store = Store(tmp_path / "ferry.db")
    with pytest.raises(PermanentError):
        await _read(store, Refusing([], NOW))
    assert store.read_state("p", "customers") is None


@pytest.mark.parametrize("phase", ["pages", "catchup"])
async def test_an_older_ferrys_read_runs_its_pages_then_its_catch_up_and_moves_the_cursor_once(
    tmp_path: Path, phase: str
) -> None:
    """As the store's migration leaves an older ferry's read: phase "pages" (id-order link) or "catchup"."""
    shop = ScriptedShop(_customers([NOW - 7200 + 60 * i for i in range(10)]), NOW)
    started = version_of(_iso(NOW - 7200 + 60 * 7))  # when the older ferry's read began: 3 records changed since
    newest = version_of(_iso(NOW - 7200 + 60 * 4))
    read = (
        {"phase": "pages", "since": None, "next_url": f"scripted://after/{NOW - 7200 + 240}/1004",
         "newest": newest, "started_at": started, "pages": 1}
        if phase == "pages"
        else {"phase": "catchup", "since": started, "next_url": None, "newest": newest, "started_at": "", "pages": 0}
    )
    store = Store(tmp_path / "ferry.db")
    store.stage("p", "customers", 1, [], {"cursor": None, "read": read})
    staged = await _read(store, shop)
    if phase == "pages":
        # The rest of the id-order pages (5 records, 1 page), then the catch-up from the read's start.
        assert staged == 5 + 3 and shop.calls == 1 + 1
    else:
        assert staged == 3 and shop.calls == 1
    state = _state(store)
    assert state.read is None
    # The catch-up's own start (its first page's clock less the margin) is past every record: the newest it is.
    assert state.cursor == version_of(_iso(NOW - 7200 + 60 * 9))


async def test_a_phase_whose_pages_were_all_staged_finishes_without_a_call(tmp_path: Path) -> None:
    shop = ScriptedShop(_customers([NOW - 100]), NOW)
    newest = version_of(_iso(NOW - 100))
    read = {"phase": ORDERED, "since": None, "next_url": None, "newest": newest, "started_at": "", "pages": 3}
    store = Store(tmp_path / "ferry.db")
    store.stage("p", "customers", 1, [], {"cursor": None, "read": read})
    assert await _read(store, shop) == 0
    assert shop.calls == 0
    assert _state(store) == ReadState(newest)


def test_a_state_round_trips_through_json() -> None:
    state = ReadState.parse({"cursor": "c", "read": {"phase": "catchup", "since": "s", "next_url": None,
                                                     "newest": "n", "started_at": "", "pages": 2}})
    assert ReadState.parse(state.as_json()) == state
    assert ReadState.parse(None) == ReadState(None) == ReadState.parse({})


async def test_a_read_an_older_ferry_left_mid_stream_continues_after_the_upgrade(tmp_path: Path) -> None:
    """The old `reads` row (next-page link, newest, pages) and `cursors` row, migrated by the store, continue
    the read at the saved link: nothing read twice, nothing lost, the cursor moved once at the end."""
    from tests.store.test_read_state_migration import OLD_SCHEMA

    updated = [NOW - 7200 + 60 * i for i in range(12)]
    shop = ScriptedShop(_customers(updated), NOW)
    old = tmp_path / "ferry.db"
    first_page = shop.records[:5]
    with sqlite3.connect(old) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO cursors VALUES ('p', 'customers', ?, ?)", (version_of(_iso(NOW - 9000)), "x"))
        db.execute(
            "INSERT INTO reads VALUES ('p', 'customers', 1, ?, ?, ?, '', 'ordered', 1)",
            (version_of(_iso(NOW - 9000)), f"scripted://after/{updated[4]}/1004", version_of(_iso(updated[4]))),
        )
        db.executemany(
            "INSERT INTO staging (pipeline, stream, key, version, payload, run_id) "
            "VALUES ('p', 'customers', ?, ?, ?, 1)",
            [(str(c["id"]), record_version("customers", c), b"{}") for c in first_page],
        )
    store = Store(old)
    intake = Intake(store, "p", 2)
    assert await intake.read_stream(cast(Source, ScriptedSource(shop)), "customers") == 7
    assert shop.calls == 2 and intake.resumed == ["customers"]
    assert sorted(_staged(store)) == sorted(str(1000 + i) for i in range(12))
    assert _state(store) == ReadState(version_of(_iso(updated[11])))
