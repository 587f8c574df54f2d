"""Aggregate SOQL: GROUP BY [ROLLUP|CUBE], aggregate functions, HAVING and AggregateResult records.

`SELECT LeadSource, COUNT(Id) n, SUM(Amount) FROM Opportunity GROUP BY LeadSource HAVING COUNT(Id) > 1` answers one
record per group, `{"attributes": {"type": "AggregateResult"}, "LeadSource": "Web", "n": 3, "expr0": 250.0}`:
a grouped field keeps its name (or alias), an unaliased function is named expr0, expr1, ... in SELECT order,
counting only the unaliased ones. ROLLUP and CUBE add subtotal rows whose rolled-up fields are null, with
GROUPING(field) = 1 on them. Without ORDER BY, groups come sorted by their grouped values with each subtotal
after the rows it sums and the grand total last (the org leaves that order unspecified).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import Any, cast

from ferry.sandbox.salesforce import soql as ast
from ferry.sandbox.salesforce.errors import ApiError
from ferry.sandbox.salesforce.query import (
    _TEXT_TYPES,
    Executor,
    Getter,
    QueryPlan,
    _comparator,
    _fold,
    canonical,
    field_capability,
    function_field,
)
from ferry.sandbox.salesforce.schema import NUMBER_TYPES, FieldSchema
from ferry.sandbox.salesforce.soql import SoqlError, caret_message, malformed
from ferry.sandbox.salesforce.store import Record

MAX_AGGREGATE_ROWS = 2000  # an aggregate query has no queryMore: one batch is all it can answer


@dataclass(slots=True)
class Group:
    values: tuple[Any, ...]  # the grouped values as the first record shows them; None where rolled up
    rolled: tuple[bool, ...]  # per GROUP BY item: is this row a subtotal over it?
    rows: list[Record]
    cache: dict[str, Any] = field(default_factory=dict)


GroupValue = Callable[[Group], Any]


@dataclass(slots=True)
class GroupKey:
    text: str  # canonical text, e.g. "account.name" or "calendar_year(createddate)"
    getter: Getter
    field: FieldSchema  # what types comparisons with it (a stand-in int/date field for a date function)
    text_type: bool


@dataclass(slots=True)
class AggregatePlan:
    keys: list[GroupKey]
    kind: str  # "", ROLLUP or CUBE
    columns: list[tuple[str, GroupValue]]  # output name and value, in SELECT order
    having: Callable[[Group], bool] | None = None
    order: list[tuple[GroupValue, bool, bool, bool]] = field(default_factory=list)


# --- compile ----------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, executor: Executor, plan: QueryPlan) -> None:
        self.executor = executor
        self.query = plan.query
        self.obj = plan.sobject
        self.keys = [GroupKey(text, getter, f, f.type in _TEXT_TYPES)
                     for text, getter, f in executor.group_keys(plan.query, plan.sobject)]
        for item, key in zip(self.query.group_by, self.keys, strict=True):
            if isinstance(item, ast.FuncExpr):  # compared as the int or date the function answers
                key.field = function_field(item, key.field)
                key.text_type = False

    def key_index(self, item: ast.Operand) -> int | None:
        text = canonical(item)
        return next((i for i, k in enumerate(self.keys) if k.text == text), None)

    def value(self, item: ast.Operand, clause: str) -> tuple[GroupValue, FieldSchema | None]:
        """How one SELECT/HAVING/ORDER BY item is read off a group, and the field that types it (None: a count)."""
        if isinstance(item, ast.FuncExpr) and item.name == "GROUPING":
            return self._grouping(item), None
        if isinstance(item, ast.FuncExpr) and item.aggregate:
            return self._measure(item)
        index = self.key_index(item)
        if index is None:
            what = "Ordered field" if clause == "ORDER BY" else "Field"
            raise malformed(self.query.soql, item.pos, f"{what} must be grouped or aggregated: {item.text}")
        return (lambda g: g.values[index]), self.keys[index].field

    def _grouping(self, item: ast.FuncExpr) -> GroupValue:
        assert item.field is not None
        index = self.key_index(item.field)
        if index is None or not self.query.group_kind:
            raise malformed(self.query.soql, item.pos, f"GROUPING() can only be used on a field of GROUP BY ROLLUP "
                            f"or GROUP BY CUBE: {item.field.text}")
        return lambda g: 1 if g.rolled[index] else 0

    def _measure(self, item: ast.FuncExpr) -> tuple[GroupValue, FieldSchema | None]:
        if item.field is None:
            raise malformed(self.query.soql, item.pos, "Field must be grouped or aggregated: COUNT()")
        resolved = self.executor.resolve(self.query, self.obj, item.field)
        f = resolved.field
        if not _supports(item.name, f):
            raise malformed(self.query.soql, item.pos, f"field {f.name} does not support aggregate operator "
                            f"{item.name}")
        compute = _AGGREGATES[item.name](resolved.getter, f.type in _TEXT_TYPES)
        key = canonical(item)

        def value(group: Group) -> Any:
            if key not in group.cache:
                group.cache[key] = compute(group.rows)
            return group.cache[key]

        return value, (None if item.name in ("COUNT", "COUNT_DISTINCT", "SUM", "AVG") else f)

    def columns(self, items: list[ast.SelectItem]) -> list[tuple[str, GroupValue]]:
        out: list[tuple[str, GroupValue]] = []
        names: set[str] = set()
        expr = itertools.count()
        for item in items:
            if not isinstance(item, ast.FieldPath | ast.FuncExpr):
                raise malformed(self.query.soql, item.pos, "Aggregate query does not support this select item")
            get, _ = self.value(item, "SELECT")
            if item.alias is not None:
                name = item.alias
            elif isinstance(item, ast.FuncExpr):
                name = f"expr{next(expr)}"
            else:
                name = item.parts[-1]
            if name.lower() in names:
                pos = item.alias_pos if item.alias is not None else item.pos
                raise malformed(self.query.soql, pos, f"duplicate alias: {name}")
            names.add(name.lower())
            out.append((name, get))
        return out

    def having(self, cond: ast.Condition) -> Callable[[Group], bool]:
        if isinstance(cond, ast.BoolOp):
            parts = [self.having(c) for c in cond.items]
            if cond.op == "AND":
                return lambda g: all(p(g) for p in parts)
            return lambda g: any(p(g) for p in parts)
        if isinstance(cond, ast.Not):
            inner = self.having(cond.item)
            return lambda g: not inner(g)
        get, f = self.value(cond.path, "HAVING")
        if isinstance(cond.value, ast.SemiJoin):
            raise malformed(self.query.soql, cond.value.pos, "semi join sub-selects are not allowed in HAVING")
        if f is None:
            return self._numeric_test(get, cond)
        # compile_test reads values through the getter it is given: here the "record" is the group.
        test = self.executor.compile_test(self.query, f, cast(Getter, get), cond)
        return lambda g: test(cast(Record, g))

    def _numeric_test(self, get: GroupValue, cond: ast.Comparison) -> Callable[[Group], bool]:
        """COUNT/SUM/AVG in HAVING compare with a number."""
        literals = cond.value if isinstance(cond.value, list) else [cond.value]
        for lit in literals:
            assert isinstance(lit, ast.Literal)
            if lit.kind not in ("NUMBER", "NULL"):
                raise SoqlError(400, "INVALID_FIELD", caret_message(
                    self.query.soql, lit.pos, f"value of filter criterion for field '{cond.path.text}' must be of "
                    "type double and should not be enclosed in quotes"))
        values = {None if lit.value is None else float(lit.value) for lit in literals if isinstance(lit, ast.Literal)}
        if cond.op in ("IN", "NOTIN"):
            inside = cond.op == "IN"
            return lambda g: (get(g) in values) == inside
        if cond.op not in ("=", "!=", "<", "<=", ">", ">="):
            raise malformed(self.query.soql, cond.path.pos, f"invalid operator on aggregate: {cond.op}")
        (target,) = values
        test = _comparator(cond.op, cast(Getter, get), target, False)
        return lambda g: test(cast(Record, g))

    def order(self, items: list[ast.OrderItem]) -> list[tuple[GroupValue, bool, bool, bool]]:
        out = []
        for item in items:
            get, f = self.value(item.path, "ORDER BY")
            nulls_last = item.nulls_last if item.nulls_last is not None else item.descending
            out.append((get, item.descending, nulls_last, f is not None and f.type in _TEXT_TYPES))
        return out


def compile_aggregate(executor: Executor, plan: QueryPlan, items: list[ast.SelectItem]) -> AggregatePlan:
    compiler = _Compiler(executor, plan)
    query = plan.query
    grouped = AggregatePlan(compiler.keys, query.group_kind, compiler.columns(items))
    if query.having is not None:
        grouped.having = compiler.having(query.having)
    grouped.order = compiler.order(query.order_by)
    return grouped


def _supports(name: str, f: FieldSchema) -> bool:
    """The org's table of aggregate functions per field type (booleans and long text support none)."""
    if f.type == "boolean" or not field_capability(f, "filterable"):
        return False
    if name in ("SUM", "AVG"):
        return f.type in NUMBER_TYPES
    return f.type not in ("multipicklist", "encryptedstring", "base64")


