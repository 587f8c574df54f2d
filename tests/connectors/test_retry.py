"""Retry-After parsing and the wait policy: pure functions, no network."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest

from ferry.connectors.retry import MAX_RETRY_AFTER_SECONDS, PollIntervals, full_jitter, parse_retry_after

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("2", 2.0), ("2.0", 2.0), (" 0.5 ", 0.5), ("0", 0.0), (None, None), ("", None), ("soon", None),
     ("-3", None), ("nan", None)],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=NOW) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=NOW) == 0.0


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        waits = [full_jitter(attempt, initial=0.5, cap=30.0, rng=rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.5  # really spread over the range, not a fixed pause


def test_poll_intervals_back_off_and_cap() -> None:
    pauses = PollIntervals(0.5, 1.5, 10.0)
    got = [next(pauses) for _ in range(12)]
    assert got[:4] == [0.5, 0.75, 1.125, 1.6875]
    assert got[-1] == 10.0
    assert all(b >= a for a, b in itertools.pairwise(got))


def test_long_retry_after_is_capped() -> None:
    assert MAX_RETRY_AFTER_SECONDS <= 600
