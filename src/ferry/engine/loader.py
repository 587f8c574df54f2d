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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from ferry.connectors.salesforce.collections import missing_key_result
from ferry.connectors.salesforce.csvio import key_text
from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.salesforce.strategy import Strategy
from ferry.core.records import MappedRecord
from ferry.core.results import JobSucceeded, RecordResult
from ferry.engine.plan import ObjectPlan
from ferry.engine.stats import RunStats
from ferry.errors import AuthError, ConfigError, PermanentError, RecordError
from ferry.store import FailedAttempt, JournalEntry, NewDeadLetter, OutboxRow, Store, Written, utc_now

log = structlog.get_logger("ferry.engine.loader")

# REST: one read of the outbox per this many rows; enough for the sink's concurrency cap (10 Composite calls
# of 1,000 records in flight by default) while holding at most this many payloads in memory.
_SEND_CHUNK = 10_000
# Bulk: outbox rows read, journaled and handed to the streamed CSV upload at a time.
_BULK_PAGE = 10_000


def _no_advance(n: int) -> None:
    pass


def _locked(result: RecordResult) -> bool:
    return not result.success and any(e.code == "UNABLE_TO_LOCK_ROW" for e in result.errors)


@dataclass(slots=True)
class _BulkStream:
    """One object's streamed Bulk upsert: the jobs it has created, and the journal entries not yet saved.

    The sink reads the first page before it creates the job, so that page waits here for ``on_bulk_job``.
    A stream past 100 MB of CSV continues in a next job; the page read last may have rows in both, so a
    new job is journaled with it too (a resumed job reports a record it did not carry as not processed,
    a transient answer: the record is sent again, never lost).
    """

    jobs: list[str] = field(default_factory=list)
    pending: list[JournalEntry] = field(default_factory=list)
    last_page: list[JournalEntry] = field(default_factory=list)
    no_key: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # keys answered UNABLE_TO_LOCK_ROW
    # External ids a failure was reported for: a JobSucceeded covers the job's other rows only (the sink sends
    # one only while failures are few, so this stays small).
    failed: set[str] = field(default_factory=set)

    def job_created(self, job_id: str) -> list[JournalEntry]:
        entries = self.pending if not self.jobs else [*self.last_page, *self.pending]
        self.jobs.append(job_id)
        self.pending = []
        return entries

    def page_read(self, entries: list[JournalEntry]) -> str | None:
        """The job the page must be journaled to now, or None if it waits for the job to exist."""
        self.last_page = entries
        if not self.jobs:
            self.pending.extend(entries)
            return None
        return self.jobs[-1]


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
        self._streams: dict[str, _BulkStream] = {}  # the streamed Bulk upsert in flight, per object
        self.resumed_jobs: list[str] = []

    def on_bulk_job(self, job_id: str, sobject: str) -> None:
        """The sink's callback: runs right after the job is created, before its data is uploaded."""
        stream = self._streams.get(sobject)
        entries = stream.job_created(job_id) if stream is not None else []
        self.store.save_remote_job(self.pipeline, sobject, job_id, entries)
        log.info("bulk.job_saved", job_id=job_id, object=sobject, records=len(entries))

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
        last = self.budget.max_attempts
        for attempt in range(1, last + 1):
            # Every round sends whatever is still in the outbox; a record's own attempt count (kept across
            # crashes) decides when a transient failure is final.
            strategy = choice.strategy if attempt == 1 else Strategy.COLLECTIONS
            advance = progress.advance if attempt == 1 else _no_advance
            if strategy is Strategy.BULK:
                retried = await self._send_bulk(sink, plan, advance)
            else:
                retried = await self._send_rest(sink, plan, strategy, advance)
            if not retried:
                break
            s.retried += retried
            await asyncio.sleep(self.budget.pause(attempt))
        s.api_calls = sink.api_calls.get(plan.name, 0)

    async def _send_rest(
        self, sink: SalesforceSink, plan: ObjectPlan, strategy: Strategy, advance: Callable[[int], None]
    ) -> int:
        retried = 0
        for rows in self.store.outbox(self.pipeline, plan.name, chunk=_SEND_CHUNK, with_source=False):
            results = await sink.upsert(
                plan.name, plan.external_id, [r.payload for r in rows], strategy, label=plan.name
            )
            retried += self.reconcile(plan, rows, results, jobs=[])
            advance(len(rows))
        return retried

    async def _send_bulk(self, sink: SalesforceSink, plan: ObjectPlan, advance: Callable[[int], None]) -> int:
        """The whole outbox of the object in one streamed Bulk job, read and journaled page by page.

        Results come back out of input order, keyed by external id: each batch is matched to its records
        through the job's journal (bulk_job_records) and recorded in one transaction. Memory stays flat:
        at most a page of rows and a batch of results are held at once.
        """
        stream = _BulkStream()
        self._streams[plan.name] = stream
        retried = 0
        try:
            pages = self._bulk_pages(plan, stream, advance)
            columns = list(plan.mapping.keys) or None
            async for answer in sink.upsert_stream(
                plan.name, plan.external_id, pages, label=plan.name, columns=columns
            ):
                if isinstance(answer, JobSucceeded):
                    self._record_job_succeeded(plan, stream, answer)
                    continue
                stream.failed.update(r.key for r in answer if not r.success)
                retried += self._reconcile_keyed(plan, stream, answer)
        finally:
            self._streams.pop(plan.name, None)
        retried += await self._retry_locked(sink, plan, stream.locked)
        if stream.no_key:
            rows = self.store.outbox_rows(self.pipeline, plan.name, stream.no_key, with_source=False)
            missing = [missing_key_result(r.payload, plan.external_id) for r in rows]
            retried += self.reconcile(plan, rows, [m for m in missing if m is not None], jobs=[])
        # Every result of the job(s) is recorded: nothing left to resume.
        self.store.record_results(self.pipeline, plan.name, self.run_id, [], [], [], stream.jobs)
        return retried

    def _bulk_pages(
        self, plan: ObjectPlan, stream: _BulkStream, advance: Callable[[int], None]
    ) -> Iterator[list[MappedRecord]]:
        for rows in self.store.outbox(self.pipeline, plan.name, chunk=_BULK_PAGE, with_source=False):
            entries: list[JournalEntry] = []
            payloads: list[MappedRecord] = []
            for r in rows:
                ext = key_text(r.payload.get(plan.external_id))
                if not ext:  # never sent: answered MISSING_EXTERNAL_ID once the stream is done
                    stream.no_key.append(r.key)
                    continue
                entries.append(JournalEntry(r.key, r.version, ext))
                payloads.append(r.payload)
            job = stream.page_read(entries)
            if job is not None:
                # Journaled before the sink encodes and uploads the page (it asks for a page only then).
                self.store.add_remote_job_records(self.pipeline, plan.name, job, entries)
            advance(len(rows))
            yield payloads

    def _record_job_succeeded(self, plan: ObjectPlan, stream: _BulkStream, answer: JobSucceeded) -> None:
        """Record as written every row journaled to the job that no failure was reported for (the job's counts
        proved them successes; see bulk.counts_prove_success). Nothing of them is read back: the store does it
        in SQL, page by page through the journal."""
        marked = self.store.record_job_written(self.pipeline, plan.name, answer.job_id, stream.failed)
        s = self.stats.object(plan.name)
        s.written += marked
        self.on_progress()
        if marked != answer.rows:
            # Rows recorded already (a repeated page) or duplicates of one external id: worth a look, harmless.
            log.warning("bulk.success_count_differs", object=plan.name, job_id=answer.job_id,
                        job_says=answer.rows, recorded=marked)

    async def _retry_locked(self, sink: SalesforceSink, plan: ObjectPlan, keys: Sequence[str]) -> int:
        """Rows the Bulk job found locked go again at once through Collections, whose own lock retry sends
        what is still locked in smaller, serial batches; only then does a failure count as an attempt."""
        retried = 0
        for start in range(0, len(keys), _SEND_CHUNK):
            rows = self.store.outbox_rows(
                self.pipeline, plan.name, keys[start : start + _SEND_CHUNK], with_source=False
            )
            if rows:
                log.info("bulk.lock_retry", object=plan.name, records=len(rows))
                payloads = [r.payload for r in rows]
                results = await sink.upsert(
                    plan.name, plan.external_id, payloads, Strategy.COLLECTIONS, label=plan.name
                )
                retried += self.reconcile(plan, rows, results, jobs=[])
        return retried

    def _reconcile_keyed(self, plan: ObjectPlan, stream: _BulkStream, results: Sequence[RecordResult]) -> int:
        """Record a batch of streamed results, matched to (key, version) by external id through the journal."""
        exts = list({r.key for r in results})
        sent: dict[str, dict[str, str]] = {}
        for e in self.store.remote_job_entries(self.pipeline, plan.name, stream.jobs, exts):
            sent.setdefault(e.external_key, {})[e.key] = e.version
        matched: list[tuple[str, str, RecordResult]] = []
        for res in results:
            candidates = sent.get(res.key)
            if not candidates:
                # Not a record of this job (cannot happen with a well-behaved target): it stays queued.
                log.warning("bulk.result_unmatched", object=plan.name, external_id=res.key)
                continue
            key = next(iter(candidates))  # duplicates of one external id take their results in turn
            matched.append((key, candidates.pop(key), res))
        queued = {
            r.key: r
            for r in self.store.outbox_rows(self.pipeline, plan.name, [k for k, _, _ in matched], with_source=False)
        }
        rows: list[OutboxRow] = []
        answers: list[RecordResult] = []
        for key, version, res in matched:
            row = queued.get(key)
            if row is None:  # already recorded (a repeated result row)
                continue
            if _locked(res):  # left in the outbox for _retry_locked once the stream is done
                stream.locked.append(key)
                continue
            rows.append(replace(row, version=version))
            answers.append(res)
        return self.reconcile(plan, rows, answers, jobs=[])

    async def _resume_jobs(self, sink: SalesforceSink, plan: ObjectPlan) -> None:
        for job in self.store.remote_jobs(self.pipeline, plan.name):
            versions = dict(job.entries)
            rows = self.store.outbox_rows(self.pipeline, plan.name, list(versions), with_source=False)
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
                self.store.forget_remote_job(self.pipeline, plan.name, job.job_id)
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
        written: list[Written] = []
        letters: list[NewDeadLetter] = []
        done: list[tuple[str, str]] = []
        retry: list[FailedAttempt] = []
        # Rows are read without their source payload (the send path stays lean): fetch it for dead letters only.
        failed = [
            row.key for row, res in zip(rows, results, strict=True) if not res.success and row.source_payload is None
        ]
        sources = self.store.source_payloads(self.pipeline, plan.name, failed) if failed else {}
        for row, res in zip(rows, results, strict=True):
            if res.success:
                written.append(Written(row.key, row.version, res.id))
                done.append((row.key, row.version))
                if res.created:
                    s.created += 1
                elif res.created is not None:  # None: the target did not say (a Bulk job answered by its counts)
                    s.updated += 1
                continue
            errors: list[dict[str, Any]] = [e.as_dict() for e in res.errors] or [
                {"code": "UNKNOWN", "message": "target reported failure without a reason", "fields": []}
            ]
            if res.transient and row.attempts + 1 < self.budget.max_attempts:
                retry.append(FailedAttempt(row.key, errors))
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
                    row.source_payload if row.source_payload is not None else sources.get(row.key),
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
