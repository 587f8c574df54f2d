"""`ferry plan`: what a run would write and what is wrong with the mapping, checked against the target. No writes."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from ferry.connectors.registry import open_sink, open_source
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.schema import ObjectSchema
from ferry.core.writes import choose_write
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan, build_plans, order_plans
from ferry.errors import ConfigError, FerryError, PermanentError
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
    # Not errors, but what a user should know before the first write (create-only fields, truncation).
    notes: list[str] = field(default_factory=list)
    estimated_calls: int = 0


@dataclass(slots=True)
class PlanReport:
    pipeline: str
    load_order: list[str]
    objects: list[ObjectReport]
    api_usage: tuple[int, int] | None
    api_budget: str | None = None
    budget_remaining: int | None = None
    budget: dict[str, Any] | None = None  # share, calls of the last 24 h (this plan's included), left
    # How the source would read each stream from its saved state, when it can say (Shopify GraphQL: one bulk
    # operation or cost-paced pages, from one count query).
    source_reads: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [p for o in self.objects for p in o.problems]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "load_order": self.load_order,
            "objects": [asdict(o) for o in self.objects],
            "api_usage": list(self.api_usage) if self.api_usage else None,
            "api_budget": self.api_budget,
            "budget_remaining": self.budget_remaining,
            "budget": self.budget,
            "source_reads": self.source_reads,
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
    elif isinstance(expr, EachExpr):
        subs = ", ".join(f"{k}: {describe_expr(v)}" for k, v in expr.fields.items())
        return f"each of {expr.each}: {{{subs}}}"
    else:  # pragma: no cover - the union is closed
        return str(expr)
    if expr.transform:
        text += " | " + " | ".join(expr.transform)
    if expr.on_too_long == "truncate":
        text += " (truncated to fit)"
    return text


async def inspect_pipeline(spec: PipelineSpec, store: Store) -> PlanReport:
    # Plan's describes and queries spend the org's budget too: they count against the pipeline's share.
    async with open_sink(spec.target, SinkContext(spec.name, ledger=store)) as sink:
        schemas: dict[str, ObjectSchema] = {}
        missing: dict[str, str] = {}
        with contextlib.suppress(PermanentError):  # one call for all; an object that fails is asked again below
            queries = sorted({q for m in spec.objects for q in query_constants(m)})
            await sink.describe([m.name for m in spec.objects], queries)  # constants may ride along
        for m in spec.objects:
            try:
                schemas[m.name] = (await sink.describe([m.name]))[m.name]
            except PermanentError as exc:
                missing[m.name] = str(exc)
        constants, query_problems = await _resolve_queries(sink, spec.objects)
        reports = []
        for m in spec.objects:
            if m.name in missing:
                reports.append(_missing_object(m, missing[m.name]))
                continue
            reports.append(_object_report(m, schemas, constants, query_problems, store, spec.name, sink))
        plans = build_plans([m for m in spec.objects if m.name in schemas], schemas, constants, sink.dialect)
        order = [p.name for p in order_plans(plans)]
        async with open_source(spec.source) as source:  # no call: its normalizer judges what is staged
            _staged_findings(source, plans, reports, store, spec)
            source_reads = await _source_reads(source, store, spec.name)
        budget = spec.target.api_budget
        status = sink.budget_status()
        return PlanReport(
            spec.name,
            order,
            reports,
            _target_usage(status),
            str(budget) if budget else None,
            sink.budget_left(),
            status,
            source_reads,
        )


async def _source_reads(source: Any, store: Store, pipeline: str) -> dict[str, Any]:
    """Each stream's read plan, from a source that offers ``plan_read`` (optional: most have one way to read)."""
    plan_read = getattr(source, "plan_read", None)
    if plan_read is None:
        return {}
    reads: dict[str, Any] = {}
    for stream in source.streams:
        try:
            reads[stream] = await plan_read(stream, store.read_state(pipeline, stream))
        except FerryError as exc:  # the source is out of reach: the plan of the target still stands
            return {s: {"stream": s, "mode": None, "error": str(exc)} for s in source.streams}
    return reads


def _target_usage(status: dict[str, Any] | None) -> tuple[int, int] | None:
    """(used, max) of the target's whole daily allocation, as the target last reported it."""
    if not status or status.get("org_used") is None or status.get("org_max") is None:
        return None
    return int(status["org_used"]), int(status["org_max"])


async def _resolve_queries(sink: Sink, mappings: list[ObjectMapping]) -> tuple[dict[str, Any], dict[str, str]]:
    constants: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for query in {q for m in mappings for q in query_constants(m)}:
        try:
            constants[query] = await sink.constant(query)
        except PermanentError as exc:
            problems[query] = f"query failed: {exc}"
        except ConfigError as exc:  # not exactly one row of one field
            problems[query] = str(exc)
    return constants, problems


