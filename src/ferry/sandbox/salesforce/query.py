"""Run a parsed SOQL query against the store: resolve fields, filter, sort, project.

Field paths are compiled once into getter closures and the WHERE clause into a
predicate, so a query over many rows is a tight Python loop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any

from ferry.sandbox.salesforce import datefn
from ferry.sandbox.salesforce import soql as ast
from ferry.sandbox.salesforce.describe import describe_field
from ferry.sandbox.salesforce.ids import normalize_id
from ferry.sandbox.salesforce.schema import NUMBER_TYPES, ChildRelationship, FieldSchema, Schema, SObjectSchema
from ferry.sandbox.salesforce.soql import SoqlError, caret_message, malformed
from ferry.sandbox.salesforce.store import Record, Store
from ferry.sandbox.salesforce.validate import format_datetime, parse_datetime

if TYPE_CHECKING:
    from ferry.sandbox.salesforce.aggregate import AggregatePlan

Getter = Callable[[Record], Any]
Predicate = Callable[[Record], bool]

_TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox",
                         "encryptedstring"})
_ID_TYPES = frozenset({"id", "reference"})
MAX_OFFSET = 2000
MAX_FIELDS_LIMIT = 200
MAX_SEMI_JOINS = 2


def invalid_field(query: ast.Query, pos: int, text: str) -> SoqlError:
    return SoqlError(400, "INVALID_FIELD", caret_message(query.soql, pos, text))


def field_capability(f: FieldSchema, what: str) -> bool:
    """The describe flag ("filterable", "sortable", "groupable", "aggregatable") the org checks a clause against."""
    return bool(describe_field(f)[what])


def not_capable(query: ast.Query, pos: int, f: FieldSchema, verb: str) -> SoqlError:
    return invalid_field(query, pos, f"field '{f.name}' can not be {verb} in a query call")


@dataclass(slots=True)
class ResolvedPath:
    path: ast.FieldPath
    objects: list[SObjectSchema]  # the object at each step: [Contact, Account] for Account.Name
    refs: list[FieldSchema]  # the lookup field followed at each hop
    field: FieldSchema
    getter: Getter


@dataclass(slots=True)
class ChildPlan:
    """A child relationship subquery: `(SELECT LastName FROM Contacts)` on Account."""

    relationship: str  # canonical relationship name, the key in the parent's record
    field: str  # the lookup field on the child that points at the parent (AccountId)
    plan: QueryPlan


@dataclass(slots=True)
class TypeOfPlan:
    """`TYPEOF What WHEN Account THEN Phone ELSE Name END`: per possible parent type, the fields to answer."""

    relationship: str  # the relationship name, the key in the record (What)
    field: str  # the polymorphic lookup field (WhatId)
    branches: dict[str, list[ResolvedPath]]  # parent object name -> its columns, resolved on that object


@dataclass(slots=True)
class QueryPlan:
    query: ast.Query
    sobject: SObjectSchema
    columns: list[ResolvedPath]
    count_only: bool
    predicate: Predicate | None
    # SELECT items in their order (fields and child subqueries), for projection
    items: list[ResolvedPath | ChildPlan | TypeOfPlan] = field(default_factory=list)
    sort_keys: list[tuple[Getter, bool, bool, bool]] = field(default_factory=list)
    grouped: AggregatePlan | None = None  # GROUP BY / aggregate functions: rows become AggregateResult records


class Executor:
    def __init__(self, schema: Schema, store: Store, clock: Callable[[], dt.datetime]) -> None:
        self.schema = schema
        self.store = store
        self.clock = clock

    # --- compile ------------------------------------------------------------------------------------

    def plan(self, query: ast.Query, *, children: bool = True) -> QueryPlan:
        """Compile a parsed query; ``children=False`` (Bulk query) rejects child subqueries as the org does."""
        obj = self.schema.get(query.sobject)
        if obj is None:
            raise SoqlError(400, "INVALID_TYPE", caret_message(
                query.soql, query.sobject_pos,
                f"sObject type '{query.sobject}' is not supported. If you are attempting to use a custom object, be "
                "sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for "
                "the appropriate names."))
        if query.offset is not None and query.offset > MAX_OFFSET:
            raise SoqlError(400, "NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        return self._compile(query, obj, children)

    def _compile(self, query: ast.Query, obj: SObjectSchema, children: bool) -> QueryPlan:
        items = self._expand_fields(query, obj)
        if query.where is not None:
            self._check_semi_joins(query, query.where)
        if _is_aggregate(query, items):
            # aggregate.py builds on this module's resolution; imported here to keep the modules acyclic.
            from ferry.sandbox.salesforce.aggregate import compile_aggregate

            plan = self._base_plan(query, obj, count_only=False)
            plan.grouped = compile_aggregate(self, plan, items)
            return plan
        count = next((i for i in items if isinstance(i, ast.FuncExpr) and i.field is None), None)
        plan = self._base_plan(query, obj, count_only=count is not None)
        for item in items:
            if count is not None and item is not count:
                raise malformed(query.soql, item.pos, f"Field must be grouped or aggregated: {_item_text(item)}")
            if isinstance(item, ast.Subquery):
                if not children:
                    raise SoqlError(400, "FeatureNotEnabled", "Aggregate Relationships not supported in Bulk Query")
                plan.items.append(self.child_plan(query, obj, item))
            elif isinstance(item, ast.TypeOf):
                plan.items.append(self.typeof_plan(query, obj, item))
            elif isinstance(item, ast.FieldPath):
                self._add_column(plan, item)
        if count is not None:
            self._check_count(query)
        for order in query.order_by:
            plan.sort_keys.append(self._sort_key(query, obj, order))
        return plan

    @staticmethod
    def _check_count(query: ast.Query) -> None:
        """COUNT() takes neither GROUP BY (from API 19.0) nor ORDER BY; the reference says to use COUNT(field)."""
        if query.group_by:
            raise malformed(query.soql, query.group_pos, "COUNT() cannot be used with GROUP BY; use COUNT(fieldName)")
        if query.order_by:
            raise malformed(query.soql, query.order_by[0].path.pos, "COUNT() cannot be used with ORDER BY; use "
                            "COUNT(fieldName)")

    def _base_plan(self, query: ast.Query, obj: SObjectSchema, *, count_only: bool) -> QueryPlan:
        predicate = self.compile_condition(query, obj, query.where) if query.where is not None else None
        return QueryPlan(query, obj, [], count_only, predicate)

    def _add_column(self, plan: QueryPlan, item: ast.FieldPath) -> None:
        query = plan.query
        if item.alias is not None:
            raise malformed(query.soql, item.alias_pos, "only aggregate expressions use field aliasing")
        resolved = self.resolve(query, plan.sobject, item)
        if any(c.path.text.lower() == item.text.lower() for c in plan.columns):
            raise malformed(query.soql, item.pos, f"duplicate field selected: {item.text}")
        plan.columns.append(resolved)
        plan.items.append(resolved)

    def _sort_key(self, query: ast.Query, obj: SObjectSchema, order: ast.OrderItem) -> tuple[Getter, bool, bool, bool]:
        if isinstance(order.path, ast.FuncExpr):
            if order.path.aggregate or order.path.field is None:
                raise malformed(query.soql, order.path.pos,
                                f"Ordered field must be grouped or aggregated: {order.path.text}")
            getter, _ = self.function_getter(query, obj, order.path)
            text = False
        else:
            resolved = self.resolve(query, obj, order.path)
            if not field_capability(resolved.field, "sortable"):
                raise not_capable(query, order.path.pos, resolved.field, "sorted")
            getter, text = resolved.getter, resolved.field.type in _TEXT_TYPES
        nulls_last = order.nulls_last if order.nulls_last is not None else order.descending
        return getter, order.descending, nulls_last, text

    def group_keys(self, query: ast.Query, obj: SObjectSchema) -> list[tuple[str, Getter, FieldSchema]]:
        """GROUP BY items as (canonical text, getter, field read); each must be groupable."""
        keys = []
        for item in query.group_by:
            if isinstance(item, ast.FuncExpr):
                if item.aggregate or item.field is None or item.name == "GROUPING":
                    raise malformed(query.soql, item.pos, f"Grouped field should not be aggregated: {item.text}")
                getter, f = self.function_getter(query, obj, item)
                keys.append((canonical(item), getter, f))
                continue
            resolved = self.resolve(query, obj, item)
            if not field_capability(resolved.field, "groupable"):
                raise not_capable(query, item.pos, resolved.field, "grouped")
            keys.append((canonical(item), resolved.getter, resolved.field))
        return keys

    def function_getter(self, query: ast.Query, obj: SObjectSchema, func: ast.FuncExpr) -> tuple[Getter, FieldSchema]:
        """A date function over a field: its getter and the field it reads."""
        assert func.field is not None
        resolved = self.resolve(query, obj, func.field)
        f = resolved.field
        if not datefn.applies_to(func.name, f.type):
            raise malformed(query.soql, func.pos, f"{func.name} cannot be applied to field {f.name} of type {f.type}")
        return datefn.compose(func.name, resolved.getter), f

    def typeof_plan(self, query: ast.Query, obj: SObjectSchema, item: ast.TypeOf) -> TypeOfPlan:
        """Resolve TYPEOF on a polymorphic lookup: WHEN fields on their type, ELSE fields on every other type."""
        rel = obj.relationship(item.relationship)
        at = item.pos + len("TYPEOF ")
        if rel is None:
            raise invalid_field(query, at, (
                f"Didn't understand relationship '{item.relationship}' in field path. If you are attempting to use a "
                "custom relationship, be sure to append the '__r' after the custom relationship name. Please "
                "reference your WSDL or the describe call for the appropriate names."))
        if len(rel.reference_to) < 2:
            # The default schema has no polymorphic lookup: every OwnerId points at User only.
            raise malformed(query.soql, item.pos, "TYPEOF can only be used with a polymorphic relationship field: "
                            f"{item.relationship}")
        targets = {name.lower(): name for name in rel.reference_to}
        branches: dict[str, list[ResolvedPath]] = {}
        for type_name, paths in item.whens:
            target = targets.get(type_name.lower())
            if target is None:
                raise invalid_field(query, at, f"TYPEOF {item.relationship}: {type_name} is not a type the "
                                    "relationship can point to")
            branches[target] = [self.resolve(query, self.schema.objects[target], p) for p in paths]
        for target in rel.reference_to:
            if target not in branches and item.otherwise:
                branches[target] = [self.resolve(query, self.schema.objects[target], p) for p in item.otherwise]
        assert rel.relationship_name is not None
        return TypeOfPlan(rel.relationship_name, rel.name, branches)

    @staticmethod
    def _expand_fields(query: ast.Query, obj: SObjectSchema) -> list[ast.SelectItem]:
        """Replace FIELDS(...) by the fields it stands for; ALL and CUSTOM need LIMIT <= 200, as in the org."""
        items: list[ast.SelectItem] = []
        expanded: set[str] = set()
        for item in query.select:
            if not isinstance(item, ast.FieldsExpr):
                items.append(item)
                continue
            if item.kind != "STANDARD" and (query.limit is None or query.limit > MAX_FIELDS_LIMIT):
                raise malformed(query.soql, item.pos,
                                f"The SOQL FIELDS function must have a LIMIT of at most {MAX_FIELDS_LIMIT}")
            for f in obj.fields.values():
                if (item.kind == "STANDARD" and f.custom) or (item.kind == "CUSTOM" and not f.custom):
                    continue
                items.append(ast.FieldPath([f.name], item.pos))
                expanded.add(f.name.lower())
        if expanded:
            # A field named beside FIELDS() is selected twice; the org answers without a caret block.
            seen: set[str] = set()
            for path in (i for i in items if isinstance(i, ast.FieldPath)):
                low = path.text.lower()
                if low in seen and low in expanded:
                    raise SoqlError(400, "INVALID_FIELD", f"duplicate field selected: {path.text}")
                seen.add(low)
        return items

    def child_plan(self, query: ast.Query, parent: SObjectSchema, sub: ast.Subquery) -> ChildPlan:
        """Resolve `(SELECT ... FROM Contacts)`: the FROM names a child relationship of the outer object."""
        inner = sub.query
        rel = self._child_relationship(parent, inner.sobject)
        if rel is None:
            raise SoqlError(400, "INVALID_TYPE", caret_message(
                query.soql, inner.sobject_pos,
                f"Didn't understand relationship '{inner.sobject}' in FROM part of query call. If you are attempting "
                "to use a custom relationship, be sure to append the '__r' after the custom relationship name. "
                "Please reference your WSDL or the describe call for the appropriate names."))
        for item in inner.select:
            if isinstance(item, ast.Subquery):
                raise malformed(query.soql, item.pos, "SOQL statements cannot query aggregate relationships more "
                                "than 1 level away from the root entity object.")
            if isinstance(item, ast.FuncExpr):
                raise malformed(query.soql, item.pos, "only root queries support aggregate expressions")
        if inner.group_by:
            raise malformed(query.soql, inner.group_pos, "only root queries support aggregate expressions")
        child = self.schema.objects[rel.child]
        # The inner query keeps the outer statement for its caret messages.
        inner.soql = query.soql
        plan = self._compile(inner, child, children=False)
        assert rel.relationship_name is not None
        return ChildPlan(rel.relationship_name, rel.field, plan)

    def _child_relationship(self, parent: SObjectSchema, name: str) -> ChildRelationship | None:
        low = name.lower()
        return next((r for r in self.schema.children.get(parent.name, [])
                     if r.relationship_name is not None and r.relationship_name.lower() == low), None)

    def resolve(self, query: ast.Query, obj: SObjectSchema, path: ast.FieldPath) -> ResolvedPath:
        objects = [obj]
        refs: list[FieldSchema] = []
        current = obj
        for part in path.parts[:-1]:
            rel = current.relationship(part)
            target = self.schema.get(rel.reference_to[0]) if rel is not None and rel.reference_to else None
            if rel is None or target is None:
                raise invalid_field(query, path.pos, (
                    f"Didn't understand relationship '{part}' in field path. If you are attempting to use a custom "
                    "relationship, be sure to append the '__r' after the custom relationship name. Please reference "
                    "your WSDL or the describe call for the appropriate names."))
            refs.append(rel)
            current = target
            objects.append(current)
        f = current.field(path.parts[-1])
        if f is None:
            raise invalid_field(query, path.pos, (
                f"No such column '{path.parts[-1]}' on entity '{current.name}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names."))
        return ResolvedPath(path, objects, refs, f, self._getter(objects, refs, f))

    def _getter(self, objects: list[SObjectSchema], refs: list[FieldSchema], f: FieldSchema) -> Getter:
        name = f.name
        if not refs:
            return lambda record: record.get(name)
        hops = [(ref.name, self.store.table(objects[i + 1].name).rows) for i, ref in enumerate(refs)]

        def get(record: Record) -> Any:
            current: Record | None = record
            for field_name, rows in hops:
                parent_id = current.get(field_name) if current is not None else None
                current = rows.get(parent_id) if parent_id is not None else None
                if current is None:
                    return None
            return current.get(name) if current is not None else None

        return get

    def compile_condition(self, query: ast.Query, obj: SObjectSchema, cond: ast.Condition) -> Predicate:
        if isinstance(cond, ast.BoolOp):
            parts = [self.compile_condition(query, obj, c) for c in cond.items]
            if cond.op == "AND":
                return lambda r: all(p(r) for p in parts)
            return lambda r: any(p(r) for p in parts)
        if isinstance(cond, ast.Not):
            inner = self.compile_condition(query, obj, cond.item)
            return lambda r: not inner(r)
        return self.compile_comparison(query, obj, cond)

    def compile_comparison(self, query: ast.Query, obj: SObjectSchema, cmp: ast.Comparison) -> Predicate:
        if isinstance(cmp.path, ast.FuncExpr):
            return self._compile_function_comparison(query, obj, cmp.path, cmp)
        resolved = self.resolve(query, obj, cmp.path)
        f, get = resolved.field, resolved.getter
        if not field_capability(f, "filterable"):
            raise not_capable(query, cmp.path.pos, f, "filtered")
        return self.compile_test(query, f, get, cmp)

    def _compile_function_comparison(self, query: ast.Query, obj: SObjectSchema, func: ast.FuncExpr,
                                     cmp: ast.Comparison) -> Predicate:
        """`CALENDAR_YEAR(CreatedDate) = 2024`, `DAY_ONLY(CreatedDate) = TODAY`: a date function in WHERE."""
        if func.aggregate or func.field is None or func.name == "GROUPING":
            raise malformed(query.soql, func.pos, "Aggregate functions are not allowed in the WHERE clause; use "
                            "HAVING")
        get, f = self.function_getter(query, obj, func)
        return self.compile_test(query, function_field(func, f), get, cmp)

    def compile_test(self, query: ast.Query, f: FieldSchema, get: Getter, cmp: ast.Comparison) -> Predicate:
        """The test of one comparison, given the value's getter and the field that types it."""
        text = f.type in _TEXT_TYPES
        if isinstance(cmp.value, ast.SemiJoin):
            ids = self._semi_join_values(query, f, cmp.value)
            if cmp.op == "IN":
                return lambda r: get(r) in ids
            return lambda r: get(r) not in ids
        if cmp.op in ("IN", "NOTIN", "INCLUDES", "EXCLUDES"):
            assert isinstance(cmp.value, list)
            values = {self._normalize(query, f, lit, text) for lit in cmp.value}
            if cmp.op in ("IN", "INCLUDES"):
                return lambda r: _fold(get(r), text) in values
            return lambda r: _fold(get(r), text) not in values
        assert isinstance(cmp.value, ast.Literal)
        literal = cmp.value
        if cmp.op == "LIKE":
            if f.type in _ID_TYPES:
                raise SoqlError(400, "INVALID_QUERY_FILTER_OPERATOR",
                                caret_message(query.soql, literal.pos, "invalid operator on id field"))
            if literal.kind != "STRING" or not text:
                raise invalid_field(query, literal.pos, f"invalid operator on field {f.name}: LIKE")
            pattern = _like_regex(literal.value)
            return lambda r: (v := get(r)) is not None and pattern.match(str(v)) is not None
        if literal.kind == "RELATIVE":
            return self._relative_date(query, f, get, cmp.op, literal)
        target = self._normalize(query, f, literal, text)
        return _comparator(cmp.op, get, target, text)

    def _semi_join_values(self, query: ast.Query, f: FieldSchema, join: ast.SemiJoin) -> set[Any]:
        """Run `(SELECT AccountId FROM Contact ...)` once; the outer filter tests membership in its values."""
        inner = join.query
        inner.soql = query.soql
        if f.type not in _ID_TYPES:
            raise malformed(query.soql, join.pos, "semi join sub-selects are only allowed on ID fields")
        if len(inner.select) != 1 or not isinstance(inner.select[0], ast.FieldPath):
            raise malformed(query.soql, join.pos, "semi join sub-selects are only allowed to select a single field")
        nested = _semi_joins(inner.where) if inner.where is not None else []
        if nested:
            raise malformed(query.soql, nested[0].pos, "Nesting of semi join sub-selects is not supported")
        plan = self.plan(inner, children=False)
        if plan.grouped is not None:
            raise malformed(query.soql, join.pos, "only root queries support aggregate expressions")
        (column,) = plan.columns
        outer = self.schema.get(query.sobject)
        if outer is not None and plan.sobject.name == outer.name:
            raise invalid_field(query, inner.sobject_pos, "The inner and outer selects should not be on the same "
                                "object type")
        if column.field.type not in _ID_TYPES or _target(column.field, inner, self.schema) != _target(
                f, query, self.schema):
            raise invalid_field(query, column.path.pos, (
                f"The selected field '{column.path.text}' in the subquery and the left operand field in the where "
                f"expression in the outer query '{f.name}' should point to the same object type"))
        return {v for v in (column.getter(r) for r in self.rows(plan, False)) if v is not None}

    def _check_semi_joins(self, query: ast.Query, where: ast.Condition) -> None:
        """The org's placement rules: at most two, only in the top-level AND, never under OR, NOT or parentheses."""
        joins = _semi_joins(where)
        if len(joins) > MAX_SEMI_JOINS:
            raise malformed(query.soql, joins[MAX_SEMI_JOINS].pos,
                            f"Maximum {MAX_SEMI_JOINS} semi join sub-selects are allowed")
        top = where.items if isinstance(where, ast.BoolOp) else [where]
        for item in top:
            if isinstance(item, ast.Comparison):
                continue
            nested = _semi_joins(item)
            if not nested:
                continue
            if isinstance(where, ast.BoolOp) and where.op == "OR":
                raise malformed(query.soql, nested[0].pos,
                                "Semi join sub-selects are not allowed with the 'OR' operator")
            raise malformed(query.soql, nested[0].pos, "Semi join sub-selects are only allowed at the top level "
                            "WHERE expressions and not in nested WHERE expressions.")
        if isinstance(where, ast.BoolOp) and where.op == "OR" and joins:
            raise malformed(query.soql, joins[0].pos, "Semi join sub-selects are not allowed with the 'OR' operator")

    def _normalize(self, query: ast.Query, f: FieldSchema, lit: ast.Literal, text: bool) -> Any:
        """Check a literal against the field's type the way the org does, and convert it to the stored form."""
        if lit.kind == "NULL":
            return None
        kind_needed = _literal_kind(f)
        if lit.kind != kind_needed and not (kind_needed == "NUMBER" and lit.kind == "NUMBER"):
            raise invalid_field(query, lit.pos, _type_mismatch(f, kind_needed))
        if f.type in _ID_TYPES:
            record_id = normalize_id(lit.value)
            if record_id is None:
                raise SoqlError(400, "INVALID_QUERY_FILTER_OPERATOR",
                                caret_message(query.soql, lit.pos, f"invalid ID field: {lit.value}"))
            return record_id
        if lit.kind == "DATETIME":
            return format_datetime(parse_datetime(lit.value))
        if lit.kind == "NUMBER":
            return float(lit.value)
        return _fold(lit.value, text)

    def _relative_date(self, query: ast.Query, f: FieldSchema, get: Getter, op: str, lit: ast.Literal) -> Predicate:
        if f.type not in ("date", "datetime"):
            raise invalid_field(query, lit.pos, _type_mismatch(f, _literal_kind(f)))
        bounds = _relative_range(self.clock().date(), lit.value, lit.n)
        if bounds is None:
            raise SoqlError(400, "MALFORMED_QUERY", caret_message(query.soql, lit.pos,
                                                                   f"unexpected token: '{lit.text}'"))
        start, end = bounds  # [start, end)
        if f.type == "datetime":
            lo, hi = f"{start.isoformat()}T00:00:00.000+0000", f"{end.isoformat()}T00:00:00.000+0000"
        else:
            lo, hi = start.isoformat(), end.isoformat()
        tests: dict[str, Callable[[Any], bool]] = {
            "=": lambda v: lo <= v < hi, "!=": lambda v: not lo <= v < hi, "<": lambda v: v < lo,
            "<=": lambda v: v < hi, ">": lambda v: v >= hi, ">=": lambda v: v >= lo,
        }
        test = tests[op]
        return lambda r: (v := get(r)) is not None and test(v)

    # --- run ------------------------------------------------------------------------------------------

    def aggregate_result(self, plan: QueryPlan, include_deleted: bool) -> dict[str, Any]:
        """The whole answer of COUNT() (a size, no records) or of an aggregate query (AggregateResult rows)."""
        from ferry.sandbox.salesforce.aggregate import aggregate_records

        if plan.count_only:
            return {"totalSize": len(self.rows(plan, include_deleted)), "done": True, "records": []}
        records = aggregate_records(plan, self._filtered(plan, include_deleted))
        return {"totalSize": len(records), "done": True, "records": records}

    def _source(self, plan: QueryPlan, include_deleted: bool) -> Iterable[Record]:
        table = self.store.table(plan.sobject.name)
        if include_deleted:
            return [*table.rows.values(), *table.deleted.values()]
        return table.rows.values()

    def _filtered(self, plan: QueryPlan, include_deleted: bool) -> list[Record]:
        pred, source = plan.predicate, self._source(plan, include_deleted)
        return [r for r in source if pred(r)] if pred is not None else list(source)

    def rows(self, plan: QueryPlan, include_deleted: bool) -> list[Record]:
        return self._filter_sort_slice(plan, self._source(plan, include_deleted))

    def select_from(self, plan: QueryPlan, source: Iterable[Record]) -> list[Record]:
        """The plan's WHERE, ORDER BY, OFFSET and LIMIT over given rows (a search's matches)."""
        return self._filter_sort_slice(plan, source)

    def _filter_sort_slice(self, plan: QueryPlan, source: Iterable[Record]) -> list[Record]:
        pred = plan.predicate
        rows = [r for r in source if pred(r)] if pred is not None else list(source)
        q = plan.query
        if plan.sort_keys:
            rows = self._sorted(plan, rows)
        start = q.offset or 0
        end = start + q.limit if q.limit is not None else None
        return rows[start:end] if (start or end is not None) else rows

    def child_rows(self, child: ChildPlan, parent_id: str, include_deleted: bool) -> list[Record]:
        """The children of one parent record, in creation (Id) order unless the subquery sorts them."""
        table = self.store.table(child.plan.sobject.name)
        ids = self.store.child_ids(table.schema.name, child.field, parent_id)
        source = [table.rows[i] for i in sorted(ids) if i in table.rows]
        if include_deleted:
            source += [r for r in table.deleted.values() if r.get(child.field) == parent_id]
        return self._filter_sort_slice(child.plan, source)

    def _sorted(self, plan: QueryPlan, rows: list[Record]) -> list[Record]:
        keys = plan.sort_keys

        def compare(a: Record, b: Record) -> int:
            for get, desc, nulls_last, text in keys:
                va, vb = _fold(get(a), text), _fold(get(b), text)
                if va == vb:
                    continue
                if va is None or vb is None:
                    return (1 if nulls_last else -1) * (1 if va is None else -1)
                result = -1 if va < vb else 1
                return -result if desc else result
            return 0

        return sorted(rows, key=cmp_to_key(compare))

    def project(self, plan: QueryPlan, record: Record, version: str, include_deleted: bool = False) -> dict[str, Any]:
        """A query result record: attributes, then the selected items in SELECT order.

        Parent fields nest under the relationship name; a child subquery becomes a nested
        `{totalSize, done, records}` result, or null when the record has no such children (as the org answers).
        """
        obj = plan.sobject
        out: dict[str, Any] = {"attributes": _attributes(obj.name, record["Id"], version)}
        for col in plan.items:
            if isinstance(col, TypeOfPlan):
                out[col.relationship] = self._project_typeof(col, record, version)
            elif isinstance(col, ChildPlan):
                kids = self.child_rows(col, record["Id"], include_deleted)
                out[col.relationship] = {
                    "totalSize": len(kids), "done": True,
                    "records": [self.project(col.plan, kid, version) for kid in kids],
                } if kids else None
            elif not col.refs:
                out[col.field.name] = record.get(col.field.name)
            else:
                self._project_parent(out, record, col, version)
        return out

    def _project_typeof(self, col: TypeOfPlan, record: Record, version: str) -> dict[str, Any] | None:
        """The polymorphic parent, typed by its id's key prefix, with the fields of its branch."""
        parent_id = record.get(col.field)
        parent_obj = self.schema.by_prefix(parent_id[:3]) if parent_id else None
        parent = self.store.table(parent_obj.name).rows.get(parent_id) if parent_obj and parent_id else None
        if parent_obj is None or parent is None:
            return None
        node: dict[str, Any] = {"attributes": _attributes(parent_obj.name, parent["Id"], version)}
        for path in col.branches.get(parent_obj.name, []):
            if path.refs:
                self._project_parent(node, parent, path, version)
            else:
                node[path.field.name] = parent.get(path.field.name)
        return node

    def _project_parent(self, out: dict[str, Any], record: Record, col: ResolvedPath, version: str) -> None:
        node, current = out, record
        for i, ref in enumerate(col.refs):
            rel_name = ref.relationship_name or ref.name
            parent_obj = col.objects[i + 1]
            parent_id = current.get(ref.name)
            parent = self.store.table(parent_obj.name).rows.get(parent_id) if parent_id else None
            if parent is None:
                node.setdefault(rel_name, None)
                return
            child = node.get(rel_name)
            if child is None:
                child = node[rel_name] = {"attributes": _attributes(parent_obj.name, parent["Id"], version)}
            node, current = child, parent
        node[col.field.name] = current.get(col.field.name)

    def flat_row(self, plan: QueryPlan, record: Record) -> list[Any]:
        return [col.getter(record) for col in plan.columns]


