"""Intuit's throttles kept on our side, before a call is sent: per realm 10 requests a second, 500 a minute, a few
in flight; batch calls 40 a minute per realm and app (ferry is one app; 120 a minute is the realm's across apps).
Over any of them Intuit answers 429 (ThrottleExceeded, code 3001); pacing here makes that the exception, and the
HTTP core still backs off and repeats a call that meets one.

The windows are this process's. Intuit's limits are the company's: several processes writing one company (two
pipelines, a run and a ``dlq replay``, a run restarted after a crash while the company still counts the dead
one's calls) share its 500 calls and ferry's 40 batch calls a minute. ``SharedMinute`` counts every call to a company in
ferry's state store (the ``ApiLedger`` port, one transaction per call) under the key ``quickbooks:<realm id>``
(batch calls under ``quickbooks:<realm id>:batch``), so every process using that store (one ``FERRY_HOME``, or
one PostgreSQL) stays under the limits together."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from ferry.core.ports import ApiLedger

# Set while a ``batch`` call is made: every attempt of it (the HTTP core's repeats included) takes a batch slot too.
BATCH_CALL: ContextVar[bool] = ContextVar("quickbooks_batch_call", default=False)

# Intuit counts a call when it arrives; ours leave at send time. A call sent just past our window could
# arrive inside Intuit's (network jitter, a slow TLS write), so each window is held this much longer.
MARGIN = 0.1
# The one-second window is held longer still: single calls sent at 10 a second (what the sink does when the batch
# calls of the minute are spent) met 429s with 0.1 s, calls bunching up on their way on a loaded machine.
SECOND_MARGIN = 0.25
MINUTE_MARGIN = 1.0  # ... and the minute's, which those singles fill to its 500 (1.6% of its calls)


BATCH_PER_MINUTE = 40  # batch calls a minute per realm and app (SampleApp-Batch-Java: "Max 40 ... per realmId")
LEDGER_SYSTEM = "quickbooks"
_KEEP_MINUTES = 1440  # buckets older than a day are forgotten (as the Salesforce budget's are)


class SharedMinute:
    """A company's calls per minute, counted in the state store for every process that uses it.

    Intuit's windows slide; the ledger counts per calendar minute. The estimate of the last 60 s is the
    current minute's count plus the previous minute's, weighted by how much of it is still inside the window
    (the sliding-window counter: exact when calls are spread evenly, a few percent off when they bunch up at
    a minute's end; the HTTP core backs off from the 429 that may then come)."""

    def __init__(self, ledger: ApiLedger, realm_id: str, limit: int, *, kind: str = "calls",
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.key = f"quickbooks:{realm_id}" if kind == "calls" else f"quickbooks:{realm_id}:{kind}"
        self.limit = limit
        self.clock = clock
        self.pruned = False
        self._previous: tuple[int, int] | None = None  # (minute, calls): a past minute no longer changes

    def take(self) -> float:
        """Count one call now and return 0, or, when the window is full, how long to wait before asking again."""
        now = self.clock()
        minute = int(now // 60)
        if not self.pruned:
            self.ledger.prune_api_calls(minute - _KEEP_MINUTES)
            self.pruned = True
        carried = math.ceil(self._previous_calls(minute) * (60 - (now - minute * 60)) / 60)
        taken, _ = self.ledger.take_api_calls(self.key, LEDGER_SYSTEM, minute, 1, cap=max(self.limit - carried, 0),
                                              since_minute=minute)
        if taken:
            return 0.0
        return min(1.0, (minute + 1) * 60 - now + MARGIN)  # the carried share shrinks every second

    def wait(self) -> float:
        """How long until ``take`` would count a call, without counting one (0: now). The previous minute's share
        shrinks linearly, so the wait is until it has shrunk enough, or until the minute ends."""
        now = self.clock()
        minute = int(now // 60)
        previous = self._previous_calls(minute)
        current = dict(self.ledger.api_call_buckets(self.key, LEDGER_SYSTEM, minute)).get(minute, 0)
        room = self.limit - current - 1  # the carried share that still lets one more call in
        if room < 0:
            return (minute + 1) * 60 - now + MARGIN
        elapsed = now - minute * 60
        if math.ceil(previous * (60 - elapsed) / 60) <= room:
            return 0.0
        return max(0.0, 60 - 60 * room / previous - elapsed) + MARGIN  # previous > room >= 0 here

    def _previous_calls(self, minute: int) -> int:
        if self._previous is None or self._previous[0] != minute - 1:
            buckets = dict(self.ledger.api_call_buckets(self.key, LEDGER_SYSTEM, minute - 1))
            self._previous = (minute - 1, buckets.get(minute - 1, 0))
        return self._previous[1]


class Pacer:
    """Sliding windows of send times (one second, one minute) and a cap on calls in flight; with ``shared``,
    the company's calls of every process using the same state store are capped per minute too."""

    def __init__(
        self,
        per_second: int,
        per_minute: int,
        concurrent: int,
        *,
        batch_per_minute: int = BATCH_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared: SharedMinute | None = None,
        shared_batches: SharedMinute | None = None,
    ) -> None:
        self.windows = ((1.0 + SECOND_MARGIN, per_second, deque[float]()),
                        (60.0 + MINUTE_MARGIN, per_minute, deque[float]()))
        self.batch_window = ((60.0 + MARGIN, batch_per_minute, deque[float]()),)
        self.clock = clock
        self.sleep = sleep
        self._slots = asyncio.Semaphore(concurrent)
        self._lock = asyncio.Lock()
        # Batch calls wait for their window under a lock of their own: a batch call waiting most of a minute for
        # its slot must not hold up the single calls that meanwhile write what no batch slot is left for.
        self._batch_lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting for a window (reported, and tested)
        self.shared = shared
        self.shared_batches = shared_batches
        self.shared_waited = 0.0  # ... of which for other processes' calls to the company

    async def acquire(self) -> None:
        """Before every attempt of every call: a slot in flight, room in both windows and in the shared minute
        (and, for an attempt of a batch call, in the batch windows: Intuit counts each attempt)."""
        await self._slots.acquire()
        # The local windows are stamped last, right before the call leaves: a ledger transaction or a batch slot
        # waited for after the stamp would send the call later than counted, and Intuit counts arrivals (calls
        # bunched that way met 429s at 10 a second).
        await self._take_shared(self.shared, self._lock)
        if BATCH_CALL.get():
            await self.acquire_batch()
        await self._take(self.windows, self._lock)
        if BATCH_CALL.get():
            self._restamp_batch()

    def _restamp_batch(self) -> None:
        """The batch call's slot counted from when it leaves (after the per-second window's wait), not before."""
        sent = self.batch_window[0][2]
        if sent:
            sent[-1] = max(sent[-1], self.clock())

    async def _take_shared(self, shared: SharedMinute | None, lock: asyncio.Lock) -> None:
        if shared is None:
            return
        async with lock:
            while (wait := shared.take()) > 0:
                self.waited += wait
                self.shared_waited += wait
                await self.sleep(wait)

    async def acquire_batch(self) -> None:
        """Before an attempt of a batch call, besides the rest of ``acquire``: Intuit allows 40 a minute per app."""
        await self._take(self.batch_window, self._batch_lock)
        await self._take_shared(self.shared_batches, self._batch_lock)

    async def _take(self, windows: tuple[tuple[float, int, deque[float]], ...], lock: asyncio.Lock) -> None:
        async with lock:
            while (wait := self._wait(windows)) > 0:
                self.waited += wait
                await self.sleep(wait)
            now = self.clock()
            for _, _, sent in windows:
                sent.append(now)

    def batch_wait(self) -> float:
        """Seconds until a batch call could be sent (0: now), in this process's window and the shared one; nothing
        is taken: the sink asks it to choose between waiting for a batch slot and sending single calls."""
        local = self._wait(self.batch_window)
        shared = self.shared_batches.wait() if self.shared_batches is not None else 0.0
        return max(local, shared)

    def seconds_for_calls(self, calls: int) -> float:
        """About how long ``calls`` single calls take under the windows: one second's worth at a time, and when the
        minute's room is short, until enough of the minute's calls have left it."""
        (second, per_second, _), (span, per_minute, sent) = self.windows
        seconds = calls * second / per_second
        now = self.clock()
        recent = [t for t in sent if t > now - span]
        short = len(recent) + calls - per_minute
        if short > 0:
            seconds = max(seconds, recent[min(short, len(recent)) - 1] + span - now if recent else span)
        return seconds

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
