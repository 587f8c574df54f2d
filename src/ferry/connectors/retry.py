"""Pure pieces of the retry policy: Retry-After parsing and the wait between attempts.

Kept apart from the HTTP core so they can be tested without a network and reused by
loops that are not HTTP calls (the Bulk job poller).
"""

from __future__ import annotations

import datetime as dt
import random
from email.utils import parsedate_to_datetime

from tenacity import RetryCallState
from tenacity.wait import wait_base

# A server may ask for a long pause (Shopify during an incident); a run should neither
# ignore it nor sleep for an hour inside one call. Above this, the error surfaces.
MAX_RETRY_AFTER_SECONDS = 300.0


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (``"2.0"``) or an HTTP date.

    Returns None when the header is absent or unreadable, so the caller falls back to backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, now)
    if seconds != seconds or seconds < 0:  # NaN or negative: a broken header, not an instruction
        return None
    return seconds


def _seconds_until_http_date(text: str, now: dt.datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - current).total_seconds())


def full_jitter(attempt: int, *, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, initial * 2**(attempt-1))]."""
    ceiling = min(cap, initial * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0, ceiling)


class wait_retry_after_or_jitter(wait_base):
    """Wait what the error asked for (``retry_after``), else exponential backoff with full jitter."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial = initial
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        err = outcome.exception() if outcome is not None else None
        asked = getattr(err, "retry_after", None)
        if isinstance(asked, int | float) and asked >= 0:
            return min(float(asked), MAX_RETRY_AFTER_SECONDS)
        return full_jitter(retry_state.attempt_number, initial=self.initial, cap=self.cap)


class PollIntervals:
    """The pauses of a status poller: start, start*factor, ... capped at ``cap`` (never a fixed loop)."""

    def __init__(self, start: float, factor: float, cap: float) -> None:
        self._next = start
        self.factor = factor
        self.cap = cap

    def __iter__(self) -> PollIntervals:
        return self

    def __next__(self) -> float:
        current = min(self._next, self.cap)
        self._next = current * self.factor
        return current