def _attributes(sobject: str, record_id: str, version: str) -> dict[str, str]:
    return {"type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{record_id}"}


def _is_aggregate(query: ast.Query, items: list[ast.SelectItem]) -> bool:
    """GROUP BY, or any function in SELECT other than a lone COUNT(), makes the rows AggregateResults."""
    funcs = [i for i in items if isinstance(i, ast.FuncExpr)]
    if any(f.field is None for f in funcs):
        return False
    return bool(query.group_by or funcs)


def canonical(item: ast.Operand) -> str:
    """How SELECT, HAVING and ORDER BY items are matched against GROUP BY items: case-insensitive text."""
    return item.text.lower()


def _item_text(item: ast.SelectItem) -> str:
    if isinstance(item, ast.FieldPath | ast.FuncExpr):
        return item.text
    return item.relationship if isinstance(item, ast.TypeOf) else "subquery"


def function_field(func: ast.FuncExpr, f: FieldSchema) -> FieldSchema:
    """A stand-in field typing a date function's result (a date for DAY_ONLY, else an int) for comparisons."""
    return dataclasses.replace(f, name=func.text, type="date" if datefn.result_kind(func.name) == "DATE" else "int")


def _semi_joins(cond: ast.Condition) -> list[ast.SemiJoin]:
    if isinstance(cond, ast.BoolOp):
        return [j for c in cond.items for j in _semi_joins(c)]
    if isinstance(cond, ast.Not):
        return _semi_joins(cond.item)
    return [cond.value] if isinstance(cond.value, ast.SemiJoin) else []


