"""The QuickBooks query language: ``SELECT * | COUNT(*) | f, ... FROM Entity [WHERE c AND c ...]
[ORDERBY f [ASC|DESC], ...] [STARTPOSITION n] [MAXRESULTS n]``.

As documented (developer.intuit.com, "Data queries"): operators ``= < > <= >= IN LIKE``, conditions joined
by ``AND`` only (``OR`` is a parse error), ``LIKE`` with ``%`` wildcards, string literals in single quotes
(``\\'`` escapes a quote, as python-quickbooks writes it), ``STARTPOSITION`` 1-based, ``MAXRESULTS`` at most
1000 (a larger value is capped) and 100 when absent. Keywords and entity names are case-insensitive;
string comparisons are too. Inactive name-list rows are left out unless the query filters on ``Active``.
``ORDER BY`` (two words, python-quickbooks' ``all()``) is read like ``ORDERBY``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ferry.sandbox.quickbooks import errors
from ferry.sandbox.quickbooks.company import BY_LOWER, NAME_LISTS, Company, Record
from ferry.sandbox.quickbooks.times import parse as parse_time

DEFAULT_MAX = 100
MAX_RESULTS = 1000
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:\\.|''|[^'\\])*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[(),*])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))")
_TIME_FIELDS = {"MetaData.CreateTime", "MetaData.LastUpdatedTime"}


@dataclass
class Condition:
    field: str
    op: str
    values: list[Any]


@dataclass
class Query:
    entity: str
    count: bool = False
    fields: list[str] | None = None  # None: every field
    where: list[Condition] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    start: int = 1
    max_results: int = DEFAULT_MAX


@dataclass
class _Tokens:
    items: list[tuple[str, str, int]]  # (kind, text, column)
    pos: int = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def next(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise errors.query_parse_error("Encountered \"<EOF>\" at end of the query.")
        self.pos += 1
        return token

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "word" and token[1].upper() in words

    def expect(self, word: str) -> None:
        kind, text, column = self.next()
        if kind != "word" or text.upper() != word:
            raise _unexpected(text, column)


def _unexpected(text: str, column: int) -> errors.QboFault:
    return errors.query_parse_error(f"Encountered \" \"{text}\" \"{text} \"\" at line 1, column {column}.")


def tokenize(text: str) -> _Tokens:
    items: list[tuple[str, str, int]] = []
    pos = 0
    text = text.rstrip().rstrip(";")
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            column = pos + 1 + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise errors.query_parse_error(f"Lexical error at line 1, column {column}.")
        kind = match.lastgroup or ""
        items.append((kind, match.group(kind), match.start(kind) + 1))
        pos = match.end()
    return _Tokens(items)


def parse(text: str) -> Query:
    tokens = tokenize(text)
    tokens.expect("SELECT")
    count, fields = _select_list(tokens)
    tokens.expect("FROM")
    _kind, name, _column = tokens.next()
    entity = BY_LOWER.get(name.lower())
    if entity is None:
        raise errors.query_validation_error(f"Invalid context declaration : {name}")
    query = Query(entity, count=count, fields=fields)
    if tokens.keyword("WHERE"):
        tokens.next()
        query.where = _conditions(tokens)
    if tokens.keyword("ORDERBY", "ORDER"):
        if tokens.next()[1].upper() == "ORDER":
            tokens.expect("BY")
        query.order = _order(tokens)
    if tokens.keyword("STARTPOSITION"):
        tokens.next()
        query.start = max(1, _integer(tokens))
    if tokens.keyword("MAXRESULTS"):
        tokens.next()
        query.max_results = min(MAX_RESULTS, max(0, _integer(tokens)))
    leftover = tokens.peek()
    if leftover is not None:
        raise _unexpected(leftover[1], leftover[2])
    return query


def _select_list(tokens: _Tokens) -> tuple[bool, list[str] | None]:
    kind, text, column = tokens.next()
    if kind == "word" and text.upper() == "COUNT":
        for expected in ("(", "*", ")"):
            k, t, c = tokens.next()
            if t != expected:
                raise _unexpected(t, c)
        return True, None
    fields: list[str] | None = [] if text != "*" else None
    if kind == "word" and fields is not None:
        fields.append(text)
    elif text != "*":
        raise _unexpected(text, column)
    while tokens.peek() is not None and tokens.peek()[1] == ",":  # type: ignore[index]
        tokens.next()
        k, t, c = tokens.next()
        if k != "word":
            raise _unexpected(t, c)
        if fields is not None:
            fields.append(t)  # "*, Sku" (python-quickbooks' Item.all()) stays "every field"
    return False, fields


def _conditions(tokens: _Tokens) -> list[Condition]:
    conditions = [_condition(tokens)]
    while tokens.keyword("AND", "OR"):
        _kind, text, column = tokens.next()
        if text.upper() == "OR":
            raise errors.query_parse_error(f"Encountered \" <OR> \"{text} \"\" at line 1, column {column}.")
        conditions.append(_condition(tokens))
    return conditions


def _condition(tokens: _Tokens) -> Condition:
    kind, name, column = tokens.next()
    if kind != "word":
        raise _unexpected(name, column)
    kind, op, column = tokens.next()
    if kind == "word" and op.upper() in ("IN", "LIKE"):
        op = op.upper()
    elif kind != "op" or op in ("!=", "<>"):
        raise _unexpected(op, column)
    if op == "IN":
        _k, t, c = tokens.next()
        if t != "(":
            raise _unexpected(t, c)
        values = [_literal(tokens)]
        while (token := tokens.next())[1] == ",":
            values.append(_literal(tokens))
        if token[1] != ")":
            raise _unexpected(token[1], token[2])
        return Condition(name, op, values)
    return Condition(name, op, [_literal(tokens)])


def _literal(tokens: _Tokens) -> Any:
    kind, text, column = tokens.next()
    if kind == "str":
        return text[1:-1].replace("\\'", "'").replace("''", "'")
    if kind == "num":
        return Decimal(text)
    if kind == "word" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise _unexpected(text, column)


def _order(tokens: _Tokens) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    while True:
        kind, name, column = tokens.next()
        if kind != "word":
            raise _unexpected(name, column)
        descending = False
        if tokens.keyword("ASC", "DESC"):
            descending = tokens.next()[1].upper() == "DESC"
        order.append((name, descending))
        token = tokens.peek()
        if token is None or token[1] != ",":
            return order
        tokens.next()


def _integer(tokens: _Tokens) -> int:
    kind, text, column = tokens.next()
    if kind != "num" or "." in text:
        raise _unexpected(text, column)
    return int(text)


# -- evaluation ------------------------------------------------------------------------------------------------


def lookup(record: Record, path: str) -> Any:
    """A field by dotted path; a reference (``CustomerRef``) compares by its ``value``."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = _get_ci(value, part)
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value


