"""`ferry plan`: what a run would write and what is wrong with the mapping, checked against the target. No writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.types import ObjectSchema
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import build_plans, order_plans
from ferry.errors import PermanentError
from ferry.mapping.spec import (
    CoalesceExpr,
    FieldExpr,
    MapExpr,
    ObjectMapping,
    PathExpr,
    QueryExpr,
    RefExpr,
    TemplateExpr,
    ValueExpr,
    payload_key,
    query_constants,
)
from ferry.store import Store


@dataclass(slots=True)
class FieldLine:
    field: str
    expression: str
    type: str
    length: int
    required: bool


@dataclass(slots=True)
class ObjectReport:
    name: str
    entity: str
    external_id: str
    pending: int
    strategy: str
    reason: str
    fields: list[FieldLine] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PlanReport:
    pipeline: str
    load_order: list[str]
    objects: list[ObjectReport]
    api_usage: tuple[int, int] | None

    @property
    def errors(self) -> list[str]:
        return [p for o in self.objects for p in o.problems]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "load_order": self.load_order,
            "objects": [asdict(o) for o in self.objects],
            "api_usage": list(self.api_usage) if self.api_usage else None,
            "problems": self.errors,
        }


def describe_expr(expr: FieldExpr) -> str:
    """A one-line, human reading of a mapping expression."""
    if isinstance(expr, PathExpr):
        text = expr.path
    elif isinstance(expr, ValueExpr):
        text = repr(expr.value)
    elif isinstance(expr, CoalesceExpr):
        text = "first of " + " | ".join(describe_expr(e) for e in expr.coalesce)
    elif isinstance(expr, TemplateExpr):
        text = repr(expr.template)
    elif isinstance(expr, MapExpr):
        text = f"{expr.map.path} mapped {dict(expr.map.values)} else {expr.map.default!r}"
    elif isinstance(expr, RefExpr):
        return f"{expr.ref} by {expr.by} = {describe_expr(expr.value)}"
    elif isinstance(expr, QueryExpr):
        return f"query: {expr.query}"
    else:  # pragma: no cover - the union is closed
        return str(expr)
    if expr.transform:
        text += " | " + " | ".join(expr.transform)
    if expr.on_too_long == "truncate":
        text += " (truncated to fit)"
    return text


async def inspect_pipeline(spec: PipelineSpec, store: Store) -> PlanReport:
    async with SalesforceSink(spec.target) as sink:
        schemas: dict[str, ObjectSchema] = {}
        missing: dict[str, str] = {}
        for m in spec.objects:
            try:
                schemas[m.name] = await sink.describe(m.name)
            except PermanentError as exc:
                missing[m.name] = str(exc)
        constants, query_problems = await _resolve_queries(sink, spec.objects)
        reports = []
        for m in spec.objects:
            if m.name in missing:
                reports.append(_missing_object(m, missing[m.name]))
                continue
            reports.append(_object_report(m, schemas, constants, query_problems, store, spec.name, sink))
        order = [
            p.name for p in order_plans(build_plans([m for m in spec.objects if m.name in schemas], schemas, constants))
        ]
        return PlanReport(spec.name, order, reports, sink.api_usage)


async def _resolve_queries(
    sink: SalesforceSink, mappings: list[ObjectMapping]
) -> tuple[dict[str, Any], dict[str, str]]:
    constants: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for soql in {q for m in mappings for q in query_constants(m)}:
        try:
            rows = await sink.query(soql)
        except PermanentError as exc:
            problems[soql] = f"query failed: {exc}"
            continue
        if len(rows) != 1:
            problems[soql] = f"query returns {len(rows)} rows, a mapping constant needs exactly 1: {soql}"
            continue
        constants[soql] = next(v for k, v in rows[0].items() if k != "attributes")
    return constants, problems


def _object_report(
    m: ObjectMapping,
    schemas: dict[str, ObjectSchema],
    constants: dict[str, Any],
    query_problems: dict[str, str],
    store: Store,
    pipeline: str,
    sink: SalesforceSink,
) -> ObjectReport:
    schema = schemas[m.name]
    [plan] = build_plans([m], schemas, constants)
    pending = store.outbox_count(pipeline, m.name)
    choice = sink.choose_strategy(m.name, pending)
    report = ObjectReport(m.name, m.from_, m.external_id, pending, choice.strategy.value, choice.reason)
    report.problems += list(plan.validator.problems)
    for name, expr in m.fields.items():
        fs = schema.field(name)
        report.fields.append(
            FieldLine(
                payload_key(name, expr, schema),
                describe_expr(expr),
                fs.type if fs else "?",
                fs.length if fs else 0,
                bool(fs and fs.required_on_create),
            )
        )
        report.problems += _ref_problems(m, name, expr, schema, schemas)
        if isinstance(expr, QueryExpr) and expr.query in query_problems:
            report.problems.append(f"{m.name}.{name}: {query_problems[expr.query]}")
    return report


def _ref_problems(
    m: ObjectMapping, name: str, expr: FieldExpr, schema: ObjectSchema, schemas: dict[str, ObjectSchema]
) -> list[str]:
    if not isinstance(expr, RefExpr):
        return []
    where = f"{m.name}.{name}"
    fs = schema.field(name)
    if fs is None:
        return []  # already reported as an unknown field
    if fs.type != "reference":
        return [f"{where}: ref used on a {fs.type} field; refs need a lookup (reference) field"]
    if expr.ref not in fs.reference_to:
        return [f"{where}: points to {', '.join(fs.reference_to)}, not {expr.ref}"]
    parent = schemas.get(expr.ref)
    if parent is None:
        return []  # parent not in this pipeline: nothing known about its fields
    by = parent.field(expr.by)
    if by is None:
        return [f"{where}: {expr.ref} has no field {expr.by}"]
    if not (by.external_id or by.id_lookup):
        return [f"{where}: {expr.ref}.{expr.by} is not an external id, so it cannot identify the parent"]
    return []


def _missing_object(m: ObjectMapping, reason: str) -> ObjectReport:
    return ObjectReport(m.name, m.from_, m.external_id, 0, "-", "", problems=[f"{m.name}: cannot describe: {reason}"])