def _target(f: FieldSchema, query: ast.Query, schema: Schema) -> str:
    """The object an id/reference field points at: its own object for Id, the referenced one for a lookup."""
    if f.type == "reference" and f.reference_to:
        return f.reference_to[0]
    obj = schema.get(query.sobject)
    return obj.name if obj is not None else query.sobject


def _fold(value: Any, text: bool) -> Any:
    # SOQL compares text case-insensitively.
    return value.lower() if text and isinstance(value, str) else value


def _comparator(op: str, get: Getter, target: Any, text: bool) -> Predicate:
    if op == "=":
        return lambda r: _fold(get(r), text) == target
    if op == "!=":
        return lambda r: _fold(get(r), text) != target
    if target is None:
        return lambda r: False
    tests: dict[str, Callable[[Any], bool]] = {
        "<": lambda v: v < target, "<=": lambda v: v <= target, ">": lambda v: v > target,
        ">=": lambda v: v >= target,
    }
    test = tests[op]
    return lambda r: (v := _fold(get(r), text)) is not None and test(v)


def _literal_kind(f: FieldSchema) -> str:
    if f.type in NUMBER_TYPES:
        return "NUMBER"
    if f.type == "boolean":
        return "BOOLEAN"
    if f.type == "date":
        return "DATE"
    if f.type == "datetime":
        return "DATETIME"
    return "STRING"


