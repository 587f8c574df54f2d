"""The mapping language: one ``objects:`` entry of a pipeline, parsed and checked once at load time.

A field expression is one of (docs/mapping.md has the full reference)::

    LastName: last_name                                   # a dotted path on the canonical record
    Status: {value: Draft}                                # a literal
    Description: {path: note, default: "", transform: [strip, lower], on_too_long: truncate}
    Name: {coalesce: [full_name, company, email]}         # first non-empty (None and "" are empty)
    Name: {template: "Shopify customer {key}"}            # missing parts are "", result stripped, "" -> None
    IsActive: {map: {path: status, values: {active: true}, default: false}}
    AccountId: {ref: Account, by: Shopify_Customer_Id__c, value: key}   # parent by external id
    Pricebook2Id: {query: "SELECT Id FROM Pricebook2 WHERE IsStandard = true"}  # resolved once a run
    Line: {each: lines, fields: {Amount: total, ItemRef: {ref: Item, by: Name, value: variant_key}}}
                                                          # a list: one sub-record per element of a tuple

Everything that can be checked without the target is checked here, so a typo
fails ``ferry plan`` with the object and field named instead of dead-lettering
every record of a run: unknown keys, unknown entities, paths that the canonical
record does not have, a missing external id field.
"""

from __future__ import annotations

import dataclasses
import difflib
import string
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ferry.core.dialect import Dialect
from ferry.core.records import Reference
from ferry.core.schema import ObjectSchema
from ferry.errors import ConfigError
from ferry.model.canonical import ENTITY_TYPES

Transform = Literal["date", "lower", "upper", "strip"]
OnTooLong = Literal["dead_letter", "truncate"]
FORM_KEYS = ("value", "path", "coalesce", "template", "map", "ref", "query", "each")