def _object_report(
    m: ObjectMapping,
    schemas: dict[str, ObjectSchema],
    constants: dict[str, Any],
    query_problems: dict[str, str],
    store: Store,
    pipeline: str,
    sink: Sink,
) -> ObjectReport:
    schema = schemas[m.name]
    [plan] = build_plans([m], schemas, constants, sink.dialect)
    pending = store.outbox_count(pipeline, m.name)
    choice = choose_write(sink.write_costs(m.name, pending), remaining_calls=sink.budget_left())
    report = ObjectReport(
        m.name, m.from_, m.external_id, pending, str(choice.strategy), choice.reason,
        estimated_calls=choice.estimated_calls,
    )
    report.problems += list(plan.validator.problems)
    report.problems += _write_access_problems(m, schema)
    report.notes += _write_access_notes(m, schema)
    for name, expr in m.fields.items():
        fs = schema.field(name)
        report.fields.append(
            FieldLine(
                payload_key(name, expr, schema, sink.dialect),
                describe_expr(expr),
                fs.type if fs else "?",
                fs.length if fs else 0,
                bool(fs and fs.required_on_create),
            )
        )
        report.problems += _ref_problems(m, name, expr, schema, schemas)
        report.problems += _constant_problems(m, name, expr, plan)
        if fs is not None and fs.length and fs.type in _TEXT and isinstance(expr, _HAS_LENGTH_OPTION):
            action = "cut to fit" if expr.on_too_long == "truncate" else "dead-lettered (on_too_long: truncate cuts)"
            report.notes.append(f"{m.name}.{name}: values longer than {fs.length} are {action}")
        if isinstance(expr, QueryExpr) and expr.query in query_problems:
            report.problems.append(f"{m.name}.{name}: {query_problems[expr.query]}")
    return report


_TEXT = frozenset({"string", "textarea", "phone", "url", "email", "picklist", "multipicklist", "combobox"})
_HAS_LENGTH_OPTION = (PathExpr, TemplateExpr, CoalesceExpr, MapExpr, ValueExpr)
# Codes a constant can hit whatever the record: the value itself does not fit the field.
_VALUE_CODES = frozenset(
    {
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "INVALID_EMAIL_ADDRESS",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "STRING_TOO_LONG",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    }
)


STAGED_SAMPLE = 20_000


def _staged_findings(
    source: Source, plans: list[ObjectPlan], reports: list[ObjectReport], store: Store, spec: PipelineSpec
) -> None:
    """Records already read but not yet loaded, mapped and validated dry: how many would be dead-lettered, why."""
    by_name = {r.name: r for r in reports}
    counts: dict[str, Counter[tuple[str, str]]] = {p.name: Counter() for p in plans}
    seen = 0
    for chunk in store.staged(spec.name, source.streams, chunk=2000):
        for staged in chunk:
            raw = orjson.loads(staged.payload)
            for entity, record in source.normalize(staged.stream, raw):
                for plan in plans:
                    if plan.entity != entity:
                        continue
                    _, errors = plan.map_and_validate(record)
                    for e in errors:
                        counts[plan.name][(",".join(e.fields) or "-", e.code)] += 1
        seen += len(chunk)
        if seen >= STAGED_SAMPLE:
            break
    for name, found in counts.items():
        for (fields, code), n in found.most_common():
            by_name[name].notes.append(
                f"{name}.{fields}: {n:,} staged record(s) would be dead-lettered ({code})"
                + ("; on_too_long: truncate cuts them instead" if code == "STRING_TOO_LONG" else "")
            )


def _write_access_problems(m: ObjectMapping, schema: ObjectSchema) -> list[str]:
    """Fields an upsert cannot write when it creates: every new record would be refused."""
    out = []
    for name in m.fields:
        fs = schema.field(name)
        if fs is not None and fs.updateable and not fs.createable:
            out.append(f"{m.name}.{name}: updateable but not createable; every new record would be refused")
    return out


def _write_access_notes(m: ObjectMapping, schema: ObjectSchema) -> list[str]:
    out = []
    for name in m.fields:
        fs = schema.field(name)
        if fs is not None and fs.createable and not fs.updateable and name != m.external_id:
            out.append(f"{m.name}.{name}: createable but not updateable; written on create, left as is on update")
    return out


def _constant_problems(m: ObjectMapping, name: str, expr: FieldExpr, plan: Any) -> list[str]:
    """A constant (or a map's values) that can never be written to the field: a type mismatch in the mapping."""
    if isinstance(expr, ValueExpr):
        candidates = [expr.value]
    elif isinstance(expr, MapExpr):
        candidates = [*expr.map.values.values(), expr.map.default]
    else:
        return []
    key = payload_key(name, expr, plan.validator.schema, plan.validator.dialect)
    out = []
    for value in candidates:
        if value is None:
            continue
        _, errors = plan.validator.validate({key: value}, "plan")
        for e in errors:
            if name in e.fields and e.code in _VALUE_CODES:
                out.append(f"{m.name}.{name}: the mapped value {value!r} cannot be written ({e.code}: {e.message})")
    return out


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
