"""Value canonicalisation shared by every normalizer: text, money, timestamps, versions.

These helpers never raise on messy input. A value they cannot make sense of is
passed through unchanged so that the mapping validator can judge it against the
target's schema and dead-letter the record with a reason (nothing silently lost).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

# The lowest possible version. Used when a source record carries no usable
# updated_at: it still compares greater than "" (the store's "never seen"), so a
# first write happens, and any real timestamp later wins over it.
MIN_VERSION = "0001-01-01T00:00:00.000000Z"

# Key prefix for a source record that arrived without an id. Such a key is never a valid external id.
MISSING_KEY_PREFIX = "missing-id:"

Money = str  # exact decimal text as the source sent it ("199.00"); see canonical.py for why not Decimal/float


def text(value: Any) -> str | None:
    """Stripped text; None for null or blank. Non-strings (ids, numbers) become their str form."""
    if value.__class__ is str:  # the common case first: this runs ~50 times per order
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ident(value: Any) -> str | None:
    """An id as a string (Shopify ids are 64-bit ints); None when absent or blank."""
    if value.__class__ is int:
        return str(value)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip() or None
    return str(value)


def utc_timestamp(value: Any) -> str | None:
    """ISO-8601 with any offset -> fixed-width UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    Fixed width and UTC make the strings sort in time order, so versions compare
    as plain strings. A naive timestamp is taken as UTC. Unparseable text is
    returned as is (stripped) for the validator to reject.
    """
    if isinstance(value, str):
        cached = _TS_CACHE.get(value)
        if cached is None:
            if len(_TS_CACHE) >= _TS_CACHE_SIZE:
                _TS_CACHE.clear()  # crude bound; an order's timestamps repeat within it, not across the run
            cached = _TS_CACHE[value] = _fast_utc(value) or _parsed_utc(value) or ""
        return cached or None
    if value is None:
        return None
    if isinstance(value, datetime):
        return _format_utc(value)
    if isinstance(value, date):
        return _format_utc(datetime(value.year, value.month, value.day))
    return str(value)


_TS_CACHE: dict[str, str] = {}
_TS_CACHE_SIZE = 4096
_HH_MM = tuple(f"{m // 60:02d}:{m % 60:02d}" for m in range(1440))  # minute of day -> "HH:MM"


def _fast_utc(value: str) -> str | None:
    """Shopify's usual shape, ``2026-03-04T10:11:12-05:00``, by string arithmetic (datetime is 3x slower).

    Handles whole seconds with an offset whose conversion stays within the same
    day; returns None for everything else so the general parser takes over.
    """
    if len(value) != 25 or value[10] != "T" or value[22] != ":":
        return None
    offset = value[19:]
    if offset == "+00:00":
        return value[:19] + ".000000Z"
    minute, shift = _MINUTE_OF.get(value[11:16]), _SHIFT_OF.get(offset)
    if minute is None or shift is None:  # unusual digits: parse them as before (a known offset has its sign)
        return _fast_utc_by_int(value) if value[19] in "+-" else None
    total = minute + shift
    if not value[:4].isdigit():
        return None
    if 0 <= total < 1440:
        return f"{value[:11]}{_HH_MM[total]}{value[16:19]}.000000Z"  # one string built, not three
    # The UTC time falls on the day before or after: only for text datetime would parse, the day from the calendar.
    day = _next_or_previous_day(value[:10], 1 if total >= 1440 else -1) if offset_shape_parses(value) else None
    return None if day is None else day + "T" + _HH_MM[total % 1440] + value[16:19] + ".000000Z"


def offset_shape_parses(value: str) -> bool:
    """True when ``value`` is exactly ``YYYY-MM-DDTHH:MM:SS+HH:MM`` with a real date, time and offset.

    For such text ``datetime.fromisoformat`` succeeds and its local date is ``value[:10]``; answered
    by table lookups (dates through a small cache) instead of parsing.
    """
    return (
        len(value) == 25
        and value[10] == "T"
        and value[16] == ":"
        and value[11:16] in _MINUTE_OF
        and value[17:19] in _SECONDS
        and value[19:] in _SHIFT_OF
        and _is_date(value[:10])
    )


def _is_date(text: str) -> bool:
    known = _DATES.get(text)
    if known is None:
        if len(_DATES) >= _TS_CACHE_SIZE:
            _DATES.clear()
        try:
            known = text[4] == "-" and text[7] == "-" and date.fromisoformat(text).isoformat() == text
        except ValueError:
            known = False
        _DATES[text] = known
    return known


def _next_or_previous_day(day: str, step: int) -> str | None:
    """``day`` (a valid YYYY-MM-DD) moved by one day; None past year 1 or 9999 (datetime then decides).

    Cached: an evening in a western offset is the next day in UTC, so this runs for ~1 timestamp in 6,
    and a store's orders fall on a few hundred days.
    """
    moved = _MOVED_DAYS.get((day, step), "")
    if moved == "":  # "" is never a day: not worked out yet (None is a worked-out answer)
        if len(_MOVED_DAYS) >= _TS_CACHE_SIZE:
            _MOVED_DAYS.clear()
        try:
            moved = (date.fromisoformat(day) + timedelta(days=step)).isoformat()
        except OverflowError:
            moved = None
        _MOVED_DAYS[day, step] = moved
    return moved


_MOVED_DAYS: dict[tuple[str, int], str | None] = {}


_DATES: dict[str, bool] = {}
_SECONDS = frozenset(f"{s:02d}" for s in range(60))


# Table lookups instead of int() on the common shapes: "HH:MM" -> minute of day, "+HH:MM" -> minutes to add for UTC.
_MINUTE_OF = {hh_mm: m for m, hh_mm in enumerate(_HH_MM)}
_SHIFT_OF = {sign + hh_mm: (m if sign == "-" else -m) for m, hh_mm in enumerate(_HH_MM) for sign in "+-"}


def _fast_utc_by_int(value: str) -> str | None:
    try:
        hour, minute = int(value[11:13]), int(value[14:16])
        off = int(value[20:22]) * 60 + int(value[23:25])
    except ValueError:
        return None
    total = hour * 60 + minute + (off if value[19] == "-" else -off)
    if not 0 <= total < 1440 or not value[:4].isdigit():
        return None  # the UTC time falls on another day: let datetime do the calendar
    return value[:11] + _HH_MM[total] + value[16:19] + ".000000Z"


def _parsed_utc(value: str) -> str | None:
    stripped = value.strip()
    if not stripped:
        return None
    try:
        return _format_utc(datetime.fromisoformat(stripped))
    except ValueError:
        return stripped


def _format_utc(dt: datetime) -> str:
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    # isoformat ends in "+00:00" for an aware UTC datetime; swap it for "Z".
    return dt.isoformat(timespec="microseconds")[:-6] + "Z"


def is_canonical_timestamp(value: str) -> bool:
    """True for strings utc_timestamp produced (cheap shape test, no parsing)."""
    return len(value) == 27 and value[10] == "T" and value[19] == "." and value[26] == "Z"


def version_of(*candidates: Any) -> str:
    """The newest of the given source timestamps as a version string; MIN_VERSION when none parses."""
    best = MIN_VERSION
    for candidate in candidates:
        ts = utc_timestamp(candidate)
        if ts is not None and ts > best and is_canonical_timestamp(ts):
            best = ts
    return best


# How long after its whole-second stamp S a change can still be stamped S and become visible (Shopify stamps a
# write a little before it commits, to the second). A record seen sooner than this after S may not be the last
# state stamped S: see ``unsettled_version``.
SETTLE_SECONDS = 5.0


def unsettled_version(version: str, seen: float) -> str:
    """The version of a record stamped ``version`` (whole seconds, S) and seen at ``seen`` (epoch seconds), when
    another change could still be stamped S: a version in [S - 0.5 s, S), rising with ``seen``.

    Sources that stamp to the second give two changes made within one second the same version, so the second
    one would compare equal to the first (already written) and be taken as unchanged: lost until the record's
    next change. Lowered this way, a later sighting within the second's window is newer than an earlier one
    (a webhook by the time Shopify fired it, a read by when it ran), and the first sighting after the window
    (the stamp S itself, settled) is newer than all of them: it is written once more if what ferry wrote was
    seen too early, and only then. The form stays a fixed-width UTC timestamp, half a second before the stamp
    at most, so versions still compare as strings and read as times. A version with a fraction of a second,
    or seen after the window, is returned as it is."""
    if len(version) != 27 or not version.endswith(".000000Z"):
        return version
    try:
        stamp = datetime.fromisoformat(version[:19]).replace(tzinfo=UTC)
    except ValueError:
        return version
    since = seen - stamp.timestamp()
    if since >= SETTLE_SECONDS:
        return version
    # From a window's length before the stamp (the observer's clock may be behind the source's) to its end.
    share = min(max(since + SETTLE_SECONDS, 0.0), 2 * SETTLE_SECONDS) / (4 * SETTLE_SECONDS)  # in [0, 0.5)
    return _format_utc(stamp - timedelta(seconds=0.5) + timedelta(microseconds=int(share * 1_000_000)))


# Set by a reader on a raw record seen while a later change could still share its (whole-second) stamp: when it
# was seen (epoch seconds). The source's identify and normalize then give it ``unsettled_version``s.
SEEN_KEY = "_ferry_seen"


def mark_unsettled(records: list[dict[str, Any]], version: Callable[[dict[str, Any]], str],
                   threshold: str | None = None, seen: float | None = None) -> int:
    """Mark the records whose ``version`` is above ``threshold`` (``settle_threshold`` of when the source served
    them: a stamp that far back is final) as seen at ``seen``; how many. Without ``threshold``: the one of
    ``seen``; without ``seen``: now, by this machine's clock (a record fetched by id, a delivery that names no
    event time)."""
    if seen is None:
        seen = time.time()
    if threshold is None:
        threshold = settle_threshold(datetime.fromtimestamp(seen, UTC))
    marked = 0
    for raw in records:
        if version(raw) > threshold:
            raw[SEEN_KEY] = seen
            marked += 1
    return marked


def seen_version(raw: dict[str, Any], version: str) -> str:
    """``version`` of the raw record, lowered when the record was marked unsettled."""
    seen = raw.get(SEEN_KEY)
    return version if seen is None else unsettled_version(version, seen)


def settle_versions(raw: dict[str, Any], records: Iterable[tuple[str, Any]]) -> None:
    """Lower the versions of the canonical records just built from ``raw`` when it was marked unsettled."""
    seen = raw.get(SEEN_KEY)
    if seen is not None:
        for _, record in records:  # records just built, each once
            record.version = unsettled_version(record.version, seen)


def settle_threshold(observed: datetime) -> str:
    """The newest version that is final for a record seen at ``observed`` (the source's clock): a record whose
    version is above it may share its stamp with a change not yet visible (unsettled)."""
    return _format_utc(observed - timedelta(seconds=SETTLE_SECONDS))


def newest_version(*timestamps: str | None) -> str:
    """Like version_of, for timestamps already canonicalised by utc_timestamp (no re-parsing)."""
    best = MIN_VERSION
    for ts in timestamps:
        if ts is not None and ts > best and is_canonical_timestamp(ts):
            best = ts
    return best


def money(value: Any) -> Money | None:
    """Money as exact decimal text. Shopify sends strings; numbers are tolerated. Junk passes through."""
    if value.__class__ is str:
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        # repr of a float is the shortest text that round-trips; Decimal keeps it exact from here on.
        return str(Decimal(repr(value)))
    return str(value)


def decimal_or_none(value: Money | None) -> Decimal | None:
    """Parse canonical money for arithmetic; None for absent or unparseable amounts."""
    if value is None:
        return None
    try:
        parsed = Decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        return None
    return parsed if parsed.is_finite() else None


def int_or_raw(value: Any) -> int | str | None:
    """Quantities: int when it is one (or an integral string/float), else the raw text for the validator."""
    if value.__class__ is int:  # the common case first (bool is a subclass, so it is not caught here)
        return value
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raw = str(value).strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return raw


def tags(value: Any) -> tuple[str, ...]:
    """Shopify tags are one comma-separated string; some APIs send a list."""
    if not value:
        return ()
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(t for t in (str(i).strip() for i in items) if t)


_DROP_BLOCKS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_LINE_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\s*\n\s*")


def strip_html(value: Any) -> str | None:
    """Product body_html -> plain text: tags dropped, entities decoded, block ends kept as line breaks."""
    raw = text(value)
    if raw is None:
        return None
    if "<" not in raw and "&" not in raw:
        return raw
    plain = _DROP_BLOCKS.sub("", raw)
    plain = _LINE_BREAKS.sub("\n", plain)
    plain = html.unescape(_TAGS.sub("", plain))
    plain = _BLANK_LINES.sub("\n", _SPACES.sub(" ", plain))
    return plain.strip() or None
