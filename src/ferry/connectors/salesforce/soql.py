"""SOQL literals that stay literals (limits-and-reliability.md §4.2).

Values are always escaped, never passed through because they "already look quoted": the
soql-parser-js bug let ``'x' OR Id != null OR Name = 'y'`` break out exactly that way.
Identifiers (object and field names) cannot be escaped; check them with ``soql_identifier``
against describe before putting them in a query.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from decimal import Decimal

# Salesforce's quoted-string escapes: \\ \' \" \n \r \t \b \f. A backslash anywhere else is an error,
# so every backslash in the value must be doubled first (the table order matters: backslash first).
_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_ESCAPE_RE = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")
_LIKE_RE = re.compile(r"[%_]")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")


def _escape(text: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def soql_quote(value: object) -> str:
    """The SOQL literal for a Python value: strings quoted and escaped, numbers, booleans, null, dates, lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + _escape(value) + "'"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("SOQL has no literal for NaN or infinity")
        return repr(value)
    if isinstance(value, dt.datetime):
        return _datetime_literal(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return "(" + ", ".join(soql_quote(v) for v in _ordered(value)) + ")"
    raise TypeError(f"cannot put a {type(value).__name__} into SOQL")


def _ordered(values: Iterable[object]) -> list[object]:
    items = list(values)
    if isinstance(values, set | frozenset):
        items.sort(key=repr)  # deterministic queries (cacheable, testable)
    return items


def _datetime_literal(value: dt.datetime) -> str:
    # SOQL datetime literals are unquoted ISO-8601 with a zone; naive values are taken as UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    # Milliseconds are kept when present (SystemModstamp has them; dropping them would re-read or
    # mis-order records of the same second). Salesforce stores no finer precision.
    utc = value.astimezone(dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond // 1000:03d}"
    return text + "Z"


def soql_like(value: str) -> str:
    """A quoted LIKE pattern that matches ``value`` literally (``%`` and ``_`` escaped too)."""
    return "'" + _LIKE_RE.sub(lambda m: "\\" + m.group(0), _escape(value)) + "'"


def soql_identifier(name: str) -> str:
    """An object or field name (``Account``, ``Account.Name``); anything else is refused, not escaped."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a SOQL identifier: {name!r}")
    return name
