"""One run of a pipeline: extract -> stage -> normalize -> map -> validate -> plan -> load -> reconcile.

Durability points, in order:
1. each source page is staged in SQLite before anything else happens to it;
2. a stream's cursor moves only after every page it covers is staged;
3. each mapped record goes to the outbox (or, if invalid, the dead-letter queue)
   in the same transaction pattern, so a crash leaves it in exactly one place;
4. a record leaves the outbox only once the target's answer for it is recorded
   (version map and id map on success, dead-letter queue on a permanent error).
A run that dies anywhere is finished by the next run: staged records are
planned again (the version map skips what already landed) and the outbox is
sent again (upserts by external id make that harmless).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.shopify.source import ShopifySource
from ferry.connectors.types import ObjectSchema, RecordResult, Strategy
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan, build_plans, order_plans
from ferry.engine.stats import RunStats
from ferry.errors import BudgetExhausted, RecordError
from ferry.model.normalize import shopify as shopify_normalize
from ferry.store import NewDeadLetter, OutboxRow, Store

log = structlog.get_logger("ferry.engine")

MAX_ATTEMPTS = 4
_PLAN_CHUNK = 2000
_SEND_CHUNK = 2000


class Progress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


class _NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass(slots=True)
class _Routed:
    plan: ObjectPlan
    rows: list[tuple[str, str, dict[str, Any], bytes | None]]
    letters: list[NewDeadLetter]


class Runner:
    def __init__(self, spec: PipelineSpec, store: Store, progress: Progress | None = None) -> None:
        self.spec = spec
        self.store = store
        self.progress: Progress = progress or _NoProgress()
        self.pipeline = spec.name

    async def run(self) -> RunStats:
        started = time.monotonic()
        run_id = self.store.start_run(self.pipeline)
        stats = RunStats(run_id=run_id, pipeline=self.pipeline)
        log.info("run.start", pipeline=self.pipeline, run_id=run_id)
        try:
            async with ShopifySource(self.spec.source) as source, SalesforceSink(self.spec.target) as sink:
                await self._extract(source, run_id, stats)
                plans = await self._prepare(sink, stats)
                last_seq = self.store.max_staged_seq(self.pipeline)
                self._plan_records(plans, run_id, stats)
                for plan in order_plans(plans):
                    await self._load(sink, plan, run_id, stats)
                # Every staged record has now reached the outbox or the DLQ, and the outbox is drained.
                self.store.clear_staging(self.pipeline, last_seq)
                stats.source_api_calls = source.api_calls
                stats.setup_api_calls = sum(v for k, v in sink.api_calls.items() if k not in stats.objects)
            stats.status = "succeeded"
        except BudgetExhausted as exc:
            stats.status = "paused"
            stats.error = f"API budget exhausted: {exc}"
        except Exception as exc:
            stats.status = "failed"
            stats.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            stats.seconds = time.monotonic() - started
            self.store.finish_run(run_id, stats.status, stats.as_dict(), stats.error)
            log.info("run.end", pipeline=self.pipeline, run_id=run_id, status=stats.status, seconds=stats.seconds)
        return stats

    # -- extract ----------------------------------------------------------------

    async def _extract(self, source: ShopifySource, run_id: int, stats: RunStats) -> None:
        for stream in self.spec.source.streams:
            cursor = self.store.get_cursor(self.pipeline, stream)
            self.progress.phase(f"read {stream}", None)
            newest = cursor
            count = 0
            async for page in source.read(stream, updated_at_min=cursor, updated_at_max=None):
                rows = []
                for raw in page:
                    key = shopify_normalize.record_key(stream, raw)
                    version = shopify_normalize.record_version(stream, raw)
                    rows.append((key, version, orjson.dumps(raw)))
                    if newest is None or version > newest:
                        newest = version
                self.store.stage(self.pipeline, stream, run_id, rows)
                count += len(rows)
                self.progress.advance(len(rows))
            stats.source_records[stream] = count
            # Inclusive lower bound next time: records sharing the newest timestamp are read again
            # (and skipped by the version map) rather than risked.
            if newest is not None and newest != cursor:
                self.store.advance_cursor(self.pipeline, stream, newest)

    # -- prepare ----------------------------------------------------------------

    async def _prepare(self, sink: SalesforceSink, stats: RunStats) -> list[ObjectPlan]:
        schemas: dict[str, ObjectSchema] = {}
        for m in self.spec.objects:
            schemas[m.name] = await sink.describe(m.name)
        constants: dict[str, Any] = {}
        for soql in _queries(self.spec):
            rows = await sink.query(soql)
            constants[soql] = _single_value(soql, rows)
        for m in self.spec.objects:
            stats.object(m.name)
        return build_plans(self.spec.objects, schemas, constants)

    # -- plan: staged raw -> canonical -> mapped -> validated -> outbox / DLQ -------

    def _plan_records(self, plans: list[ObjectPlan], run_id: int, stats: RunStats) -> None:
        by_entity: dict[str, list[ObjectPlan]] = {}
        for p in plans:
            by_entity.setdefault(p.entity, []).append(p)
        streams = self.spec.source.streams
        self.progress.phase("map and validate", self.store.staged_count(self.pipeline))
        for chunk in self.store.staged(self.pipeline, streams, chunk=_PLAN_CHUNK):
            routed = {p.name: _Routed(p, [], []) for p in plans}
            for staged in chunk:
                raw = orjson.loads(staged.payload)
                for entity, record in shopify_normalize.normalize(staged.stream, raw):
                    for plan in by_entity.get(entity, ()):
                        _route(plan, record, staged.payload, routed[plan.name])
            for r in routed.values():
                self._commit_routed(r, run_id, stats)
            self.progress.advance(len(chunk))

    def _commit_routed(self, r: _Routed, run_id: int, stats: RunStats) -> None:
        s = stats.object(r.plan.name)
        s.read += len(r.rows) + len(r.letters)
        if r.letters:
            self.store.dead_letter(self.pipeline, run_id, r.letters)
            s.dead_lettered += len(r.letters)
        if not r.rows:
            return
        known = self.store.versions_for(self.pipeline, r.plan.name, [row[0] for row in r.rows])
        fresh = [row for row in r.rows if row[1] > known.get(row[0], "")]
        s.unchanged += len(r.rows) - len(fresh)
        self.store.put_outbox(self.pipeline, r.plan.name, fresh)

    # -- load -------------------------------------------------------------------

    async def _load(self, sink: SalesforceSink, plan: ObjectPlan, run_id: int, stats: RunStats) -> None:
        s = stats.object(plan.name)
        self._drop_orphans(plan, run_id, stats)
        total = self.store.outbox_count(self.pipeline, plan.name)
        choice = sink.choose_strategy(plan.name, total)
        s.strategy, s.reason = choice.strategy.value, choice.reason
        if total == 0:
            s.strategy, s.reason = "-", "nothing to write"
            return
        self.progress.phase(f"write {plan.name} ({choice.strategy.value})", total)
        log.info("load.start", object=plan.name, records=total, strategy=choice.strategy.value, reason=choice.reason)
        chunk = total if choice.strategy is Strategy.BULK else _SEND_CHUNK
        for attempt in range(1, MAX_ATTEMPTS + 1):
            retry: list[OutboxRow] = []
            for rows in self.store.outbox(self.pipeline, plan.name, chunk=chunk):
                pending = [r for r in rows if r.attempts < attempt]
                if not pending:
                    continue
                strategy = choice.strategy if attempt == 1 else Strategy.COLLECTIONS
                results = await sink.upsert(
                    plan.name, plan.external_id, [r.payload for r in pending], strategy, label=plan.name
                )
                retry.extend(self._reconcile(plan, pending, results, run_id, stats, final=attempt == MAX_ATTEMPTS))
                if attempt == 1:
                    self.progress.advance(len(pending))
            if not retry:
                break
            s.retried += len(retry)
            self.store.bump_outbox_attempts(self.pipeline, plan.name, [r.key for r in retry])
            # Full jitter: spread retries so contended rows (UNABLE_TO_LOCK_ROW) do not collide again.
            await asyncio.sleep(random.uniform(0, min(8.0, 0.5 * 2**attempt)))
        s.api_calls = sink.api_calls.get(plan.name, 0)

    def _reconcile(
        self,
        plan: ObjectPlan,
        rows: Sequence[OutboxRow],
        results: Sequence[RecordResult],
        run_id: int,
        stats: RunStats,
        *,
        final: bool,
    ) -> list[OutboxRow]:
        if len(results) != len(rows):
            raise RuntimeError(f"{plan.name}: target answered {len(results)} results for {len(rows)} records")
        s = stats.object(plan.name)
        written: list[tuple[str, str, str | None]] = []
        letters: list[NewDeadLetter] = []
        done: list[tuple[str, str]] = []
        retry: list[OutboxRow] = []
        for row, res in zip(rows, results, strict=True):
            if res.success:
                written.append((row.key, row.version, res.id))
                done.append((row.key, row.version))
                if res.created:
                    s.created += 1
                else:
                    s.updated += 1
            elif res.transient and not final:
                retry.append(row)
            else:
                errors = [e.as_dict() for e in res.errors] or [
                    {"code": "UNKNOWN", "message": "target reported failure without a reason", "fields": []}
                ]
                if res.transient:
                    errors.append(
                        {"code": "RETRIES_EXHAUSTED", "message": f"gave up after {MAX_ATTEMPTS} attempts", "fields": []}
                    )
                letters.append(NewDeadLetter(plan.name, row.key, row.version, errors, row.source_payload, row.payload))
                done.append((row.key, row.version))
        self.store.record_written(self.pipeline, plan.name, written)
        self.store.dead_letter(self.pipeline, run_id, letters)
        self.store.remove_outbox(self.pipeline, plan.name, done)
        s.written += len(written)
        s.dead_lettered += len(letters)
        return retry

    def _drop_orphans(self, plan: ObjectPlan, run_id: int, stats: RunStats) -> None:
        """Dead-letter children whose parent is itself a dead letter: the write could only fail."""
        if not plan.parents:
            return
        dead = {p.object: self.store.dead_letter_keys(self.pipeline, p.object) for p in plan.parents}
        if not any(dead.values()):
            return
        letters: list[NewDeadLetter] = []
        done: list[tuple[str, str]] = []
        for rows in self.store.outbox(self.pipeline, plan.name):
            for row in rows:
                errors = _orphan_errors(plan, row, dead)
                if errors:
                    letters.append(
                        NewDeadLetter(plan.name, row.key, row.version, errors, row.source_payload, row.payload)
                    )
                    done.append((row.key, row.version))
        self.store.dead_letter(self.pipeline, run_id, letters)
        self.store.remove_outbox(self.pipeline, plan.name, done)
        stats.object(plan.name).dead_lettered += len(letters)


def _route(plan: ObjectPlan, record: Any, source_payload: bytes, out: _Routed) -> None:
    key = str(record.key)
    mapped, errors = plan.map_and_validate(record)
    if errors:
        out.letters.append(
            NewDeadLetter(plan.name, key, record.version, [e.as_dict() for e in errors], source_payload, mapped)
        )
    else:
        out.rows.append((key, record.version, mapped, source_payload))


def _orphan_errors(plan: ObjectPlan, row: OutboxRow, dead: dict[str, set[str]]) -> list[dict[str, Any]]:
    errors = []
    for parent in plan.parents:
        value = row.payload.get(parent.payload_key)
        if value is not None and str(value) in dead[parent.object]:
            errors.append(
                RecordError(
                    "PARENT_DEAD_LETTERED",
                    f"{plan.name} {row.key}: parent {parent.object} {value} ({parent.field}) is in the "
                    f"dead-letter queue; fix and replay it, then replay this record",
                    [parent.field],
                ).as_dict()
            )
    return errors


def _queries(spec: PipelineSpec) -> Iterable[str]:
    from ferry.mapping.spec import query_constants

    seen: set[str] = set()
    for m in spec.objects:
        for q in query_constants(m):
            if q not in seen:
                seen.add(q)
                yield q


def _single_value(soql: str, rows: list[dict[str, Any]]) -> Any:
    from ferry.errors import ConfigError

    if len(rows) != 1:
        raise ConfigError(f"mapping query must return exactly one row, got {len(rows)}: {soql}")
    values = [v for k, v in rows[0].items() if k != "attributes"]
    if len(values) != 1:
        raise ConfigError(f"mapping query must select exactly one field: {soql}")
    return values[0]


ProgressFactory = Callable[[], Progress]
