"""Canonical value helpers: timestamps (fast path == slow path), money, text, html."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from ferry.model.values import (
    MIN_VERSION,
    _parsed_utc,
    int_or_raw,
    is_canonical_timestamp,
    money,
    strip_html,
    tags,
    text,
    unsettled_version,
    utc_timestamp,
    version_of,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-04T10:11:12-05:00", "2026-03-04T15:11:12.000000Z"),
        ("2026-03-04T22:11:12-05:00", "2026-03-05T03:11:12.000000Z"),  # crosses midnight forwards
        ("2026-03-01T01:00:00+05:45", "2026-02-28T19:15:00.000000Z"),  # and backwards over a month end
        ("2026-03-04T10:11:12Z", "2026-03-04T10:11:12.000000Z"),
        ("2026-03-04T10:11:12.123+00:00", "2026-03-04T10:11:12.123000Z"),
        ("2026-03-04T10:11:12", "2026-03-04T10:11:12.000000Z"),  # naive = UTC
        ("2026-03-04", "2026-03-04T00:00:00.000000Z"),
        (" 2026-03-04T10:11:12+00:00 ", "2026-03-04T10:11:12.000000Z"),
        ("yesterday", "yesterday"),  # left for the validator
        ("", None),
        (None, None),
        (datetime(2026, 3, 4, 10, 0, tzinfo=timezone(timedelta(hours=1))), "2026-03-04T09:00:00.000000Z"),
        (date(2026, 3, 4), "2026-03-04T00:00:00.000000Z"),
    ],
)
def test_utc_timestamp(raw: object, expected: str | None) -> None:
    assert utc_timestamp(raw) == expected


def test_fast_path_agrees_with_datetime_everywhere() -> None:
    rng = random.Random(7)
    base = datetime(2025, 12, 31, tzinfo=UTC)
    for _ in range(5000):
        offset = timedelta(minutes=rng.choice([0, -300, -240, 330, 345, -570, 600, 840, -720, 60]))
        moment = (base + timedelta(seconds=rng.randint(0, 10**8))).astimezone(timezone(offset))
        raw = moment.isoformat()
        assert utc_timestamp(raw) == _parsed_utc(raw), raw


def test_version_of_picks_the_newest_parseable() -> None:
    assert version_of(None, "junk") == MIN_VERSION
    assert version_of("2026-01-01T00:00:00Z", "2026-02-01T00:00:00-01:00") == "2026-02-01T01:00:00.000000Z"
    assert MIN_VERSION > ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("199.00", "199.00"), (" 5 ", "5"), (199, "199"), (0.1, "0.1"), ("", None), (None, None), ("abc", "abc")],
)
def test_money_is_exact_text(raw: object, expected: str | None) -> None:
    assert money(raw) == expected


def test_text_and_tags_and_ints() -> None:
    assert text("  x ") == "x" and text("   ") is None and text(5) == "5" and text(False) == "false"
    assert tags("a, b,,c ") == ("a", "b", "c") and tags(["x", " "]) == ("x",) and tags(None) == ()
    assert int_or_raw("3") == 3 and int_or_raw(2.0) == 2 and int_or_raw("two") == "two" and int_or_raw(None) is None


def test_strip_html() -> None:
    assert strip_html("<p>A &amp; B</p><p>C<br>D</p>") == "A & B\nC\nD"
    assert strip_html("<style>p{}</style><b>bold</b>") == "bold"
    assert strip_html("plain") == "plain"
    assert strip_html("<p> </p>") is None


def test_an_unsettled_version_sits_between_the_second_before_and_its_stamp_and_rises_with_the_sighting() -> None:
    stamp = "2026-12-06T18:39:30.000000Z"
    t = datetime(2026, 12, 6, 18, 39, 30, tzinfo=UTC).timestamp()
    sightings = [t - 5, t - 1, t, t + 0.3, t + 0.30004, t + 4.99]  # a clock behind the source's, too
    versions = [unsettled_version(stamp, s) for s in sightings]
    assert all(is_canonical_timestamp(v) for v in versions)
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[0] > "2026-12-06T18:39:29.000000Z" and versions[-1] < stamp
    assert unsettled_version(stamp, t - 60) == "2026-12-06T18:39:29.500000Z"  # far behind: the lowest
    assert unsettled_version(stamp, t + 5) == stamp  # seen after the window: final
    assert unsettled_version("2026-12-06T18:39:30.123000Z", t) == "2026-12-06T18:39:30.123000Z"  # sub-second
    assert unsettled_version(MIN_VERSION, t) == MIN_VERSION
