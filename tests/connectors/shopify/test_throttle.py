from __future__ import annotations

import asyncio
import time

import pytest

from ferry.connectors.shopify.throttle import LeakyBucket, parse_call_limit


@pytest.mark.parametrize(("header", "expected"), [("32/40", (32, 40)), ("0/40", (0, 40)), (None, None),
                                                  ("x/40", None), ("40", None), ("3/0", None)])
def test_parse_call_limit(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_call_limit(header) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_no_wait_while_the_bucket_has_room() -> None:
    clock = Clock()
    bucket = LeakyBucket(leak_rate=2.0, clock=clock, sleep=clock.sleep)
    bucket.observe("10/40")
    await bucket.acquire()
    assert clock.slept == []


async def test_slows_down_before_the_bucket_is_full() -> None:
    clock = Clock()
    bucket = LeakyBucket(leak_rate=2.0, clock=clock, sleep=clock.sleep)
    bucket.observe("39/40")  # threshold is 40 - 8 = 32
    await bucket.acquire()
    assert clock.slept and sum(clock.slept) == pytest.approx((39 + 1 - 32) / 2.0)
    assert bucket.level() <= 32


async def test_estimate_counts_calls_in_flight() -> None:
    clock = Clock()
    bucket = LeakyBucket(leak_rate=2.0, clock=clock, sleep=clock.sleep)
    bucket.observe("0/10")  # threshold 8
    for _ in range(8):
        await bucket.acquire()
    assert clock.slept == []
    await bucket.acquire()
    assert clock.slept  # the ninth call without any response waits for the leak


async def test_calls_in_flight_count_on_top_of_the_stores_number() -> None:
    clock = Clock()
    bucket = LeakyBucket(leak_rate=2.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    bucket.release("1/10")  # size learnt: threshold 8
    for _ in range(3):
        await bucket.acquire()
    bucket.release("2/10")  # the store saw 2; two more are still on their way
    assert bucket.level() == 4
    bucket.release(None)  # a call that died without an answer frees its slot too
    bucket.release(None)
    assert bucket.level() == 4  # nothing new observed: the estimate only drains with time
    clock.now += 1.0
    assert bucket.level() == 2


async def test_one_call_at_a_time_until_the_bucket_size_is_known() -> None:
    clock = Clock()
    bucket = LeakyBucket(leak_rate=2.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    assert bucket.threshold() == 1.0


async def test_the_next_call_waits_for_the_first_answer_not_for_a_leak() -> None:
    """Concurrent calls on a new client: the second goes as soon as the first answer tells the bucket's size
    (here at once), not half a second later (one drop leaking at 2/s)."""
    bucket = LeakyBucket(leak_rate=2.0)
    await bucket.acquire()
    second = asyncio.ensure_future(bucket.acquire())
    await asyncio.sleep(0.01)
    assert not second.done()  # one call at a time until the size is known
    started = time.monotonic()
    bucket.release("1/40")
    await asyncio.wait_for(second, 1.0)
    assert time.monotonic() - started < 0.2
    assert bucket.threshold() == 32.0


async def test_a_first_call_without_answer_lets_the_next_go_after_the_leak() -> None:
    bucket = LeakyBucket(leak_rate=20.0)  # one drop leaks in 0.05 s
    await bucket.acquire()
    started = time.monotonic()
    await asyncio.wait_for(bucket.acquire(), 1.0)  # the first never answers: the leak frees the slot
    assert 0.03 < time.monotonic() - started < 0.5
