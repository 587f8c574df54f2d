"""How many calls ferry has in flight against one org, and how many of them are long-running.

Salesforce refuses new requests (403 REQUEST_LIMIT_EXCEEDED "ConcurrentRequests") while 25 requests
(5 on a Developer Edition org) have been running for 20 s or longer. Any call in flight may become
one of those, so the gate never admits more than ``max_in_flight`` calls, and config validation
keeps ``max_in_flight <= long_running_limit``: the limit cannot be passed by construction. On top of
that the gate tracks the calls that did pass 20 s, so a run reports them and admission also waits
while ``long_running_limit`` of them are still running (a slow org makes ferry back off on its own).

``SalesforceClient`` holds a slot for a whole call (its retries included, so a throttled call keeps
counting as in flight) but not for the token endpoint, which the core reaches from inside a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx

LONG_RUNNING_SECONDS = 20.0


class CallGate:
    def __init__(
        self,
        max_in_flight: int,
        long_running_limit: int,
        *,
        long_after: float = LONG_RUNNING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_flight = max(1, max_in_flight)
        self.long_running_limit = max(1, long_running_limit)
        self.long_after = long_after
        self._clock = clock
        self._started: list[float] = []  # start times of calls in flight (oldest first)
        self._wake = asyncio.Event()
        self.peak_in_flight = 0
        self.long_calls = 0  # calls that ran long_after seconds or more
        self.peak_long_running = 0

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def long_running(self) -> int:
        """Calls in flight right now that have been running ``long_after`` seconds or more."""
        cutoff = self._clock() - self.long_after
        return sum(1 for started in self._started if started <= cutoff)

    def _admissible(self) -> bool:
        return self.in_flight < self.max_in_flight and self.long_running() < self.long_running_limit

    async def acquire(self) -> None:
        # No await between the check and the append: admission is atomic on the event loop.
        while not self._admissible():
            self._wake.clear()
            # Re-check on every release and at least once a second (a call may turn long meanwhile).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
        self._started.append(self._clock())
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def release(self, response: httpx.Response | None = None) -> None:
        if not self._started:
            return
        self.peak_long_running = max(self.peak_long_running, self.long_running())
        # Which start this was is unknown (the hooks carry no identity): dropping the newest makes the
        # remaining ages an over-estimate, the safe side for a limit.
        started = self._started.pop()
        took = response.elapsed.total_seconds() if response is not None and _has_elapsed(response) else None
        if (took if took is not None else self._clock() - started) >= self.long_after:
            self.long_calls += 1
        self._wake.set()


def _has_elapsed(response: httpx.Response) -> bool:
    try:
        response.elapsed  # noqa: B018 - only set once the body was read
    except RuntimeError:
        return False
    return True
