"""Times the way WooCommerce writes and reads them: naive ``YYYY-MM-DDTHH:MM:SS`` strings, one in the
store's timezone (``date_created``) and one in UTC (``date_created_gmt``), neither with an offset.

Both forms are fixed-width, so comparing the strings compares the times they name; the sandbox filters
and sorts on the strings as WordPress compares its ``post_date``/``post_date_gmt`` columns. The local
form is the store's wall clock: around a DST change it is not monotonic, exactly as on a real store.

Filter values (``after``, ``modified_after``, ...) are read as WordPress's ``WP_Date_Query::
build_mysql_datetime`` reads them: a value with an offset is converted to the store's timezone, one
without is taken as it is, and the digits are then compared with the local column, or with the GMT
column when ``dates_are_gmt`` is true (so an offset combined with ``dates_are_gmt`` shifts the bound).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

# The generated store's records are created between these instants.
EPOCH_START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
EPOCH_END = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
DEFAULT_TIMEZONE = "Europe/Berlin"

# WordPress's rest_parse_date() accepts exactly this (RFC 3339 with an optional offset and fraction).
_RFC3339 = re.compile(
    r"^(?P<d>\d{4}-\d{2}-\d{2})[Tt ](?P<t>\d{2}:\d{2}:\d{2})(?:\.\d+)?(?P<z>Z|z|[+-]\d{2}(?::?\d{2})?)?$")


class StoreTime:
    """The store's timezone: renders epochs as WooCommerce's local and GMT strings."""

    def __init__(self, tz_name: str = DEFAULT_TIMEZONE) -> None:
        self.name = tz_name
        self.zone = ZoneInfo(tz_name)

    def local(self, epoch: int) -> str:
        return datetime.fromtimestamp(epoch, self.zone).strftime("%Y-%m-%dT%H:%M:%S")

    @staticmethod
    def gmt(epoch: int) -> str:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    def pair(self, epoch: int | None) -> tuple[str | None, str | None]:
        """(local, gmt) strings of ``epoch``; (None, None) for a date that is not set."""
        if epoch is None:
            return None, None
        return self.local(epoch), self.gmt(epoch)

    def filter_bound(self, value: str) -> str | None:
        """The digits WordPress compares a date filter value with, or None when it is not a valid date."""
        m = _RFC3339.match(value)
        if m is None:
            return None
        naive = f"{m['d']}T{m['t']}"
        if not m["z"]:
            return naive
        try:
            instant = datetime.fromisoformat(naive).replace(tzinfo=_offset(m["z"]))
        except ValueError:
            return None
        return instant.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M:%S")


def _offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_gmt(text: str) -> int:
    """Epoch seconds of a ``*_gmt`` string."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())