def _type_mismatch(f: FieldSchema, kind: str) -> str:
    if kind == "STRING":
        return f"value of filter criterion for field '{f.name}' must be of type string and should be enclosed in quotes"
    soap = {"NUMBER": "double", "BOOLEAN": "boolean", "DATE": "date", "DATETIME": "dateTime"}[kind]
    if f.type == "int":
        soap = "int"
    return f"value of filter criterion for field '{f.name}' must be of type {soap} and should not be enclosed in quotes"


def _like_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


def _month_start(day: dt.date, shift: int = 0) -> dt.date:
    months = day.year * 12 + day.month - 1 + shift
    return dt.date(months // 12, months % 12 + 1, 1)


def _quarter_start(day: dt.date, shift: int = 0) -> dt.date:
    return _month_start(dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1), 3 * shift)


def _week_start(day: dt.date, shift: int = 0) -> dt.date:
    # Weeks start on Sunday, as in the org's default (en_US) locale.
    return day - dt.timedelta(days=(day.weekday() + 1) % 7) + dt.timedelta(weeks=shift)


def _year_start(day: dt.date, shift: int = 0) -> dt.date:
    return dt.date(day.year + shift, 1, 1)


_PERIODS: dict[str, Callable[[dt.date, int], dt.date]] = {
    "WEEK": _week_start, "MONTH": _month_start, "QUARTER": _quarter_start, "YEAR": _year_start,
}


