"""Timestamps the way Shopify writes them: ISO-8601, second precision, explicit offset.

The generator works in integer epoch seconds (fast, exact, no wall clock) and
renders strings only at the end; the server parses incoming filter values and
stored strings back to epoch seconds so comparisons are between instants, never
between strings in different offsets.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

# 2026-01-01T00:00:00Z: the store's records are spread from here to END.
EPOCH_START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
EPOCH_END = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())

# The shop's own zone is US Eastern; 2026 DST runs Mar 8 07:00Z .. Nov 1 06:00Z.
_DST_START = int(datetime(2026, 3, 8, 7, tzinfo=UTC).timestamp())
_DST_END = int(datetime(2026, 11, 1, 6, tzinfo=UTC).timestamp())

_OFFSET_TEXT: dict[int, str] = {}


def offset_text(minutes: int) -> str:
    """``-300`` -> ``"-05:00"``; cached because the same handful of offsets repeats millions of times."""
    text = _OFFSET_TEXT.get(minutes)
    if text is None:
        sign = "-" if minutes < 0 else "+"
        hours, mins = divmod(abs(minutes), 60)
        text = _OFFSET_TEXT[minutes] = f"{sign}{hours:02d}:{mins:02d}"
    return text


def shop_offset(epoch: int) -> int:
    """UTC offset in minutes of the shop's zone (US Eastern) at ``epoch``."""
    return -240 if _DST_START <= epoch < _DST_END else -300


def fmt(epoch: int, offset_minutes: int) -> str:
    """Render ``epoch`` as Shopify does, e.g. ``2026-03-04T10:11:12-05:00``."""
    t = time.gmtime(epoch + offset_minutes * 60)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}{offset_text(offset_minutes)}"
    )


def fmt_local(epoch: int, offset_minutes: int) -> str:
    """Like ``fmt``, but a record written in the shop's zone follows its DST change at ``epoch``.

    Records keep one offset for all their timestamps; when that offset is the shop's own, a later
    event (an edit in October on a January order) must be written with October's offset.
    """
    if offset_minutes in (-300, -240):
        offset_minutes = shop_offset(epoch)
    return fmt(epoch, offset_minutes)


def fmt_shop(epoch: int) -> str:
    return fmt(epoch, shop_offset(epoch))


def parse(value: str) -> int:
    """ISO-8601 (with offset, ``Z``, or naive = shop zone) -> epoch seconds. Raises ValueError."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        # Shopify reads a naive filter value in the shop's zone.
        naive_utc = int(dt.replace(tzinfo=UTC).timestamp())
        return naive_utc - shop_offset(naive_utc) * 60
    return int(dt.timestamp())


def parse_or_none(value: object) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse(value)
    except ValueError:
        return None
