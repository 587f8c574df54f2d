"""Times as QuickBooks Online writes them: the company's local time with its offset.

``MetaData.CreateTime``/``LastUpdatedTime`` are ``2026-05-01T10:20:30-07:00`` (seconds, company timezone,
US Pacific for a US sandbox company); the ``time`` of an answer carries milliseconds. Filters on
``MetaData.LastUpdatedTime`` and CDC's ``changedSince`` accept any offset (or ``Z``), and a date alone.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

COMPANY_TZ = ZoneInfo("America/Los_Angeles")


def fmt(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), COMPANY_TZ).isoformat()


def fmt_date(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), COMPANY_TZ).date().isoformat()


def qbo_now() -> str:
    now = datetime.fromtimestamp(time.time(), COMPANY_TZ)
    return now.isoformat(timespec="milliseconds")


def parse(text: str) -> float:
    """An ISO date-time (offset or ``Z``; without one, company time) or a date, as epoch seconds."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=COMPANY_TZ)
    return moment.timestamp()


class Clock:
    """The time stamped on writes: the wall clock in whole seconds, never going back (several writes within
    one second share a LastUpdatedTime, as on QuickBooks)."""

    def __init__(self) -> None:
        self._last = 0

    def now(self) -> int:
        self._last = max(self._last, int(time.time()))
        return self._last
