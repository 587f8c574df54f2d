"""`ferry plan`: what a run would write and what is wrong with the mapping, checked against the target. No writes."""

from __future__ import annotations

import string
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
from ferry.engine.selection import select_for_pipeline
from ferry.errors import AuthError, ConfigError, FerryError, PermanentError, TransientError
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
    is_text_path,
    payload_key,
    query_constants,
)
from ferry.model.canonical import ENTITY_TYPES
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
    # What the next run would read from the source for this object, estimated from the source's counts
    # (``Source.estimate``) and what one source record yields (``Source.probe``); None when not known.
    to_read: int | None = None


@dataclass(slots=True)
class SourceCheck:
    """What plan learnt from the source with a few cheap calls: whether it answers, and its counts."""

    system: str
    problems: list[str] = field(default_factory=list)
    # Records a next run would read per stream (the source's counts from each stream's saved state).
    estimates: dict[str, int | None] = field(default_factory=dict)
    # Sampled records per stream, and the canonical records they yielded per entity (for the estimates).
    sampled: dict[str, int] = field(default_factory=dict)
    yields: dict[str, dict[str, int]] = field(default_factory=dict)
    api_calls: int = 0

    def per_entity(self, entity: str) -> int | None:
        """Canonical ``entity`` records a next run would read: each stream's estimate times what a sampled
        record of it yields. None when a stream that yields it could not be counted."""
        total = 0.0
        for stream, yielded in self.yields.items():
            n, sampled = self.estimates.get(stream), self.sampled.get(stream, 0)
            if not yielded.get(entity) or not sampled:
                continue
            if n is None:
                return None
            total += n * yielded[entity] / sampled
        return round(total)


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
    source: SourceCheck | None = None
    # Entities the source's streams yield that a run will not read whole, as no object maps them
    # (``SelectsEntities``; Shopify over GraphQL: ``refund`` when no object maps refunds).
    skipped_entities: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        found = list(self.source.problems) if self.source else []
        return found + [p for o in self.objects for p in o.problems]

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
            "source": asdict(self.source) if self.source else None,
            "skipped_entities": self.skipped_entities,
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
    """Check the mapping against the target's describe, the source's credentials and counts, and records
    (staged ones and a sample read from the source) against the mapping. Reads only: nothing is written.

    Credentials the target refuses are one error (raised, not one per object); a source that does not
    answer is one problem of the report."""
    # Plan's describes and queries spend the org's budget too: they count against the pipeline's share.
    async with open_sink(spec.target, SinkContext(spec.name, ledger=store)) as sink:
        schemas, missing = await _describe(sink, spec)
        constants, query_problems = await _resolve_queries(sink, spec.objects)
        plans = build_plans([m for m in spec.objects if m.name in schemas], schemas, constants, sink.dialect)
        async with open_source(spec.source) as source:
            skipped = select_for_pipeline(source, spec.objects)  # as a run will: ``plan_read`` shows that read
            checked, samples = await _check_source(source, store, spec)
            reports = []
            for m in spec.objects:
                if m.name in missing:
                    reports.append(_missing_object(m, missing[m.name]))
                    continue
                to_read = checked.per_entity(m.from_) if not checked.problems else None
                reports.append(
                    _object_report(m, schemas, constants, query_problems, store, spec.name, sink, to_read)
                )
            order = [p.name for p in order_plans(plans)]
            _staged_findings(source, plans, reports, store, spec)
            source_reads = await _source_reads(source, store, spec.name)
            _sampled_findings(source, plans, reports, samples)
            checked.api_calls = source.api_calls
        budget = getattr(spec.target, "api_budget", None)  # a target without a pipeline API budget (QuickBooks)
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
            checked,
            skipped,
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


async def _describe(sink: Sink, spec: PipelineSpec) -> tuple[dict[str, ObjectSchema], dict[str, str]]:
    """Each object's describe, and why an object has none. Refused credentials or a target that does not
    answer raise: every object would fail the same way, and the user needs to read it once."""
    schemas: dict[str, ObjectSchema] = {}
    missing: dict[str, str] = {}
    try:  # one call for all; an object that fails is asked again below
        queries = sorted({q for m in spec.objects for q in query_constants(m)})
        await sink.describe([m.name for m in spec.objects], queries)  # constants may ride along
    except (AuthError, TransientError):
        raise
    except PermanentError:
        pass
    for m in spec.objects:
        try:
            schemas[m.name] = (await sink.describe([m.name]))[m.name]
        except AuthError:
            raise
        except PermanentError as exc:
            missing[m.name] = str(exc)
    return schemas, missing


