"""Shopify's ``query:`` search syntax for connections, compiled to a predicate over a table's positions.

Grammar (https://shopify.dev/docs/api/usage/search-syntax): terms separated by whitespace are ANDed;
``AND``, ``OR``, ``NOT`` and a ``-`` prefix; parentheses; ``field:value`` with comparators ``:`` ``:<``
``:>`` ``:<=`` ``:>=``; values bare or in single or double quotes; a trailing ``*`` is a prefix match.
Dates may be quoted or bare (``updated_at:>'2025-07-01T00:00:00Z'``, ``updated_at:>=2025-07-01``); a
date without a time is that day in the shop's zone. A field the sandbox does not know matches everything
and is reported as a warning (Shopify reports unknown fields in ``extensions.search`` the same way).

This is the search language, not GraphQL: GraphQL documents are parsed by graphql-core.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ferry.sandbox.shopify.tables import Table, status_check
from ferry.sandbox.shopify.times import parse, shop_offset

Predicate = Callable[[int], bool]
_TOKEN = re.compile(r"""\s*(?:(?P<paren>[()])|(?P<term>-?(?:[^\s()'"]+|'[^']*'|"[^"]*")+))""")
_TERM = re.compile(r"^(?P<field>[a-z_]+):(?P<op><=|>=|<|>)?(?P<value>.*)$", re.S)
DAY = 86_400


class SearchError(ValueError):
    pass


@dataclass
class Compiled:
    predicate: Predicate | None
    bounds: dict[str, int] = field(default_factory=dict)  # updated_at_min / since_id a first page may start at
    warnings: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Term:
    field: str
    op: str  # ":", "<", ">", "<=", ">="
    value: str
    negated: bool = False


Node = _Term | tuple[str, list[Any]]  # a term, or ("and"|"or"|"not", children)


def compile_search(text: str | None, resource: str, table: Table) -> Compiled:
    if not text or not text.strip():
        return Compiled(None)
    tree = _Parser(_tokens(text)).parse()
    out = Compiled(None)
    out.predicate = _compile(tree, resource, table, out.warnings)
    _collect_bounds(tree, out.bounds, table)
    return out


def compile_fields(text: str | None, fields: dict[str, Callable[[Any, str, str], bool]]) -> Callable[[Any], bool]:
    """A search over in-memory objects (not a table): ``fields`` maps each known field to ``check(obj, op,
    value)``; a term of another field matches everything, as an unknown field does on Shopify."""
    if not text or not text.strip():
        return lambda _obj: True
    tree = _Parser(_tokens(text)).parse()

    def holds(node: Node, obj: Any) -> bool:
        if isinstance(node, _Term):
            check = fields.get(node.field)
            found = True if check is None else check(obj, node.op, node.value)
            return found != node.negated
        kind, children = node
        if kind == "not":
            return not holds(children[0], obj)
        results = (holds(c, obj) for c in children)
        return all(results) if kind == "and" else any(results)

    return lambda obj: holds(tree, obj)


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SearchError(f"cannot read the search query at: {text[pos:]!r}")
        tokens.append(m["paren"] or m["term"])
        pos = m.end()
    return tokens


class _Parser:
    """Precedence: NOT binds tightest, then AND (explicit or implicit), then OR."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def parse(self) -> Node:
        node = self.or_expr()
        if self.peek() is not None:
            raise SearchError(f"unexpected {self.peek()!r} in the search query")
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.peek() == "OR":
            self.i += 1
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else ("or", items)

    def and_expr(self) -> Node:
        items = [self.unary()]
        while (tok := self.peek()) is not None and tok not in ("OR", ")"):
            if tok == "AND":
                self.i += 1
            items.append(self.unary())
        return items[0] if len(items) == 1 else ("and", items)

    def unary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise SearchError("the search query ends too early")
        self.i += 1
        if tok == "NOT":
            return ("not", [self.unary()])
        if tok == "(":
            inner = self.or_expr()
            if self.peek() != ")":
                raise SearchError("unbalanced parentheses in the search query")
            self.i += 1
            return inner
        negated = tok.startswith("-")
        m = _TERM.match(tok[1:] if negated else tok)
        if m is None:
            return _Term("default", ":", _unquote(tok), negated)
        return _Term(m["field"], m["op"] or ":", _unquote(m["value"]), negated)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value.replace("'", "").replace('"', "")


# ---------------------------------------------------------------------- compiling
def _compile(node: Node, resource: str, table: Table, warnings: list[dict[str, str]]) -> Predicate | None:
    if isinstance(node, _Term):
        pred = _term(node, resource, table, warnings)
        if pred is None or not node.negated:
            return pred
        return lambda i, p=pred: not p(i)  # type: ignore[misc]
    kind, children = node
    preds = [_compile(c, resource, table, warnings) for c in children]
    if kind == "not":
        inner = preds[0]
        return None if inner is None else (lambda i: not inner(i))
    known = [p for p in preds if p is not None]
    if kind == "and":
        if not known:
            return None
        return known[0] if len(known) == 1 else (lambda i: all(p(i) for p in known))
    if len(known) < len(preds):  # an OR with an ignored branch matches everything
        return None
    return lambda i: any(p(i) for p in known)


_TIME_FIELDS = {"updated_at": "updated", "created_at": "created", "processed_at": "created"}


def _term(t: _Term, resource: str, table: Table, warnings: list[dict[str, str]]) -> Predicate | None:
    if t.field in _TIME_FIELDS:
        column = table.updated if _TIME_FIELDS[t.field] == "updated" else table.created
        lo, hi = _time_range(t)
        return _range(column, lo, hi)
    if t.field == "id":
        value = _int(t)
        lo, hi = _numeric_range(t.op, value)
        return _range(table.ids, lo, hi)
    handler = _TEXT_FIELDS.get(resource, {}).get(t.field)
    if handler is None:
        warnings.append({"field": t.field, "message": "Invalid search field for this query."})
        return None
    recs = table.records
    return handler(t, recs)


def _range(column: Sequence[int], lo: int | None, hi: int | None) -> Predicate:
    if lo is not None and hi is not None:
        return lambda i: lo <= column[i] <= hi
    if lo is not None:
        return lambda i: column[i] >= lo
    if hi is not None:
        return lambda i: column[i] <= hi
    return lambda i: True


def _numeric_range(op: str, value: int) -> tuple[int | None, int | None]:
    return {":": (value, value), ">": (value + 1, None), ">=": (value, None),
            "<": (None, value - 1), "<=": (None, value)}[op]


def _time_range(t: _Term) -> tuple[int | None, int | None]:
    """Inclusive epoch bounds; timestamps have whole seconds, so ``>x`` is ``>= x + 1``."""
    text = t.value.strip()
    try:
        if len(text) == 4 and text.isdigit():  # a year, as in updated_at:<=2024
            day_start, span = _day_epoch(date(int(text), 1, 1)), _day_epoch(date(int(text) + 1, 1, 1))
            span -= day_start
        elif len(text) == 10:
            day_start, span = _day_epoch(date.fromisoformat(text)), DAY
        else:
            day_start, span = parse(text), 1
    except ValueError:
        raise SearchError(f"invalid date in the search query: {t.value!r}") from None
    end = day_start + span - 1  # last second of the value
    return {":": (day_start, end), ">": (end + 1, None), ">=": (day_start, None),
            "<": (None, day_start - 1), "<=": (None, end)}[t.op]


def _day_epoch(d: date) -> int:
    """Midnight of ``d`` in the shop's zone, as Shopify reads a date without a time."""
    midnight = _utc_midnight(d)
    return midnight - shop_offset(midnight) * 60


def _utc_midnight(d: date) -> int:
    return (d - date(1970, 1, 1)).days * DAY


def _int(t: _Term) -> int:
    text = t.value.rsplit("/", 1)[-1]  # gid://shopify/Order/123 is accepted as well as 123
    try:
        return int(text)
    except ValueError:
        raise SearchError(f"invalid id in the search query: {t.value!r}") from None


# ---------------------------------------------------------------------- text fields
def _equals(key: str, *, lower: bool = True) -> Callable[[_Term, Sequence[dict[str, Any]]], Predicate]:
    def build(t: _Term, recs: Sequence[dict[str, Any]]) -> Predicate:
        want = t.value.lower() if lower else t.value
        if want.endswith("*"):
            prefix = want[:-1]
            return lambda i: str(recs[i].get(key) or "").lower().startswith(prefix)
        return lambda i: str(recs[i].get(key) or "").lower() == want
    return build


def _tag(t: _Term, recs: Sequence[dict[str, Any]]) -> Predicate:
    want = t.value.lower()
    return lambda i: want in {x.strip().lower() for x in str(recs[i].get("tags") or "").split(",")}


def _order_status(t: _Term, recs: Sequence[dict[str, Any]]) -> Predicate:
    value = t.value.lower()
    if value == "not_closed":
        return lambda i: recs[i].get("closed_at") is None
    return status_check("orders", value, recs)  # open, closed, cancelled as REST's status=; anything else: all


def _product_status(t: _Term, recs: Sequence[dict[str, Any]]) -> Predicate:
    wanted = {v.strip().lower() for v in t.value.split(",")}
    return lambda i: str(recs[i].get("status")).lower() in wanted


_TEXT_FIELDS: dict[str, dict[str, Callable[[_Term, Sequence[dict[str, Any]]], Predicate]]] = {
    "orders": {"status": _order_status, "financial_status": _equals("financial_status"), "email": _equals("email"),
               "name": _equals("name"), "tag": _tag, "source_name": _equals("source_name")},
    "customers": {"email": _equals("email"), "phone": _equals("phone"), "state": _equals("state"), "tag": _tag},
    "products": {"status": _product_status, "title": _equals("title"), "vendor": _equals("vendor"),
                 "product_type": _equals("product_type"), "handle": _equals("handle"), "tag": _tag},
}


def _collect_bounds(node: Node, bounds: dict[str, int], table: Table) -> None:
    """Lower bounds every match must meet (terms ANDed at the top level), so a first page in updated_at or id
    order can start there instead of scanning older records."""
    terms = [node] if isinstance(node, _Term) else node[1] if node[0] == "and" else []
    for t in terms:
        if not isinstance(t, _Term) or t.negated:
            continue
        if t.field == "updated_at":
            lo, _ = _time_range(t)
            if lo is not None:
                bounds["updated_at_min"] = max(bounds.get("updated_at_min", lo), lo)
        elif t.field == "id":
            lo, _ = _numeric_range(t.op, _int(t))
            if lo is not None:
                bounds["since_id"] = max(bounds.get("since_id", lo - 1), lo - 1)
