"""Intuit's per-realm throttles kept on our side, before a call is sent: 10 requests a second, 500 a minute,
a few in flight. Over any of them Intuit answers 429 (ThrottleExceeded, code 3001); pacing here makes that
the exception, and the HTTP core still backs off and repeats a call that meets one.

The windows are this process's. Intuit's limits are the company's: several processes writing one company (two
pipelines, a run and a ``dlq replay``) share its 500 calls a minute. ``SharedMinute`` counts every call to a
company in ferry's state store (the ``ApiLedger`` port, one transaction per call) under the key
``quickbooks:<realm id>``, so every process using that store (one ``FERRY_HOME``, or one PostgreSQL) stays
under ``per_minute`` together, by calendar minute."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from ferry.core.ports import ApiLedger

# Intuit counts a call when it arrives; ours leave at send time. A call sent just past our window could
# arrive inside Intuit's (network jitter, a slow TLS write), so each window is held this much longer.
MARGIN = 0.1


LEDGER_SYSTEM = "quickbooks"
_KEEP_MINUTES = 1440  # buckets older than a day are forgotten (as the Salesforce budget's are)


class SharedMinute:
    """A company's calls per calendar minute, counted in the state store for every process that uses it."""

    def __init__(self, ledger: ApiLedger, realm_id: str, per_minute: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.key = f"quickbooks:{realm_id}"
        self.per_minute = per_minute
        self.clock = clock
        self.pruned = False

    def take(self) -> float:
        """Count one call now and return 0, or, when the minute is full, the seconds until the next one."""
        now = self.clock()
        minute = int(now // 60)
        if not self.pruned:
            self.ledger.prune_api_calls(minute - _KEEP_MINUTES)
            self.pruned = True
        taken, _ = self.ledger.take_api_calls(self.key, LEDGER_SYSTEM, minute, 1, cap=self.per_minute,
                                              since_minute=minute)
        return 0.0 if taken else (minute + 1) * 60 - now + MARGIN


class Pacer:
    """Sliding windows of send times (one second, one minute) and a cap on calls in flight; with ``shared``,
    the company's calls of every process using the same state store are capped per minute too."""

    def __init__(
        self,
        per_second: int,
        per_minute: int,
        concurrent: int,
        *,
        batch_per_minute: int = 120,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared: SharedMinute | None = None,
    ) -> None:
        self.windows = ((1.0 + MARGIN, per_second, deque[float]()), (60.0 + MARGIN, per_minute, deque[float]()))
        self.batch_window = ((60.0 + MARGIN, batch_per_minute, deque[float]()),)
        self.clock = clock
        self.sleep = sleep
        self._slots = asyncio.Semaphore(concurrent)
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting for a window (reported, and tested)
        self.shared = shared
        self.shared_waited = 0.0  # ... of which for other processes' calls to the company

    async def acquire(self) -> None:
        """Before every attempt of every call: a slot in flight, room in both windows and in the shared minute."""
        await self._slots.acquire()
        await self._take(self.windows)
        if self.shared is not None:
            async with self._lock:
                while (wait := self.shared.take()) > 0:
                    self.waited += wait
                    self.shared_waited += wait
                    await self.sleep(wait)

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
