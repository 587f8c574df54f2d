"""Budget blocks (ferry.engine.budget_blocks): workers reserving API calls several at a time from the shared
PostgreSQL ledger never pass the budget together, give back what they do not use, and count each call in the
minute it is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.engine.budget_blocks import BlockLedger
from ferry.store.postgres import PostgresStore, migrate
from tests.store.postgres_server import PostgresServer

P, SF = "p", "salesforce"


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    url = pg_server.fresh_schema()
    migrate(url)
    return url


@pytest.fixture
def stores(pg_url: str, tmp_path: Path) -> Iterator[list[PostgresStore]]:
    """Four handles on one state: what four worker processes hold (each its own connections)."""
    handles = [PostgresStore(pg_url, lock_dir=tmp_path, max_size=2) for _ in range(4)]
    yield handles
    for h in handles:
        h.close()


def _sum(store: PostgresStore, since: int = 0) -> int:
    return sum(n for _, n in store.api_call_buckets(P, SF, since))


def test_workers_taking_blocks_at_once_never_pass_the_budget_together(stores: list[PostgresStore]) -> None:
    cap, block, tries = 50, 7, 40
    ledgers = [BlockLedger(s, block) for s in stores]
    taken: list[bool] = []
    over: list[int] = []
    lock = threading.Lock()
    running = threading.Event()
    running.set()

    def worker(ledger: BlockLedger) -> None:
        for _ in range(tries):
            ok, _spent = ledger.take_api_calls(P, SF, 100, 1, cap=cap, since_minute=0)
            with lock:
                taken.append(ok)

    def watch() -> None:  # the shared ledger's count (reservations included) is never past the cap
        while running.is_set():
            if (total := _sum(stores[0])) > cap:
                over.append(total)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=worker, args=(ledger,)) for ledger in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    running.clear()
    watcher.join()
    sent = taken.count(True)
    assert len(taken) == len(ledgers) * tries
    assert over == []
    assert sent <= cap
    # Every worker made more tries than its share: only calls held by a worker that had finished go unused.
    assert sent >= cap - len(ledgers) * (block - 1)
    held = sum(ledger.held() for ledger in ledgers)
    assert _sum(stores[0]) == sent + held
    for ledger in ledgers:
        ledger.close()
    # Stopped cleanly: the unused reservations are given back, the ledger counts exactly the calls handed out.
    assert _sum(stores[0]) == sent
    assert sum(ledger.held() for ledger in ledgers) == 0


def test_the_last_calls_of_the_share_are_taken_one_by_one(stores: list[PostgresStore]) -> None:
    a, b = BlockLedger(stores[0], 20), BlockLedger(stores[1], 20)
    assert a.take_api_calls(P, SF, 100, 1, cap=25, since_minute=0)[0]  # a block of 20
    # b's block of 20 would pass 25: b still gets its calls while exactly that many fit
    assert [b.take_api_calls(P, SF, 100, 1, cap=25, since_minute=0)[0] for _ in range(6)] == [True] * 5 + [False]
    assert _sum(stores[0]) == 25
    assert a.held() == 19
    a.close()
    assert _sum(stores[0]) == 6


def test_a_block_is_used_only_in_the_minute_it_was_counted_in(stores: list[PostgresStore]) -> None:
    ledger = BlockLedger(stores[0], 10)
    for _ in range(3):
        assert ledger.take_api_calls(P, SF, 100, 1, cap=1000, since_minute=0)[0]
    # A call sent in minute 101 is counted in 101 (it ages out of the rolling window when Salesforce's count
    # does), and minute 100 keeps only the 3 calls sent in it.
    assert ledger.take_api_calls(P, SF, 101, 2, cap=1000, since_minute=0)[0]
    assert stores[0].api_call_buckets(P, SF, 0) == [(100, 3), (101, 10)]
    ledger.close()
    assert stores[0].api_call_buckets(P, SF, 0) == [(100, 3), (101, 2)]


def test_a_per_minute_pacing_window_is_not_taken_in_blocks(stores: list[PostgresStore]) -> None:
    # QuickBooks paces 40 calls a minute (the window is this minute): a reservation would hold other workers back.
    ledger = BlockLedger(stores[0], 10)
    assert ledger.take_api_calls(P, "quickbooks", 100, 1, cap=40, since_minute=100) == (True, 1)
    assert stores[0].api_call_buckets(P, "quickbooks", 0) == [(100, 1)]
    assert ledger.held() == 0