def _get_ci(doc: dict[str, Any], key: str) -> Any:
    if key in doc:
        return doc[key]
    lowered = key.lower()
    for k, v in doc.items():
        if k.lower() == lowered:
            return v
    return None


def _comparable(path: str, value: Any) -> Any:
    if value is None:
        return None
    if path in _TIME_FIELDS or path.lower() in {f.lower() for f in _TIME_FIELDS}:
        try:
            return parse_time(str(value))
        except ValueError:
            raise errors.query_validation_error(f"invalid date-time value {value!r} for {path}") from None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    text = str(value)
    try:
        return Decimal(text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else text.lower()
    except InvalidOperation:
        return text.lower()


def _matches(record: Record, cond: Condition) -> bool:
    actual = _comparable(cond.field, lookup(record, cond.field))
    if actual is None:
        return False
    wanted = [_comparable(cond.field, v) for v in cond.values]
    if cond.op == "IN":
        return any(_equal(actual, w) for w in wanted)
    if cond.op == "LIKE":
        pattern = "^" + ".*".join(re.escape(p) for p in str(cond.values[0]).lower().split("%")) + "$"
        return re.match(pattern, str(lookup(record, cond.field)).lower(), re.S) is not None
    target = wanted[0]
    if cond.op == "=":
        return _equal(actual, target)
    try:
        if cond.op == "<":
            return bool(actual < target)
        if cond.op == ">":
            return bool(actual > target)
        if cond.op == "<=":
            return bool(actual <= target)
        return bool(actual >= target)
    except TypeError:
        return False


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (str(a).lower() == str(b).lower())
    if type(a) is not type(b):
        return str(a).lower() == str(b).lower()
    return bool(a == b)


def _sort_key(record: Record, path: str) -> tuple[int, Any]:
    value = _comparable(path, lookup(record, path))
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (Decimal, float)):
        return (1, value)
    return (2, value)


def run(company: Company, query: Query) -> dict[str, Any]:
    """The ``QueryResponse`` for a parsed query."""
    rows = company.all(query.entity)
    if query.entity in NAME_LISTS and not any(c.field.lower() == "active" for c in query.where):
        rows = [r for r in rows if r.get("Active", True) is not False]
    for cond in query.where:
        rows = [r for r in rows if _matches(r, cond)]
    if query.count:
        return {"totalCount": len(rows)}
    for path, descending in reversed(query.order):
        rows.sort(key=lambda r, p=path: _sort_key(r, p), reverse=descending)  # type: ignore[misc]
    page = rows[query.start - 1: query.start - 1 + query.max_results]
    if not page:
        return {}
    if query.fields is not None:
        page = [_project(r, query.fields) for r in page]
    return {query.entity: page, "startPosition": query.start, "maxResults": len(page)}


def _project(record: Record, fields: list[str]) -> Record:
    out: Record = {"domain": record.get("domain", "QBO"), "sparse": True}
    for path in fields:
        top = path.split(".")[0]
        for key in record:
            if key.lower() == top.lower():
                out[key] = record[key]
    out.setdefault("Id", record["Id"])
    return out
