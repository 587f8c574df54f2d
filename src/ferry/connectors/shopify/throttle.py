"""Client side of Shopify's leaky bucket: slow down before the store answers 429.

Every response reports ``X-Shopify-Shop-Api-Call-Limit: used/size``. Between responses the
bucket drains at ``leak_rate`` calls per second; we assume the Standard plan's 2/s unless told
otherwise (draining faster than we think only makes us slightly more polite than needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable

from ferry.observe import metrics

CALL_LIMIT_HEADER = "X-Shopify-Shop-Api-Call-Limit"


def parse_call_limit(value: str | None) -> tuple[int, int] | None:
    """``"32/40"`` → ``(32, 40)``; anything else → None."""
    if not value:
        return None
    used, sep, size = value.strip().partition("/")
    if not sep:
        return None
    try:
        pair = int(used), int(size)
    except ValueError:
        return None
    return pair if pair[1] > 0 and pair[0] >= 0 else None


class LeakyBucket:
    def __init__(
        self,
        *,
        leak_rate: float = 2.0,
        headroom_fraction: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.leak_rate = leak_rate
        self.headroom_fraction = headroom_fraction
        self._clock = clock
        self._sleep = sleep
        self._used = 0.0
        self._size: int | None = None  # unknown until the first response
        self._at = clock()
        self._in_flight = 0  # acquired, no answer yet: the store's count may not include them
        self._answered = asyncio.Event()  # set (and replaced) each time a call in flight finishes
        self.waited_seconds = 0.0

    def release(self, header: str | None) -> None:
        """A call we acquired for has finished; ``header`` is its call-limit header, if it got a response."""
        self._in_flight = max(0, self._in_flight - 1)
        self.observe(header)
        answered, self._answered = self._answered, asyncio.Event()
        answered.set()

    def observe(self, header: str | None) -> None:
        """The store's count is the truth for what it has seen; calls still in flight may come on top of it."""
        parsed = parse_call_limit(header)
        if parsed is None:
            return
        self._used, self._size = float(parsed[0] + self._in_flight), parsed[1]
        self._at = self._clock()
        metrics.budget_remaining("shopify", "bucket", parsed[1] - parsed[0], limit=parsed[1])

    def level(self) -> float:
        drained = (self._clock() - self._at) * self.leak_rate
        return max(0.0, self._used - drained)

    def threshold(self) -> float:
        if self._size is None:
            return 1.0  # size unknown until the first answer: one call at a time until then
        headroom = max(1, math.ceil(self._size * self.headroom_fraction))
        return float(max(1, self._size - headroom))

    async def acquire(self) -> None:
        """Wait until one more call keeps the bucket under the threshold, then count it as in flight."""
        while True:
            level = self.level()
            limit = self.threshold()
            if level + 1 <= limit:
                self._used, self._at = level + 1, self._clock()
                self._in_flight += 1
                return
            pause = (level + 1 - limit) / self.leak_rate
            if self._size is None and self._in_flight:
                await self._first_answer(pause)
                continue
            self.waited_seconds += pause
            await self._sleep(pause)

    async def _first_answer(self, at_most: float) -> None:
        """While the size is unknown calls go one at a time, and the next waits for the call in flight to
        answer (its header tells the size and level), not for a drop to leak: concurrent fetches on a new
        client would otherwise all start half a second late (the leak of one drop at 2/s)."""
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answered.wait(), at_most)
        self.waited_seconds += time.monotonic() - started
