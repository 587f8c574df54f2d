"""A SOQL ``SELECT`` builder in which every value is a literal and every name is checked.

Values go through ``soql_quote`` (always escaped, never passed through), names through
``soql_identifier`` (refused, never escaped), so input such as ``O'Brien' OR Name != '`` stays one
string literal. Conditions compose with ``&`` and ``|``::

    Select("Contact", ["Id", "Email"]).where(eq("LastName", name) & gt("SystemModstamp", ts)).order_by("Id")

The incremental watermark is a condition too (``after_watermark``): records sharing a timestamp
are ordered by Id, so ``(SystemModstamp, Id)`` is a strict order and none is skipped or repeated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ferry.connectors.salesforce.soql import soql_identifier, soql_like, soql_quote

_OPERATORS = frozenset({"=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "LIKE", "INCLUDES", "EXCLUDES"})


@dataclass(frozen=True, slots=True)
class Condition:
    text: str

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.text} AND {other.text})")

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.text} OR {other.text})")

    def __invert__(self) -> Condition:
        return Condition(f"(NOT {self.text})")


def compare(field: str, operator: str, value: object) -> Condition:
    op = operator.upper()
    if op not in _OPERATORS:
        raise ValueError(f"not a SOQL comparison operator: {operator!r}")
    literal = soql_like(value) if op == "LIKE" and isinstance(value, str) else soql_quote(value)
    if op in ("IN", "NOT IN", "INCLUDES", "EXCLUDES") and not literal.startswith("("):
        raise ValueError(f"{op} needs a list of values")
    return Condition(f"{soql_identifier(field)} {op} {literal}")


def eq(field: str, value: object) -> Condition:
    return compare(field, "=", value)


def ne(field: str, value: object) -> Condition:
    return compare(field, "!=", value)


def gt(field: str, value: object) -> Condition:
    return compare(field, ">", value)


def lt(field: str, value: object) -> Condition:
    return compare(field, "<", value)


def in_(field: str, values: Iterable[object]) -> Condition:
    return compare(field, "IN", list(values))


def like(field: str, text: str) -> Condition:
    """``field LIKE 'text'`` matching ``text`` literally (``%`` and ``_`` in it are escaped)."""
    return compare(field, "LIKE", text)


@dataclass(frozen=True, slots=True)
class Watermark:
    """Where an incremental read stopped: the last record's ``SystemModstamp`` and ``Id``."""

    modstamp: str  # as Salesforce returns it: 2026-12-01T10:00:00.000+0000
    id: str

    def advance(self, modstamp: str, record_id: str) -> Watermark:
        """The later of this watermark and (modstamp, id): pages may be read out of order (Bulk)."""
        return self if (parse_modstamp(modstamp), record_id) <= (self.at, self.id) else Watermark(modstamp, record_id)

    @property
    def at(self) -> dt.datetime:
        return parse_modstamp(self.modstamp)


def parse_modstamp(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def after_watermark(mark: Watermark, field: str = "SystemModstamp") -> Condition:
    """``field > :ts OR (field = :ts AND Id > :id)``: strictly after the last record read."""
    ts = mark.at
    return gt(field, ts) | (eq(field, ts) & gt("Id", mark.id))


class Select:
    """``SELECT fields FROM sobject [WHERE ...] [ORDER BY ...] [LIMIT n]`` with checked names."""

    def __init__(self, sobject: str, fields: Sequence[str]) -> None:
        if not fields:
            raise ValueError("a SOQL query needs at least one field")
        self.sobject = soql_identifier(sobject)
        self.fields = [soql_identifier(f) for f in fields]
        self._where: Condition | None = None
        self._order: list[str] = []
        self._limit: int | None = None

    def where(self, condition: Condition | None) -> Select:
        if condition is not None:
            self._where = condition if self._where is None else self._where & condition
        return self

    def order_by(self, *fields: str, descending: bool = False) -> Select:
        direction = " DESC" if descending else ""
        self._order += [soql_identifier(f) + direction for f in fields]
        return self

    def limit(self, n: int) -> Select:
        if n < 1:
            raise ValueError("LIMIT must be at least 1")
        self._limit = int(n)
        return self

    def soql(self) -> str:
        text = f"SELECT {', '.join(self.fields)} FROM {self.sobject}"
        if self._where is not None:
            text += f" WHERE {self._where.text}"
        if self._order:
            text += f" ORDER BY {', '.join(self._order)}"
        if self._limit is not None:
            text += f" LIMIT {self._limit}"
        return text

    def __str__(self) -> str:
        return self.soql()
