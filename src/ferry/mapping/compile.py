"""Mapping specs -> closures. All parsing happens here, once; ``CompiledMapping.map`` only calls functions.

Path lookups use ``operator.attrgetter`` (C speed on dataclasses) and fall back to
a careful walk only when it fails: a None on the way (a customer with no address)
or a plain dict record (custom Python pipelines may hand dicts in).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from operator import attrgetter
from typing import Any

from ferry.core.dialect import Dialect
from ferry.core.records import MappedRecord
from ferry.core.schema import ObjectSchema
from ferry.errors import ConfigError
from ferry.mapping.spec import (
    CoalesceExpr,
    EachExpr,
    FieldExpr,
    MapExpr,
    ObjectMapping,
    PathExpr,
    QueryExpr,
    RefExpr,
    TemplateExpr,
    ValueExpr,
    payload_key,
)

Getter = Callable[[Any], Any]


@dataclass(slots=True)
class CompiledMapping:
    """A target object's mapping as ready-to-call functions, one per MappedRecord key."""

    name: str
    entity: str
    external_id: str
    items: tuple[tuple[str, Getter], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.items)

    def map(self, record: Any) -> MappedRecord:
        return {k: get(record) for k, get in self.items}


def compile_mapping(
    spec: ObjectMapping, schema: ObjectSchema | None, constants: dict[str, Any], dialect: Dialect
) -> CompiledMapping:
    """Compile every field; ``constants`` holds the resolved ``{query: ...}`` values ({query text: value});
    a reference's key is the target dialect's."""
    items = []
    for field_name, expr in spec.fields.items():
        getter = compile_expr(expr, constants, f"{spec.name}.{field_name}", dialect)
        items.append((payload_key(field_name, expr, schema, dialect), getter))
    return CompiledMapping(spec.name, spec.from_, spec.external_id, tuple(items))


def compile_expr(
    expr: FieldExpr, constants: dict[str, Any], where: str = "", dialect: Dialect | None = None
) -> Getter:
    if isinstance(expr, PathExpr):
        get = path_getter(expr.path)
        if expr.default is not None:
            get = _with_default(get, expr.default)
        return _with_transforms(get, expr.transform)
    if isinstance(expr, ValueExpr):
        return _with_transforms(_constant(expr.value), expr.transform)
    if isinstance(expr, CoalesceExpr):
        return _with_transforms(_coalesce([compile_expr(e, constants, where) for e in expr.coalesce]), expr.transform)
    if isinstance(expr, TemplateExpr):
        return _with_transforms(_template(expr.template), expr.transform)
    if isinstance(expr, MapExpr):
        return _with_transforms(_value_map(expr), expr.transform)
    if isinstance(expr, RefExpr):
        return _reference(compile_expr(expr.value, constants, where))
    if isinstance(expr, EachExpr):
        if dialect is None:
            raise ConfigError(f"{where}: an each expression needs the target's dialect to key its references")
        return _each(expr, constants, where, dialect)
    if isinstance(expr, QueryExpr):
        if expr.query not in constants:
            raise ConfigError(f"{where}: the query {expr.query!r} was not resolved before compiling the mapping")
        return _constant(constants[expr.query])
    raise TypeError(f"{where}: not a field expression: {expr!r}")


# -- paths -----------------------------------------------------------------------


def path_getter(path: str) -> Getter:
    parts = tuple(path.split("."))
    if len(parts) == 1:
        fast = attrgetter(path)

        def get(record: Any) -> Any:
            try:
                return fast(record)
            except AttributeError:
                return _walk(record, parts)

        return get
    # Nested: a None parent (no address) is common, so test for it rather than pay for an exception.
    head, tail, rest = attrgetter(parts[0]), attrgetter(".".join(parts[1:])), parts[1:]

    def get_nested(record: Any) -> Any:
        try:
            parent = head(record)
        except AttributeError:
            return _walk(record, parts)
        if parent is None:
            return None
        try:
            return tail(parent)
        except AttributeError:
            return _walk(parent, rest)

    return get_nested


