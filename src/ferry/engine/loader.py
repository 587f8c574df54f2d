"""Load one object's outbox into the target, crash-safe, with a per-record retry budget.

Durability points:
* A Bulk job's id and the (key, version) of every record it carries are stored the moment the job
  exists, before any data is uploaded (``on_bulk_job``). A restarted run resumes such a job first:
  one that never got its data is aborted and its records sent again; one that did is waited for and
  its results collected, so its records are never uploaded a second time.
* The target's answers for a batch (version map, dead letters, retry counts, outbox removal, and the
  finished Bulk job) are recorded in one transaction. A crash before it means the batch is sent again:
  every write is an upsert by external id, so that changes nothing in effect.
* Each record has ``max_attempts`` tries across runs (the count is stored with it). A transient error
  past the cap dead-letters the record with every attempt's errors; the run goes on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.types import RecordResult, Strategy
from ferry.engine.plan import ObjectPlan
from ferry.engine.stats import RunStats
from ferry.errors import AuthError, ConfigError, PermanentError, RecordError
from ferry.store import NewDeadLetter, OutboxRow, Store, utc_now

log = structlog.get_logger("ferry.engine.loader")

_SEND_CHUNK = 2000


class LoadProgress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryBudget:
    max_attempts: int = 4
    backoff_max_seconds: float = 8.0

    def pause(self, attempt: int) -> float:
        # Full jitter: spread retries so contended rows (UNABLE_TO_LOCK_ROW) do not collide again.
        return random.uniform(0, min(self.backoff_max_seconds, 0.5 * 2**attempt))


class Loader:
    def __init__(
        self,
        store: Store,
        pipeline: str,
        run_id: int,
        stats: RunStats,
        budget: RetryBudget,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.run_id = run_id
        self.stats = stats
        self.budget = budget
        self.on_progress = on_progress
        # What the Bulk upsert in flight carries, per object: saved with the job id once the job exists.
        self._in_flight: dict[str, list[tuple[str, str]]] = {}
        self._created: dict[str, list[str]] = {}  # jobs the upsert in flight has created, per object
        self.resumed_jobs: list[str] = []

    def on_bulk_job(self, job_id: str, sobject: str) -> None:
        """The sink's callback: runs right after the job is created, before its data is uploaded."""
        self.store.save_bulk_job(self.pipeline, sobject, job_id, self._in_flight.get(sobject, []))
        self._created.setdefault(sobject, []).append(job_id)
        log.info("bulk.job_saved", job_id=job_id, object=sobject, records=len(self._in_flight.get(sobject, [])))

    async def load(self, sink: SalesforceSink, plan: ObjectPlan, progress: LoadProgress) -> None:
        s = self.stats.object(plan.name)
        await self._resume_jobs(sink, plan)
        total = self.store.outbox_count(self.pipeline, plan.name)
        choice = sink.choose_strategy(plan.name, total)
        s.strategy, s.reason = choice.strategy.value, choice.reason
        if total == 0:
            s.strategy, s.reason = (
                ("bulk", "resumed the Bulk job a crashed run left") if s.written else ("-", "nothing to write")
            )
            s.api_calls = sink.api_calls.get(plan.name, 0)
            return
        progress.phase(f"write {plan.name} ({choice.strategy.value})", total)
        log.info("load.start", object=plan.name, records=total, strategy=choice.strategy.value, reason=choice.reason)
        chunk = total if choice.strategy is Strategy.BULK else _SEND_CHUNK
        last = self.budget.max_attempts
        for attempt in range(1, last + 1):
            # Every round sends whatever is still in the outbox; a record's own attempt count (kept across
            # crashes) decides when a transient failure is final.
            retried = 0
            for rows in self.store.outbox(self.pipeline, plan.name, chunk=chunk):
                strategy = choice.strategy if attempt == 1 else Strategy.COLLECTIONS
                if strategy is Strategy.BULK:
                    self._in_flight[plan.name] = [(r.key, r.version) for r in rows]
                try:
                    results = await sink.upsert(
                        plan.name, plan.external_id, [r.payload for r in rows], strategy, label=plan.name
                    )
                finally:
                    self._in_flight.pop(plan.name, None)
                retried += self.reconcile(plan, rows, results, jobs=self._created.pop(plan.name, []))
                if attempt == 1:
                    progress.advance(len(rows))
            if not retried:
                break
            s.retried += retried
            await asyncio.sleep(self.budget.pause(attempt))
        s.api_calls = sink.api_calls.get(plan.name, 0)

    async def _resume_jobs(self, sink: SalesforceSink, plan: ObjectPlan) -> None:
        for job in self.store.bulk_jobs(self.pipeline, plan.name):
            versions = dict(job.entries)
            rows = self.store.outbox_rows(self.pipeline, plan.name, list(versions))
            log.info("bulk.job_resume", job_id=job.job_id, object=plan.name, records=len(rows))
            try:
                results = (
                    await sink.resume_bulk_job(job.job_id, plan.external_id, [r.payload for r in rows], label=plan.name)
                    if rows
                    else []
                )
            except (AuthError, ConfigError):
                raise
            except PermanentError as exc:
                # The org no longer knows the job (Salesforce deletes jobs after 7 days): its records go out
                # again below, by upsert, which is harmless whatever the job did.
                log.warning("bulk.job_unknown", job_id=job.job_id, object=plan.name, error=str(exc))
                results = None
            if results is None:  # the job never got its data: it was aborted, its records go out again below
                self.store.forget_bulk_job(self.pipeline, plan.name, job.job_id)
                continue
            self.resumed_jobs.append(job.job_id)
            # Results are for the versions the job carried, even if a newer one has been queued since.
            sent = [replace(r, version=versions[r.key]) for r in rows]
            self.reconcile(plan, sent, results, jobs=[job.job_id])

    def reconcile(
        self, plan: ObjectPlan, rows: Sequence[OutboxRow], results: Sequence[RecordResult], *, jobs: Sequence[str]
    ) -> int:
        """Record the target's answer for each row in one transaction; returns how many will be retried."""
        if len(results) != len(rows):
            raise RuntimeError(f"{plan.name}: target answered {len(results)} results for {len(rows)} records")
        s = self.stats.object(plan.name)
        written: list[tuple[str, str, str | None]] = []
        letters: list[NewDeadLetter] = []
        done: list[tuple[str, str]] = []
        retry: list[tuple[str, list[dict[str, Any]]]] = []
        for row, res in zip(rows, results, strict=True):
            if res.success:
                written.append((row.key, row.version, res.id))
                done.append((row.key, row.version))
                if res.created:
                    s.created += 1
                else:
                    s.updated += 1
                continue
            errors: list[dict[str, Any]] = [e.as_dict() for e in res.errors] or [
                {"code": "UNKNOWN", "message": "target reported failure without a reason", "fields": []}
            ]
            if res.transient and row.attempts + 1 < self.budget.max_attempts:
                retry.append((row.key, errors))
                continue
            history = [*row.history, {"attempt": row.attempts + 1, "at": utc_now(), "errors": errors}]
            if res.transient:
                errors = [
                    RecordError(
                        "RETRIES_EXHAUSTED",
                        f"{plan.name} {row.key}: gave up after {len(history)} attempts; last error "
                        f"{errors[0].get('code')}: {errors[0].get('message')}",
                        sorted({f for e in errors for f in e.get("fields", [])}),
                    ).as_dict(),
                    *errors,
                ]
            letters.append(
                NewDeadLetter(
                    plan.name,
                    row.key,
                    row.version,
                    errors,
                    row.source_payload,
                    row.payload,
                    row.stream,
                    row.source_key,
                    history if res.transient else [],
                )
            )
            done.append((row.key, row.version))
        self.store.record_results(self.pipeline, plan.name, self.run_id, written, letters, done, jobs, retry)
        s.written += len(written)
        s.dead_lettered += len(letters)
        self.on_progress()
        return len(retry)