def _non_null(get: Getter, rows: Iterable[Record]) -> list[Any]:
    return [v for v in (get(r) for r in rows) if v is not None]


def _count(get: Getter, text: bool) -> Callable[[list[Record]], Any]:
    return lambda rows: len(_non_null(get, rows))


def _count_distinct(get: Getter, text: bool) -> Callable[[list[Record]], Any]:
    return lambda rows: len({_fold(v, text) for v in _non_null(get, rows)})


def _sum(get: Getter, text: bool) -> Callable[[list[Record]], Any]:
    def total(rows: list[Record]) -> Any:
        values = _non_null(get, rows)
        return float(sum(values)) if values else None

    return total


def _avg(get: Getter, text: bool) -> Callable[[list[Record]], Any]:
    def mean(rows: list[Record]) -> Any:
        values = _non_null(get, rows)
        return float(sum(values)) / len(values) if values else None

    return mean


def _extreme(pick: Callable[..., Any]) -> Callable[[Getter, bool], Callable[[list[Record]], Any]]:
    def make(get: Getter, text: bool) -> Callable[[list[Record]], Any]:
        def extreme(rows: list[Record]) -> Any:
            values = _non_null(get, rows)
            return pick(values, key=lambda v: _fold(v, text)) if values else None

        return extreme

    return make


