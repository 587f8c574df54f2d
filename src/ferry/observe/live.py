"""Recent real-time figures for the dashboard: events/s and latency percentiles over the last minutes.

The Prometheus histograms (``metrics.WEBHOOK_ACK``, ``metrics.END_TO_END``) are the figures to scrape, but they
are cumulative since the process started and their buckets are coarse (an end-to-end latency between 0.5 s
and 1 s is one bucket): a percentile interpolated from them can be off by half a bucket and says nothing about
the last minute. So ``metrics.webhook_acknowledged`` and ``metrics.event_delivered`` also put each observation
into a small rolling window here, and the dashboard reads exact percentiles of what is in it.

A window keeps the last ``WINDOW_SECONDS`` of observations, at most ``MAX_SAMPLES`` (at a higher rate, the most
recent ones): memory is bounded whatever the traffic. Adding one is a lock and a deque append (the webhook
path's cost beside the histogram's own lock). Observations come from two threads (``ferry serve``'s server
loop acknowledges, its workers' loop delivers), hence the lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

WINDOW_SECONDS = 300.0  # percentiles over the last 5 minutes
RATE_SECONDS = 60.0  # events/s over the last minute
MAX_SAMPLES = 10_000  # per series
QUANTILES = (0.5, 0.95, 0.99)


class RollingWindow:
    """Observations (when, value) of one series, the oldest dropped after ``seconds`` or past ``max_samples``."""

    def __init__(self, seconds: float = WINDOW_SECONDS, max_samples: int = MAX_SAMPLES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append((self.clock(), value))

    def _recent(self) -> tuple[float, list[tuple[float, float]]]:
        now = self.clock()
        with self._lock:
            while self._samples and self._samples[0][0] < now - self.seconds:
                self._samples.popleft()
            return now, list(self._samples)

    def summary(self, rate_seconds: float = RATE_SECONDS) -> dict[str, Any]:
        """``count`` in the window, ``per_second`` over the last ``rate_seconds``, and p50/p95/p99 (seconds)."""
        now, samples = self._recent()
        values = sorted(v for _, v in samples)
        last = [t for t, _ in samples if t >= now - rate_seconds]
        span = rate_seconds
        if samples and len(samples) == self._samples.maxlen and samples[0][0] > now - rate_seconds:
            span = max(now - samples[0][0], 1e-3)  # full at a high rate: the window is shorter than a minute
        return {"count": len(values), "per_second": round(len(last) / span, 3),
                **{f"p{round(q * 100)}": percentile(values, q) for q in QUANTILES}}


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return round(ordered[rank - 1], 6)


class LiveFigures:
    """Every window by series: webhook acknowledgements by (pipeline, system), deliveries by (pipeline, object)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._acks: dict[tuple[str, str], RollingWindow] = {}
        self._delivered: dict[tuple[str, str], RollingWindow] = {}
        self._lock = threading.Lock()

    def _window(self, table: dict[tuple[str, str], RollingWindow], key: tuple[str, str]) -> RollingWindow:
        window = table.get(key)
        if window is None:
            with self._lock:
                window = table.setdefault(key, RollingWindow(clock=self.clock))
        return window

    def acknowledged(self, pipeline: str, system: str, seconds: float) -> None:
        self._window(self._acks, (pipeline, system)).add(seconds)

    def delivered(self, pipeline: str, obj: str, seconds: float) -> None:
        self._window(self._delivered, (pipeline, obj)).add(seconds)

    def pipelines(self) -> set[str]:
        return {p for p, _ in (*self._acks, *self._delivered)}

    def for_pipeline(self, pipeline: str) -> dict[str, Any]:
        """What the dashboard's real-time panel shows for one pipeline (queue depth is the caller's, a gauge)."""
        acks = {system: w.summary() for (p, system), w in list(self._acks.items()) if p == pipeline}
        delivered = {obj: w.summary() for (p, obj), w in list(self._delivered.items()) if p == pipeline}
        return {"acknowledged": acks, "delivered": delivered}

    def clear(self) -> None:
        with self._lock:
            self._acks.clear()
            self._delivered.clear()


LIVE = LiveFigures()


def merged(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Several series' summaries as one line: counts and rates added, the worst percentile of each."""
    items = list(summaries)
    out: dict[str, Any] = {"count": sum(s["count"] for s in items),
                           "per_second": round(sum(s["per_second"] for s in items), 3)}
    for q in QUANTILES:
        key = f"p{round(q * 100)}"
        values = [s[key] for s in items if s[key] is not None]
        out[key] = max(values) if values else None
    return out
