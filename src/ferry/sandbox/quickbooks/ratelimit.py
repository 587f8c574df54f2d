"""QuickBooks Online's throttles (developer.intuit.com, "Limits and throttles"; Intuit developer blog 2025-08-13;
IntuitDeveloper/SampleApp-Batch-Java: "Max 40 batch requests per minute per realmId"): per realm 500 requests per
minute, 10 requests per second, 10 requests in flight at once; the batch endpoint 40 calls per minute per realm
and app (the OAuth client id the access token was issued to) and 120 per realm across apps. Over any of them the
call is answered 429 ``ThrottleExceeded`` before it is processed. Sliding windows; each limit is configurable
(0 turns it off).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PER_MINUTE = 500
PER_SECOND = 10
CONCURRENT = 10
BATCH_PER_MINUTE = 120  # per realm, every app's batch calls together
BATCH_PER_APP_MINUTE = 40  # per realm and app


@dataclass
class RateLimits:
    per_minute: int = PER_MINUTE
    per_second: int = PER_SECOND
    concurrent: int = CONCURRENT
    batch_per_minute: int = BATCH_PER_MINUTE
    batch_per_app_minute: int = BATCH_PER_APP_MINUTE
    throttled: int = 0
    batch_throttled: int = 0
    in_flight: int = 0
    _calls: deque[float] = field(default_factory=deque)
    _batches: deque[float] = field(default_factory=deque)
    _app_batches: dict[str, deque[float]] = field(default_factory=dict)

    def admit(self, batch: bool, app: str = "") -> bool:
        """Count a call (of ``app``, an OAuth client id) and say whether it may run; a refused call is not counted
        against the windows."""
        now = time.monotonic()
        app_batches = self._app_batches.setdefault(app, deque())
        for window in (self._calls, self._batches, app_batches):
            while window and now - window[0] > 60:
                window.popleft()
        last_second = sum(1 for t in reversed(self._calls) if now - t <= 1)  # the deque is time-ordered
        batch_over = batch and ((self.batch_per_minute and len(self._batches) >= self.batch_per_minute)
                                or (self.batch_per_app_minute and len(app_batches) >= self.batch_per_app_minute))
        if ((self.per_minute and len(self._calls) >= self.per_minute)
                or (self.per_second and last_second >= self.per_second)
                or (self.concurrent and self.in_flight >= self.concurrent)
                or batch_over):
            self.throttled += 1
            self.batch_throttled += bool(batch_over)
            return False
        self._calls.append(now)
        if batch:
            self._batches.append(now)
            app_batches.append(now)
        return True

    def configure(self, settings: dict[str, Any]) -> None:
        """Set limits; the windows start empty again (the new limits count from now)."""
        names = ("per_minute", "per_second", "concurrent", "batch_per_minute", "batch_per_app_minute")
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
        self._app_batches.clear()

    def describe(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "per_second": self.per_second, "concurrent": self.concurrent,
                "batch_per_minute": self.batch_per_minute, "batch_per_app_minute": self.batch_per_app_minute,
                "throttled": self.throttled, "batch_throttled": self.batch_throttled,
                "calls_last_minute": len(self._calls), "batches_last_minute": len(self._batches)}
