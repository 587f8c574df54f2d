"""API ledger port: calls counted per minute before they are sent; a take that would pass the cap of the
window is refused whole, and two handles of one pipeline never both take the last call."""

from __future__ import annotations

import threading

from .conftest import Backend, BackendFactory


def test_a_take_is_counted_unless_it_would_pass_the_cap(store: Backend) -> None:
    assert store.take_api_calls("p", "salesforce", 100, 6, cap=10, since_minute=90) == (True, 6)
    assert store.take_api_calls("p", "salesforce", 101, 5, cap=10, since_minute=90) == (False, 6)  # refused whole
    assert store.take_api_calls("p", "salesforce", 101, 4, cap=10, since_minute=90) == (True, 10)
    assert store.take_api_calls("p", "salesforce", 101, 1, cap=10, since_minute=90) == (False, 10)
    assert store.take_api_calls("p", "salesforce", 101, 1, cap=None, since_minute=90) == (True, 11)  # no cap
    # The window moves on: the minute-100 bucket is out of it.
    assert store.take_api_calls("p", "salesforce", 102, 1, cap=10, since_minute=101) == (True, 6)
    assert store.api_call_buckets("p", "salesforce", 0) == [(100, 6), (101, 5), (102, 1)]
    assert store.api_call_buckets("p", "salesforce", 101) == [(101, 5), (102, 1)]


def test_buckets_are_per_pipeline_and_system_and_pruned_by_minute(store: Backend) -> None:
    store.take_api_calls("p", "salesforce", 100, 3, cap=None, since_minute=0)
    store.take_api_calls("p", "shopify", 100, 2, cap=None, since_minute=0)
    store.take_api_calls("q", "salesforce", 200, 1, cap=None, since_minute=0)
    assert store.take_api_calls("p", "salesforce", 100, 1, cap=4, since_minute=0) == (True, 4)
    assert store.prune_api_calls(150) == 2
    assert store.api_call_buckets("p", "salesforce", 0) == []
    assert store.api_call_buckets("q", "salesforce", 0) == [(200, 1)]


def test_the_allocation_is_the_last_reported(store: Backend) -> None:
    assert store.api_allocation("p", "salesforce") is None
    store.save_api_allocation("p", "salesforce", 15_000)
    store.save_api_allocation("p", "salesforce", 100_000)
    assert store.api_allocation("p", "salesforce") == 100_000
    assert store.api_allocation("q", "salesforce") is None


def test_handles_taking_at_once_never_pass_the_cap(backend: BackendFactory) -> None:
    handles = [backend.open() for _ in range(4)]
    taken: list[bool] = []
    lock = threading.Lock()

    def take(store: Backend) -> None:
        for _ in range(30):
            ok, _spent = store.take_api_calls("p", "salesforce", 100, 1, cap=50, since_minute=0)
            with lock:
                taken.append(ok)

    threads = [threading.Thread(target=take, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert taken.count(True) == 50 and len(taken) == 120
    assert handles[0].api_call_buckets("p", "salesforce", 0) == [(100, 50)]
    for h in handles:
        h.close()