class _Expr(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Shaped(_Expr):
    """Options every value-producing form accepts."""

    transform: tuple[Transform, ...] = ()
    on_too_long: OnTooLong = "dead_letter"

    @field_validator("transform", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v


class PathExpr(_Shaped):
    path: str = Field(min_length=1)
    default: Any = None


class ValueExpr(_Shaped):
    value: Any


class CoalesceExpr(_Shaped):
    coalesce: tuple[FieldExpr, ...] = Field(min_length=1)


class TemplateExpr(_Shaped):
    template: str


class MapSpec(_Expr):
    path: str = Field(min_length=1)
    values: dict[Any, Any]
    default: Any = None


class MapExpr(_Shaped):
    map: MapSpec


class RefExpr(_Expr):
    ref: str = Field(min_length=1)
    by: str = Field(min_length=1)
    value: FieldExpr


class QueryExpr(_Expr):
    query: str = Field(min_length=1)


class EachExpr(_Expr):
    """A list of sub-records, one per element of a tuple path (an order's lines): for targets that write a
    parent with its children in one record (a QuickBooks Invoice and its ``Line``). The sub-fields are
    expressions on the element; the target validates them (the validator sees the list as one value)."""

    each: str = Field(min_length=1)
    fields: dict[str, FieldExpr] = Field(min_length=1)


FieldExpr = Union[PathExpr, ValueExpr, CoalesceExpr, TemplateExpr, MapExpr, RefExpr, QueryExpr, EachExpr]  # noqa: UP007
_FORMS: dict[str, type[_Expr]] = {
    "value": ValueExpr,
    "path": PathExpr,
    "coalesce": CoalesceExpr,
    "template": TemplateExpr,
    "map": MapExpr,
    "ref": RefExpr,
    "query": QueryExpr,
    "each": EachExpr,
}
for _model in (CoalesceExpr, RefExpr, EachExpr):
    _model.model_rebuild()


class ObjectMapping(BaseModel):
    """One target object: which canonical entity feeds it, its external id field, and its fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=1)
    external_id: str = Field(min_length=1)
    fields: dict[str, FieldExpr] = Field(min_length=1)

    @field_validator("fields", mode="before")
    @classmethod
    def _parse_fields(cls, raw: Any, info: Any) -> Any:
        owner = info.data.get("name", "?")
        if not isinstance(raw, dict):
            raise ValueError(f"{owner}: fields must be a mapping of target field -> expression")
        return {str(name): parse_expr(expr, f"{owner}.{name}", top_level=True) for name, expr in raw.items()}

    @model_validator(mode="after")
    def _check_against_model(self) -> ObjectMapping:
        if self.from_ not in ENTITY_TYPES:
            known = ", ".join(ENTITY_TYPES)
            raise ValueError(f"{self.name}: from: unknown entity {self.from_!r}; expected one of {known}")
        if self.external_id not in self.fields:
            raise ValueError(
                f"{self.name}: external_id {self.external_id} is not mapped; add it under fields "
                f"(usually `{self.external_id}: key`)"
            )
        for field_name, expr in self.fields.items():
            for path in expr_paths(expr):
                check_path(ENTITY_TYPES[self.from_], path, f"{self.name}.{field_name}")
            if isinstance(expr, EachExpr):
                element = element_type(ENTITY_TYPES[self.from_], expr.each, f"{self.name}.{field_name}")
                for sub_name, sub in expr.fields.items():
                    for path in expr_paths(sub):
                        check_path(element, path, f"{self.name}.{field_name}.{sub_name}")
        return self


# -- parsing ---------------------------------------------------------------------


def parse_expr(raw: Any, where: str, *, top_level: bool = False) -> FieldExpr:
    """YAML value -> expression model; every problem is a ValueError naming ``where`` (Object.Field)."""
    if isinstance(raw, _Expr):
        return typing.cast(FieldExpr, raw)  # built in Python already
    if isinstance(raw, str):
        if not raw.strip():
            raise ValueError(f"{where}: an empty path; write {{value: null}} for a null or a path like `email`")
        return PathExpr(path=raw.strip())
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where}: expected a path string or a mapping with one of {', '.join(FORM_KEYS)}; "
            f"got {type(raw).__name__} {raw!r} (write a constant as {{value: ...}})"
        )
    form = _form_of(raw, where)
    if form in ("ref", "each") and not top_level:
        raise ValueError(f"{where}: a {form} must be the whole field expression, not nested inside another one")
    model = _FORMS[form]
    _reject_unknown_keys(raw, model, form, where)
    data = dict(raw)
    if form == "coalesce":
        items = raw["coalesce"]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}: coalesce takes a non-empty list of expressions")
        data["coalesce"] = tuple(parse_expr(item, f"{where}.coalesce[{i}]") for i, item in enumerate(items))
    elif form == "ref":
        if "value" not in raw:
            raise ValueError(f"{where}: a ref needs value: (the expression giving the parent's external id)")
        data["value"] = parse_expr(raw["value"], f"{where}.value")
    elif form == "each":
        sub = raw.get("fields")
        if not isinstance(sub, dict) or not sub:
            raise ValueError(f"{where}: each needs fields: (target sub-field -> expression on one element)")
        data["fields"] = {
            str(k): parse_expr(v, f"{where}.{k}", top_level=not isinstance(v, dict) or "each" not in v)
            for k, v in sub.items()
        }
    elif form == "map" and isinstance(raw["map"], dict):
        _reject_unknown_keys(raw["map"], MapSpec, "map", f"{where}.map")
    try:
        return typing.cast(FieldExpr, model.model_validate(data))
    except ValidationError as exc:
        raise ValueError(f"{where}: {_first_problem(exc)}") from None


def _form_of(raw: dict[Any, Any], where: str) -> str:
    forms = [k for k in FORM_KEYS if k in raw]
    if "ref" in forms:
        return "ref"  # a ref's own `value:` is its key expression, not a literal
    if not forms:
        keys = ", ".join(map(str, raw))
        raise ValueError(f"{where}: unknown expression with keys [{keys}]; expected one of {', '.join(FORM_KEYS)}")
    if len(forms) > 1:
        raise ValueError(f"{where}: ambiguous expression: use only one of {', '.join(forms)}")
    return forms[0]


def _reject_unknown_keys(raw: dict[Any, Any], model: type[BaseModel], form: str, where: str) -> None:
    unknown = [str(k) for k in raw if k not in model.model_fields]
    if unknown:
        allowed = ", ".join(model.model_fields)
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} in a {form} expression; allowed: {allowed}")


def _first_problem(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


# -- paths against the canonical model ------------------------------------------------


def expr_paths(expr: FieldExpr) -> Iterator[str]:
    """Every canonical-record path an expression reads."""
    if isinstance(expr, PathExpr):
        yield expr.path
    elif isinstance(expr, CoalesceExpr):
        for item in expr.coalesce:
            yield from expr_paths(item)
    elif isinstance(expr, TemplateExpr):
        yield from template_paths(expr.template)
    elif isinstance(expr, MapExpr):
        yield expr.map.path
    elif isinstance(expr, RefExpr):
        yield from expr_paths(expr.value)


def template_paths(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None


def check_path(record_type: type, path: str, where: str) -> None:
    """Raise ValueError when ``path`` does not exist on the canonical record type (with a suggestion)."""
    current: type | None = record_type
    walked: list[str] = []
    for part in path.split("."):
        if current is None or not dataclasses.is_dataclass(current):
            raise ValueError(f"{where}: path {path!r}: {'.'.join(walked)} is a plain value; cannot read .{part}")
        hints = typing.get_type_hints(current)
        if part not in hints:
            names = [f.name for f in dataclasses.fields(current)]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; it has {', '.join(names)}"
            raise ValueError(f"{where}: path {path!r}: {current.__name__} has no field {part!r}{hint}")
        walked.append(part)
        current = _record_type_in(hints[part])


def is_text_path(record_type: type, path: str) -> bool:
    """Whether ``path`` reads a field declared as plain text (``str`` or ``str | None``) on the canonical
    record type. Text that has a meaning of its own is declared by its alias (``Money``) and is not."""
    current: type | None = record_type
    declared: Any = None
    for part in path.split("."):
        if current is None or not dataclasses.is_dataclass(current):
            return False
        declared = next((f.type for f in dataclasses.fields(current) if f.name == part), None)
        if declared is None:
            return False
        current = _record_type_in(typing.get_type_hints(current)[part])
    # The annotation as written (``from __future__ import annotations`` keeps it a string): aliases stay named.
    return str(declared).replace(" ", "") in ("str", "str|None", "None|str")


def element_type(record_type: type, path: str, where: str) -> type:
    """The record type of the elements of a tuple path (``Order.lines`` -> ``OrderLine``)."""
    current: Any = record_type
    for part in path.split("."):
        hints = typing.get_type_hints(current) if dataclasses.is_dataclass(current) else {}
        hint = hints.get(part)
        if hint is None:
            raise ValueError(f"{where}: each: {path!r} is not a field of {getattr(current, '__name__', current)}")
        current = _record_type_in(hint) or hint
    args = typing.get_args(current) if typing.get_origin(current) is tuple else ()
    if not args or not isinstance(args[0], type) or not dataclasses.is_dataclass(args[0]):
        raise ValueError(f"{where}: each: {path!r} is not a list of records")
    return args[0]


def _record_type_in(hint: Any) -> type | None:
    """The dataclass type inside ``X | None`` (None for plain values)."""
    if isinstance(hint, type):
        return hint if dataclasses.is_dataclass(hint) else None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is Union:
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
    return None


# -- references, constants, load order --------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefDependency:
    """A child's reference to a parent object by that parent's external id."""

    object: str  # the parent target object, e.g. Account
    field: str  # the child's reference field, e.g. AccountId
    by: str  # the parent's external id field, e.g. Shopify_Customer_Id__c

    @property
    def reference(self) -> Reference:
        return Reference(self.object, self.field, self.by)

    def payload_key(self, schema: ObjectSchema | None, dialect: Dialect) -> str:
        """The MappedRecord key the target's dialect carries this reference under."""
        return dialect.reference_key(self.reference, schema)


def ref_dependencies(mapping: ObjectMapping) -> list[RefDependency]:
    """The parents a mapping points at, including those of its ``each`` sub-records (load order)."""
    found = []
    for field_name, expr in mapping.fields.items():
        if isinstance(expr, RefExpr):
            found.append(RefDependency(expr.ref, field_name, expr.by))
        elif isinstance(expr, EachExpr):
            found += [
                RefDependency(sub.ref, f"{field_name}.{name}", sub.by)
                for name, sub in expr.fields.items()
                if isinstance(sub, RefExpr)
            ]
    return found


def payload_key(field_name: str, expr: FieldExpr, schema: ObjectSchema | None, dialect: Dialect) -> str:
    """The key a mapped field has in the MappedRecord (the field name, or the dialect's key for a ref)."""
    if isinstance(expr, RefExpr):
        return RefDependency(expr.ref, field_name, expr.by).payload_key(schema, dialect)
    return field_name


def mapped_entities(mappings: Sequence[ObjectMapping]) -> frozenset[str]:
    """The canonical entities a pipeline's objects read: each one's ``from:``, and the entity of the elements an
    ``each:`` walks (an Invoice from ``order`` with ``each: lines`` reads ``order_line`` records too). What a
    source must read whole for this pipeline (``SelectsEntities``)."""
    by_type = {record_type: entity for entity, record_type in ENTITY_TYPES.items()}
    found = {m.from_ for m in mappings}
    for m in mappings:
        for field_name, expr in m.fields.items():
            if isinstance(expr, EachExpr):
                element = element_type(ENTITY_TYPES[m.from_], expr.each, f"{m.name}.{field_name}")
                if element in by_type:
                    found.add(by_type[element])
    return frozenset(found)


def query_constants(mapping: ObjectMapping) -> list[str]:
    """The query constants (in the target's query language) the mapping needs, each once, in field order
    (the engine resolves them per run)."""
    found: dict[str, None] = {}
    for expr in mapping.fields.values():
        for query in _queries_in(expr):
            found.setdefault(query, None)
    return list(found)


def _queries_in(expr: FieldExpr) -> Iterator[str]:
    if isinstance(expr, QueryExpr):
        yield expr.query
    elif isinstance(expr, CoalesceExpr):
        for item in expr.coalesce:
            yield from _queries_in(item)
    elif isinstance(expr, RefExpr):
        yield from _queries_in(expr.value)
    elif isinstance(expr, EachExpr):
        for sub in expr.fields.values():
            yield from _queries_in(sub)


def load_order(mappings: Sequence[ObjectMapping]) -> list[ObjectMapping]:
    """Parents before children (Account -> Contact -> Order -> OrderItem); file order otherwise.

    A ref to an object not in the pipeline is a record that already exists in
    the target and imposes no order; a self-reference is ignored. A cycle is a
    ConfigError that names it.
    """
    by_name = {m.name: m for m in mappings}
    ordered: list[ObjectMapping] = []
    state: dict[str, str] = {}

    def visit(m: ObjectMapping, path: list[str]) -> None:
        if state.get(m.name) == "done":
            return
        if state.get(m.name) == "visiting":
            raise ConfigError(f"objects reference each other in a cycle: {' -> '.join([*path, m.name])}")
        state[m.name] = "visiting"
        for dep in ref_dependencies(m):
            parent = by_name.get(dep.object)
            if parent is not None and parent.name != m.name:
                visit(parent, [*path, m.name])
        state[m.name] = "done"
        ordered.append(m)

    for m in mappings:
        visit(m, [])
    return ordered
