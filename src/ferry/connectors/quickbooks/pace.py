"""Intuit's per-realm throttles kept on our side, before a call is sent: 10 requests a second, 500 a minute,
a few in flight. Over any of them Intuit answers 429 (ThrottleExceeded, code 3001); pacing here makes that
the exception, and the HTTP core still backs off and repeats a call that meets one."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

# Intuit counts a call when it arrives; ours leave at send time. A call sent just past our window could
# arrive inside Intuit's (network jitter, a slow TLS write), so each window is held this much longer.
MARGIN = 0.1


class Pacer:
    """Sliding windows of send times (one second, one minute) and a cap on calls in flight."""

    def __init__(
        self,
        per_second: int,
        per_minute: int,
        concurrent: int,
        *,
        batch_per_minute: int = 120,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.windows = ((1.0 + MARGIN, per_second, deque[float]()), (60.0 + MARGIN, per_minute, deque[float]()))
        self.batch_window = ((60.0 + MARGIN, batch_per_minute, deque[float]()),)
        self.clock = clock
        self.sleep = sleep
        self._slots = asyncio.Semaphore(concurrent)
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting for a window (reported, and tested)

    async def acquire(self) -> None:
        """Before every attempt of every call: a slot in flight and room in both windows."""
        await self._slots.acquire()
        await self._take(self.windows)

    async def acquire_batch(self) -> None:
        """Before a batch call, besides ``acquire``: Intuit allows 120 batch calls a minute per realm."""
        await self._take(self.batch_window)

    async def _take(self, windows: tuple[tuple[float, int, deque[float]], ...]) -> None:
        async with self._lock:
            while (wait := self._wait(windows)) > 0:
                self.waited += wait
                await self.sleep(wait)
            now = self.clock()
            for _, _, sent in windows:
                sent.append(now)

    def release(self) -> None:
        self._slots.release()

    def _wait(self, windows: tuple[tuple[float, int, deque[float]], ...]) -> float:
        now = self.clock()
        wait = 0.0
        for span, limit, sent in windows:
            while sent and sent[0] <= now - span:
                sent.popleft()
            if len(sent) >= limit:
                wait = max(wait, sent[0] + span - now + 0.001)
        return wait
