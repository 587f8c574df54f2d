"""Shopify's REST leaky bucket: each call adds one drop, the bucket leaks at a fixed rate.

Classic figures are a 40-call bucket leaking 2 calls/s. A call that would overflow the bucket
gets 429 with ``Retry-After`` = seconds until one drop has leaked. Time is monotonic, so
wall-clock jumps never refill or drain the bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    used: int
    size: int
    retry_after: float

    @property
    def header(self) -> str:
        """Value of ``X-Shopify-Shop-Api-Call-Limit``, e.g. ``32/40``."""
        return f"{self.used}/{self.size}"


class LeakyBucket:
    def __init__(self, size: int, leak_rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError("bucket_size must be >= 1")
        if not leak_rate > 0:
            raise ValueError("leak_rate must be > 0 (a bucket that never leaks would lock the client out)")
        self.size = size
        self.leak_rate = leak_rate
        self._clock = clock
        self._level = 0.0
        self._last = clock()

    def _leak(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._last) * self.leak_rate)
        self._last = now

    def take(self) -> Decision:
        self._leak()
        if self._level + 1 > self.size + 1e-9:
            wait = (self._level + 1 - self.size) / self.leak_rate
            return Decision(False, self.size, self.size, round(max(wait, 0.001), 3))
        self._level += 1
        return Decision(True, min(self.size, math.ceil(self._level - 1e-9)), self.size, 0.0)

    def peek(self) -> int:
        self._leak()
        return math.ceil(self._level - 1e-9)


class Buckets:
    """One bucket per access token (Shopify keys its limit per app and shop)."""

    def __init__(self, size: int, leak_rate: float) -> None:
        LeakyBucket(size, leak_rate)  # validate now, not on the first request
        self.size = size
        self.leak_rate = leak_rate
        self._buckets: dict[str, LeakyBucket] = {}

    def take(self, token: str) -> Decision:
        bucket = self._buckets.get(token)
        if bucket is None:
            bucket = self._buckets[token] = LeakyBucket(self.size, self.leak_rate)
        return bucket.take()