async def _check_source(
    source: Source, store: Store, spec: PipelineSpec
) -> tuple[SourceCheck, dict[str, list[dict[str, Any]]]]:
    """Probe each stream (a few records, one call) and count what a next run would read from its saved
    state. The first failure is the one problem reported: the next calls would fail alike."""
    checked = SourceCheck(source.system)
    samples: dict[str, list[dict[str, Any]]] = {}
    for stream in source.streams:
        try:
            samples[stream] = await source.probe(stream, PROBE_RECORDS)
            checked.estimates[stream] = await source.estimate(stream, store.read_state(spec.name, stream))
        except (FerryError, OSError) as exc:
            checked.problems.append(f"source {source.system}: {stream}: {exc}")
            return checked, samples
        checked.sampled[stream] = len(samples[stream])
        yielded: Counter[str] = Counter()
        for raw in samples[stream]:
            yielded.update(entity for entity, _ in source.normalize(stream, raw))
        checked.yields[stream] = dict(yielded)
    return checked, samples


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
    to_read: int | None,
) -> ObjectReport:
    schema = schemas[m.name]
    [plan] = build_plans([m], schemas, constants, sink.dialect)
    pending = store.outbox_count(pipeline, m.name)
    choice = choose_write(sink.write_costs(m.name, pending + (to_read or 0)), remaining_calls=sink.budget_left())
    report = ObjectReport(
        m.name, m.from_, m.external_id, pending, str(choice.strategy), choice.reason,
        estimated_calls=choice.estimated_calls, to_read=to_read,
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
        report.problems += _text_type_problems(m, name, expr, fs.type if fs else None)
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
PROBE_RECORDS = 50  # records of each stream plan reads from the source (one call each)
# A sampled failure is a problem (the mapping is wrong) rather than a note when it hits at least this many
# records and every sampled record of the object.
_ALL_SAMPLED_MIN = 3


def _staged_findings(
    source: Source, plans: list[ObjectPlan], reports: list[ObjectReport], store: Store, spec: PipelineSpec
) -> None:
    """Records already read but not yet loaded, mapped and validated dry: how many would be dead-lettered, why."""
    by_name = {r.name: r for r in reports}
    found = _Findings(plans)
    seen = 0
    for chunk in store.staged(spec.name, source.streams, chunk=2000):
        for staged in chunk:
            found.judge(source, staged.stream, orjson.loads(staged.payload))
        seen += len(chunk)
        if seen >= STAGED_SAMPLE:
            break
    for name, failures in found.failures.items():
        for (fields, code), n in failures.most_common():
            by_name[name].notes.append(
                f"{name}.{fields}: {n:,} staged record(s) would be dead-lettered ({code})"
                + ("; on_too_long: truncate cuts them instead" if code == "STRING_TOO_LONG" else "")
            )


def _sampled_findings(
    source: Source, plans: list[ObjectPlan], reports: list[ObjectReport], samples: dict[str, list[dict[str, Any]]]
) -> None:
    """Records read from the source by ``probe``, mapped and validated dry: a field every sampled record
    fails on is a problem (a type mismatch such as text into a number field), one some fail on a note."""
    by_name = {r.name: r for r in reports}
    found = _Findings(plans)
    for stream, records in samples.items():
        for raw in records:
            found.judge(source, stream, raw)
    for name, failures in found.failures.items():
        total = found.judged[name]
        for (fields, code), n in failures.most_common():
            text = f"{name}.{fields}: {n:,} of {total:,} records sampled from the source would be dead-lettered ({code}"
            text += f": {found.example[name][(fields, code)]})"
            if n == total and n >= _ALL_SAMPLED_MIN and code not in _NOT_THE_MAPPING:
                if not any(p.startswith(f"{name}.{fields}: ") for p in by_name[name].problems):
                    by_name[name].problems.append(text)  # once per field: a static check may have said it
            else:
                by_name[name].notes.append(text)


# Codes that say something of the record rather than the mapping (one parent failing, say).
_NOT_THE_MAPPING = frozenset({"PARENT_DEAD_LETTERED"})


class _Findings:
    """Validation failures of records mapped dry, per object and (fields, code)."""

    def __init__(self, plans: list[ObjectPlan]) -> None:
        self.plans = plans
        self.failures: dict[str, Counter[tuple[str, str]]] = {p.name: Counter() for p in plans}
        self.judged: Counter[str] = Counter()
        self.example: dict[str, dict[tuple[str, str], str]] = {p.name: {} for p in plans}

    def judge(self, source: Source, stream: str, raw: dict[str, Any]) -> None:
        for entity, record in source.normalize(stream, raw):
            for plan in self.plans:
                if plan.entity != entity:
                    continue
                self.judged[plan.name] += 1
                _, errors = plan.map_and_validate(record)
                for e in errors:
                    key = (",".join(e.fields) or "-", e.code)
                    self.failures[plan.name][key] += 1
                    self.example[plan.name].setdefault(key, e.message)


_DATE_SUFFIXES = ("_at", "_on")
# Target types a text value converts to only when it happens to hold a number, a date or a boolean.
_NOT_TEXT = {
    **dict.fromkeys(("double", "currency", "percent", "int", "long"), "a number"),
    "date": "a date",
    "datetime": "a date and time",
    "boolean": "true or false",
}


def _text_type_problems(m: ObjectMapping, name: str, expr: FieldExpr, target_type: str | None) -> list[str]:
    """A field mapped from text that can never convert to the number, date or boolean field it goes to: the run's
    validation would dead-letter every record (INVALID_TYPE_ON_FIELD_IN_RECORD), so `ferry plan` says so and
    `ferry run` stops before writing. Text is free text (``customer.note`` into ``AnnualRevenue``) or a template
    whose own characters no such value holds (``n{key}`` into ``NumberOfEmployees``)."""
    if target_type not in _NOT_TEXT:
        return []
    why = _always_text(m, expr, target_type)
    if why is None:
        return []
    return [
        f"{m.name}.{name}: {why}, but {name} is {_a(target_type)} field that takes {_NOT_TEXT[target_type]}; "
        "map a field of that type, or transform it"
    ]


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


# Transforms that keep text text (``date`` turns a timestamp into a date: its result may fit).
_TEXT_TRANSFORMS = frozenset({"lower", "upper", "strip"})
# Characters a number's text can hold (``float``/``int`` as the validator converts: "1,200.50", "-3e2", "1_000").
_NUMBER_CHARS = frozenset("0123456789+-.eE_, \t")


def _always_text(m: ObjectMapping, expr: FieldExpr, target_type: str) -> str | None:
    """Why ``expr`` always yields text the target type cannot take, or None when some values may fit."""
    if isinstance(expr, _HAS_LENGTH_OPTION) and not set(expr.transform) <= _TEXT_TRANSFORMS:
        return None
    if isinstance(expr, PathExpr):
        record_type = ENTITY_TYPES.get(m.from_)
        if record_type is None or not is_text_path(record_type, expr.path):
            return None
        leaf = expr.path.rsplit(".", 1)[-1]
        if leaf.endswith(_DATE_SUFFIXES) and target_type in ("date", "datetime"):
            return None  # the source's timestamps and dates (created_at, processed_on) are ISO 8601 text
        return f"{m.from_}.{expr.path} is text"
    if isinstance(expr, TemplateExpr):
        foreign = _foreign_character(expr.template, target_type)
        if foreign is None:
            return None
        return f"the template {expr.template!r} is text ({foreign!r} is in every value)"
    if isinstance(expr, CoalesceExpr):
        reasons = [_always_text(m, alt, target_type) for alt in expr.coalesce]
        if any(r is None for r in reasons):
            return None
        return f"every value of the coalesce is text ({'; '.join(r for r in reasons if r)})"
    return None


def _foreign_character(template: str, target_type: str) -> str | None:
    """A character of the template's own text that no value of ``target_type`` can hold (None: none such).
    A number's text holds digits, signs, a point, an exponent and separators; a date's starts with a digit."""
    try:
        literals = [text for text, _, _, _ in string.Formatter().parse(template)]
    except ValueError:
        return None  # a bad template is reported when the mapping is loaded
    if target_type in ("date", "datetime"):
        head = literals[0].lstrip() if literals else ""
        return head[0] if head and not head[0].isdigit() else None
    if _NOT_TEXT[target_type] == "a number":
        return next((c for text in literals for c in text if c not in _NUMBER_CHARS), None)
    return None


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