def _walk(obj: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def _constant(value: Any) -> Getter:
    return lambda _record: value


def _with_default(get: Getter, default: Any) -> Getter:
    def defaulted(record: Any) -> Any:
        value = get(record)
        return default if value is None or value == "" else value

    return defaulted


# -- transforms ------------------------------------------------------------------


def _to_date(value: Any) -> Any:
    """A timestamp or date -> ``YYYY-MM-DD``; anything else passes through for the validator to judge."""
    if isinstance(value, str):
        v = value.strip()
        return v[:10] if len(v) >= 10 and v[4] == "-" and v[7] == "-" else v
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _str_op(op: Callable[[str], str]) -> Callable[[Any], Any]:
    return lambda v: op(v) if isinstance(v, str) else v


TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "date": _to_date,
    "lower": _str_op(str.lower),
    "upper": _str_op(str.upper),
    "strip": _str_op(str.strip),
}


def _with_transforms(get: Getter, names: tuple[str, ...]) -> Getter:
    if not names:
        return get
    steps = tuple(TRANSFORMS[n] for n in names)

    def transformed(record: Any) -> Any:
        value = get(record)
        for step in steps:
            value = step(value)
        return value

    return transformed


# -- forms -------------------------------------------------------------------------


def _coalesce(getters: list[Getter]) -> Getter:
    candidates = tuple(getters)

    def first_non_empty(record: Any) -> Any:
        for get in candidates:
            value = get(record)
            if value is not None and value != "":
                return value
        return None

    return first_non_empty


def _template(template: str) -> Getter:
    # Literal chunks and getters, precomputed; `{{`/`}}` are literal braces as in str.format.
    parts: list[str | Getter] = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        if literal:
            parts.append(literal)
        if name is not None:
            parts.append(path_getter(name))
    frozen = tuple(parts)

    def render(record: Any) -> str | None:
        out = []
        for part in frozen:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part(record)
                out.append("" if value is None else str(value))
        return "".join(out).strip() or None

    return render


def map_key(value: Any) -> Any:
    """How map keys and looked-up values meet: YAML's `true:` matches True and "true"; 1 matches "1"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        s = value.strip()
        low = s.lower()
        return low if low in ("true", "false") else s
    if value is None:
        return None
    return str(value)


def _value_map(expr: MapExpr) -> Getter:
    get = path_getter(expr.map.path)
    exact = {map_key(k): v for k, v in expr.map.values.items()}
    # A second, case-insensitive table: "Active" should meet `active:` when no exact key exists.
    folded: dict[Any, Any] = {}
    for k, v in exact.items():
        if isinstance(k, str):
            folded.setdefault(k.casefold(), v)
    default = expr.map.default
    missing = object()

    def lookup(record: Any) -> Any:
        key = map_key(get(record))
        if key is None:
            return default
        found = exact.get(key, missing)
        if found is missing and isinstance(key, str):
            found = folded.get(key.casefold(), missing)
        return default if found is missing else found

    return lookup


def _each(expr: EachExpr, constants: dict[str, Any], where: str, dialect: Dialect) -> Getter:
    """One sub-record per element of the tuple at ``expr.each``, a reference keyed in the dialect's form
    (without a describe: the sub-record's schema is the target's to judge)."""
    elements = path_getter(expr.each)
    items = tuple(
        (payload_key(name, sub, None, dialect), compile_expr(sub, constants, f"{where}.{name}", dialect))
        for name, sub in expr.fields.items()
    )

    def sub_records(record: Any) -> list[MappedRecord]:
        return [{k: get(element) for k, get in items} for element in elements(record) or ()]

    return sub_records


def _reference(get: Getter) -> Getter:
    def external_id(record: Any) -> str | None:
        value = get(record)
        if value is None:
            return None
        text = str(value)
        return text or None  # "" is no reference at all; the validator then judges required-ness

    return external_id
