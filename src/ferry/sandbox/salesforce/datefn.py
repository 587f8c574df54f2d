"""SOQL date functions: CALENDAR_YEAR(CreatedDate), DAY_ONLY(CreatedDate), HOUR_IN_DAY(...), ...

They take a stored date (`2024-03-15`) or dateTime (`2024-03-15T10:00:00.000+0000`) value and answer a number, or
a date for DAY_ONLY. DateTimes are read in UTC: the org answers dateTimes in UTC and the sandbox's integration user
has no other time zone (convertTimezone() is not emulated). The fiscal year is the calendar year, as in an org
that has not changed its fiscal year settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

DATETIME_ONLY = frozenset({"DAY_ONLY", "HOUR_IN_DAY"})


def _day(value: str) -> dt.date:
    return dt.date.fromisoformat(value[:10])


def _quarter(value: str) -> int:
    return (_day(value).month - 1) // 3 + 1


def _day_in_week(value: str) -> int:
    # 1 is Sunday and 7 is Saturday; Python's weekday() has Monday = 0.
    return (_day(value).weekday() + 1) % 7 + 1


def _day_in_year(value: str) -> int:
    return _day(value).timetuple().tm_yday


_FUNCTIONS: dict[str, Callable[[str], Any]] = {
    "CALENDAR_MONTH": lambda v: _day(v).month,
    "CALENDAR_QUARTER": _quarter,
    "CALENDAR_YEAR": lambda v: _day(v).year,
    "DAY_IN_MONTH": lambda v: _day(v).day,
    "DAY_IN_WEEK": _day_in_week,
    "DAY_IN_YEAR": _day_in_year,
    "DAY_ONLY": lambda v: v[:10],
    "FISCAL_MONTH": lambda v: _day(v).month,
    "FISCAL_QUARTER": _quarter,
    "FISCAL_YEAR": lambda v: _day(v).year,
    "HOUR_IN_DAY": lambda v: int(v[11:13]),
    # Week 1 is days 1-7 of the month (or of the year), whatever weekday they fall on.
    "WEEK_IN_MONTH": lambda v: (_day(v).day - 1) // 7 + 1,
    "WEEK_IN_YEAR": lambda v: (_day_in_year(v) - 1) // 7 + 1,
}


def applies_to(name: str, field_type: str) -> bool:
    """Whether the org accepts this date function on a field of this type."""
    if name in DATETIME_ONLY:
        return field_type == "datetime"
    return field_type in ("date", "datetime")


def result_kind(name: str) -> str:
    """The literal kind a comparison with the function's result takes: a date for DAY_ONLY, else a number."""
    return "DATE" if name == "DAY_ONLY" else "NUMBER"


def compose(name: str, get: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A getter that answers the date function of what ``get`` answers (null stays null)."""
    fn = _FUNCTIONS[name]

    def apply(record: Any) -> Any:
        value = get(record)
        return None if value is None else fn(value)

    return apply