def _relative_range(today: dt.date, name: str, n: int | None) -> tuple[dt.date, dt.date] | None:
    """[start, end) of a relative date literal (the org's calendar, fiscal year = calendar year); None if unknown."""
    day = dt.timedelta(days=1)
    if n is None:
        fixed = {
            "TODAY": (today, today + day),
            "YESTERDAY": (today - day, today),
            "TOMORROW": (today + day, today + 2 * day),
            "LAST_90_DAYS": (today - 90 * day, today + day),
            "NEXT_90_DAYS": (today + day, today + 91 * day),
        }
        if name in fixed:
            return fixed[name]
        when, _, unit = name.partition("_")
        start_of = _PERIODS.get(unit.removeprefix("FISCAL_"))
        shift = {"THIS": 0, "LAST": -1, "NEXT": 1}.get(when)
        if start_of is None or shift is None:
            return None
        return start_of(today, shift), start_of(today, shift + 1)
    if name == "LAST_N_DAYS":
        return today - n * day, today + day
    if name == "NEXT_N_DAYS":
        return today + day, today + (n + 1) * day
    if name == "N_DAYS_AGO":
        return today - n * day, today - (n - 1) * day
    parts = name.split("_", 2)
    if len(parts) == 3 and parts[0] == "N" and parts[2] == "AGO":  # N_WEEKS_AGO:n, N_MONTHS_AGO:n, ...
        start_of = _PERIODS.get(parts[1].removesuffix("S"))
        return (start_of(today, -n), start_of(today, -n + 1)) if start_of else None
    if len(parts) == 3 and parts[0] in ("LAST", "NEXT") and parts[1] == "N":  # LAST_N_MONTHS:n, NEXT_N_WEEKS:n, ...
        start_of = _PERIODS.get(parts[2].removesuffix("S").removeprefix("FISCAL_"))
        if start_of is None:
            return None
        # The current period is excluded: LAST_N_MONTHS:2 is the two whole months before this one.
        return (start_of(today, -n), start_of(today, 0)) if parts[0] == "LAST" else \
            (start_of(today, 1), start_of(today, n + 1))
    return None
