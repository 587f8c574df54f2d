"""QuickBooks Online's throttles, per realm (developer.intuit.com, "Limits and throttles"; Intuit developer blog
2025-08-13): 500 requests per minute, 10 requests per second, 10 requests in flight at once, and the batch
endpoint at most 120 calls per minute. Over any of them the call is answered 429 ``ThrottleExceeded`` before
it is processed. Sliding windows; each limit is configurable (0 turns it off).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PER_MINUTE = 500
PER_SECOND = 10
CONCURRENT = 10
BATCH_PER_MINUTE = 120


@dataclass
class RateLimits:
    per_minute: int = PER_MINUTE
    per_second: int = PER_SECOND
    concurrent: int = CONCURRENT
    batch_per_minute: int = BATCH_PER_MINUTE
    throttled: int = 0
    in_flight: int = 0
    _calls: deque[float] = field(default_factory=deque)
    _batches: deque[float] = field(default_factory=deque)

    def admit(self, batch: bool) -> bool:
        """Count a call and say whether it may run; a refused call is not counted against the windows."""
        now = time.monotonic()
        while self._calls and now - self._calls[0] > 60:
            self._calls.popleft()
        while self._batches and now - self._batches[0] > 60:
            self._batches.popleft()
        last_second = sum(1 for t in reversed(self._calls) if now - t <= 1)  # the deque is time-ordered
        if ((self.per_minute and len(self._calls) >= self.per_minute)
                or (self.per_second and last_second >= self.per_second)
                or (self.concurrent and self.in_flight >= self.concurrent)
                or (batch and self.batch_per_minute and len(self._batches) >= self.batch_per_minute)):
            self.throttled += 1
            return False
        self._calls.append(now)
        if batch:
            self._batches.append(now)
        return True

    def configure(self, settings: dict[str, Any]) -> None:
        """Set limits; the windows start empty again (the new limits count from now)."""
        names = ("per_minute", "per_second", "concurrent", "batch_per_minute")
        unknown = set(settings) - set(names)
        if unknown:
            raise ValueError(f"unknown rate limit settings: {', '.join(sorted(unknown))}")
        for name in names:
            if name in settings:
                value = int(settings[name])
                if value < 0:
                    raise ValueError(f"{name} must be >= 0 (0: no limit)")
                setattr(self, name, value)
        self._calls.clear()
        self._batches.clear()

    def describe(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "per_second": self.per_second, "concurrent": self.concurrent,
                "batch_per_minute": self.batch_per_minute, "throttled": self.throttled,
                "calls_last_minute": len(self._calls)}