_AGGREGATES: dict[str, Callable[[Getter, bool], Callable[[list[Record]], Any]]] = {
    "COUNT": _count, "COUNT_DISTINCT": _count_distinct, "SUM": _sum, "AVG": _avg,
    "MIN": _extreme(min), "MAX": _extreme(max),
}


# --- run --------------------------------------------------------------------------------------------


def aggregate_records(plan: QueryPlan, rows: list[Record]) -> list[dict[str, Any]]:
    """The AggregateResult records of a grouped plan over its filtered rows."""
    grouped = plan.grouped
    assert grouped is not None
    groups = _groups(grouped, rows)
    if grouped.having is not None:
        groups = [g for g in groups if grouped.having(g)]
    groups = _ordered(grouped, groups)
    q = plan.query
    start = q.offset or 0
    groups = groups[start:start + q.limit] if q.limit is not None else groups[start:]
    if len(groups) > MAX_AGGREGATE_ROWS:
        raise ApiError(400, "MALFORMED_QUERY", "Aggregate query does not support queryMore(), use LIMIT to restrict "
                       "the results to a single batch")
    return [{"attributes": {"type": "AggregateResult"}, **{name: get(g) for name, get in grouped.columns}}
            for g in groups]


def _grouping_sets(count: int, kind: str) -> list[tuple[bool, ...]]:
    """Which GROUP BY items each set rolls up: none for plain GROUP BY; prefixes for ROLLUP; every subset for CUBE."""
    if kind == "ROLLUP":
        return [tuple(i >= keep for i in range(count)) for keep in range(count, -1, -1)]
    if kind == "CUBE":
        return list(itertools.product((False, True), repeat=count))
    return [(False,) * count]


def _groups(grouped: AggregatePlan, rows: list[Record]) -> list[Group]:
    keys = grouped.keys
    if not keys:
        return [Group((), (), rows)]  # an aggregate without GROUP BY: one row, even over no records
    out: list[Group] = []
    for rolled in _grouping_sets(len(keys), grouped.kind):
        buckets: dict[tuple[Any, ...], Group] = {}
        for record in rows:
            values = tuple(None if r else k.getter(record) for k, r in zip(keys, rolled, strict=True))
            folded = tuple(_fold(v, k.text_type) for k, v in zip(keys, values, strict=True))
            group = buckets.get(folded)
            if group is None:
                group = buckets[folded] = Group(values, rolled, [])
            group.rows.append(record)
        out.extend(buckets.values())
    return out


def _ordered(grouped: AggregatePlan, groups: list[Group]) -> list[Group]:
    if grouped.order:
        def by_order(a: Group, b: Group) -> int:
            for get, desc, nulls_last, text in grouped.order:
                result = _compare(_fold(get(a), text), _fold(get(b), text), nulls_last)
                if result:
                    return -result if desc and get(a) is not None and get(b) is not None else result
            return 0

        return sorted(groups, key=cmp_to_key(by_order))

    def by_keys(a: Group, b: Group) -> int:
        # Subtotals sort after the rows they sum; within a level, nulls first as in ORDER BY's default.
        for key, va, vb, ra, rb in zip(grouped.keys, a.values, b.values, a.rolled, b.rolled, strict=True):
            if ra != rb:
                return 1 if ra else -1
            result = _compare(_fold(va, key.text_type), _fold(vb, key.text_type), False)
            if result:
                return result
        return 0

    return sorted(groups, key=cmp_to_key(by_keys))


def _compare(a: Any, b: Any, nulls_last: bool) -> int:
    if a == b:
        return 0
    if a is None or b is None:
        return (1 if nulls_last else -1) * (1 if a is None else -1)
    return -1 if a < b else 1

