"""Load one object's outbox into the target, crash-safe, with a per-record retry budget.

Durability points:
* A remote job's id and the (key, version) of every record it carries are journaled the moment the job
  exists, before any data is uploaded (the sink's stream tells the ``JobJournal``). A restarted run resumes
  such a job first: one that never got its data is aborted and its records sent again; one that did is
  waited for and its results collected, so its records are never uploaded a second time.
* The target's answers for a batch (version map, dead letters, retry counts, outbox removal, and the
  finished remote job) are recorded in one transaction. A crash before it means the batch is sent again:
  every write is an upsert by the record's key, so that changes nothing in effect.
* Each record has ``max_attempts`` tries across runs (the count is stored with it). A transient error
  past the cap dead-letters the record with every attempt's errors; the run goes on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from ferry.core.contracts import JobPage, Sink, UpsertPart, WritesTogether
from ferry.core.ports import JournalEntry
from ferry.core.records import MappedRecord
from ferry.core.results import JobSucceeded, RecordResult
from ferry.core.writes import StrategyChoice, choose_write, per_record_write
from ferry.engine.combined import CallPart, Group, parent_failed
from ferry.engine.plan import ObjectPlan
from ferry.engine.stats import RunStats
from ferry.engine.together import run_together
from ferry.engine.twoway import payload_digest
from ferry.engine.waves import RowSelector
from ferry.errors import AuthError, ConfigError, PermanentError, RecordError
from ferry.observe import tracing
from ferry.store import FailedAttempt, NewDeadLetter, OutboxRow, Store, Written, utc_now

log = structlog.get_logger("ferry.engine.loader")

# Direct writes: one read of the outbox per this many rows; enough to keep a sink's concurrent calls busy
# (e.g. 10 calls of 1,000 records in flight) while holding at most this many payloads in memory.
_SEND_CHUNK = 10_000
# Latency-sensitive writes (``ferry serve``'s micro-batches): records per call, and calls per object at most
# before the slices grow (see ``Loader._latency_slices``).
LATENCY_SLICE = 100
LATENCY_PARALLEL = 8
# Remote jobs: outbox rows read, journaled and handed to the sink's streamed upload at a time.
_JOB_PAGE = 10_000


def _no_advance(n: int) -> None:
    pass


def _describe_results(span: tracing.Span, results: Sequence[RecordResult]) -> None:
    """A batch's answers on its span: how many succeeded or failed, and the target ids (in the keys' order)."""
    span.set_attribute("ferry.written", sum(1 for r in results if r.success))
    span.set_attribute("ferry.failed", sum(1 for r in results if not r.success))
    tracing.set_keys(span, (r.id or "" for r in results), "ferry.target_ids")


class StoreJobJournal:
    """The ``JobJournal`` a sink's remote-job stream writes to: one object's jobs in the store's journal."""

    def __init__(self, store: Store, pipeline: str, obj: str) -> None:
        self.store = store
        self.pipeline = pipeline
        self.obj = obj
        self.jobs: list[str] = []

    def job_created(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        self.jobs.append(job_id)
        self.store.save_remote_job(self.pipeline, self.obj, job_id, entries)
        log.info("job.saved", job_id=job_id, object=self.obj, records=len(entries))

    def page_sent(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        self.store.add_remote_job_records(self.pipeline, self.obj, job_id, entries)

    def entries(self, external_keys: Sequence[str]) -> list[JournalEntry]:
        """The journaled records of this stream's jobs with these external keys."""
        return self.store.remote_job_entries(self.pipeline, self.obj, self.jobs, list(external_keys))

    def queued(self, external_keys: Sequence[str]) -> list[MappedRecord]:
        keys = list(dict.fromkeys(e.key for e in self.entries(external_keys)))
        return [r.payload for r in self.store.outbox_rows(self.pipeline, self.obj, keys, with_source=False)]


class LoadProgress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryBudget:
    max_attempts: int = 4
    backoff_max_seconds: float = 8.0

    def pause(self, attempt: int) -> float:
        # Full jitter: spread retries so contended rows (a row lock) do not collide again.
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
        *,
        latency_sensitive: bool = False,
        keep_digests: bool = False,
        calls_before: dict[str, int] | None = None,
        linked: Callable[[str, Sequence[str]], Mapping[str, str]] | None = None,
    ) -> None:
        # The sink's call counts when the run began: a sink kept open across runs (``ferry serve``'s micro-batches)
        # counts for its whole life, and each run reports only its own calls.
        self.calls_before = dict(calls_before or {})
        self.keep_digests = keep_digests  # two-way sync: remember a digest of each payload written (echoes)
        # two-way sync: the target id of a record the other direction created from the target (TwoWay.linked)
        self.linked = linked
        self.store = store
        self.pipeline = pipeline
        self.run_id = run_id
        self.stats = stats
        self.budget = budget
        self.on_progress = on_progress
        self.latency_sensitive = latency_sensitive  # events waiting on this write: never a queued remote job
        self.resumed_jobs: list[str] = []
        self.combined: set[str] = set()  # objects whose first write went in combined calls (load_combined)
        # Objects loading at the same time (overlapped batch runs): each one's chosen calls and its calls
        # made before it chose, so a strategy is chosen against the budget the others have not spent yet.
        self._in_flight: dict[str, tuple[int, int]] = {}
        self._resumed: set[str] = set()  # objects whose crashed jobs were looked for in this run
        self._parts: dict[str, int] = {}  # objects loaded in parts: how many loads of each began in this run

    async def load(
        self, sink: Sink, plan: ObjectPlan, progress: LoadProgress, *, select: RowSelector | None = None,
        count: int | None = None,
    ) -> None:
        """The object's outbox to the target; with ``select``, only the rows it picks from each page (a part of
        the object loaded ahead of, or beside, the rest: engine/overlap.py), which may then be none. ``count``:
        how many that is, when the caller has just counted them."""
        resumed = None
        if plan.name not in self._resumed:  # once a run: a later part must not take a job a part is running
            self._resumed.add(plan.name)
            resumed = await self._resume_jobs(sink, plan)
        total = self.count(plan, select) if count is None or resumed is not None else count
        choice = choose_write(sink.write_costs(plan.name, total), remaining_calls=self._budget_left(sink),
                              latency_sensitive=self.latency_sensitive)
        self._parts[plan.name] = self._parts.get(plan.name, 0) + 1
        self._owe(sink, plan.name, choice.estimated_calls)
        try:
            await self._load_chosen(sink, plan, progress, choice, total, resumed, select)
        finally:
            self._owe(sink, plan.name, -choice.estimated_calls)

    def count(self, plan: ObjectPlan, select: RowSelector | None = None) -> int:
        """Rows of the object's outbox (that ``select`` picks)."""
        if select is None:
            return self.store.outbox_count(self.pipeline, plan.name)
        return sum(len(select(rows)) for rows in self.store.outbox(self.pipeline, plan.name, chunk=_SEND_CHUNK,
                                                                   with_source=False))

    def calls_for(self, sink: Sink, obj: str, records: int) -> int:
        """The calls the planner's choice for ``records`` records of ``obj`` is estimated to cost."""
        if records <= 0:
            return 0
        return choose_write(sink.write_costs(obj, records), latency_sensitive=self.latency_sensitive).estimated_calls

    def _owe(self, sink: Sink, obj: str, calls: int) -> None:
        """Add (or, negative, settle) the calls a load of ``obj`` chose; two parts of one object share an entry,
        a finished part taken as having spent what it chose."""
        chosen, before = self._in_flight.get(obj, (0, sink.api_calls.get(obj, 0)))
        if calls < 0:
            before -= calls
        if chosen + calls <= 0 and obj in self._in_flight:
            del self._in_flight[obj]
        elif chosen + calls > 0:
            self._in_flight[obj] = (chosen + calls, before)

    async def load_by_job(self, sink: Sink, plan: ObjectPlan, *, send: bool = True) -> tuple[str | None, int]:
        """A ``ferry worker``'s remote-job load of one object (engine/distjobs.py): the jobs a crashed worker or run
        journaled are collected first (never uploaded again), then (``send``) what is still queued goes out as a
        new journaled job. Returns (the strategy of a resumed job or None, how many records wait for a retry)."""
        resumed = await self._resume_jobs(sink, plan)
        retried = await self._send_job(sink, plan, _no_advance) if send else 0
        return resumed, retried

    def _budget_left(self, sink: Sink) -> int | None:
        """The sink's budget left, less what the objects loading alongside chose and have not spent yet."""
        left = sink.budget_left()
        if left is None:
            return None
        owed = sum(max(0, chosen - (sink.api_calls.get(obj, 0) - before))
                   for obj, (chosen, before) in self._in_flight.items())
        return max(0, left - owed)

    async def _load_chosen(
        self, sink: Sink, plan: ObjectPlan, progress: LoadProgress, choice: StrategyChoice, total: int,
        resumed: str | None, select: RowSelector | None = None,
    ) -> None:
        s = self.stats.object(plan.name)
        later_part = self._parts.get(plan.name, 0) > 1 and s.strategy != "-"
        if plan.name in self.combined or (later_part and total == 0):  # what is left was sent already
            s.api_calls = self._calls(sink, plan.name)
            if total == 0:
                return
        elif later_part:  # one more part of an object: both strategies are reported
            if str(choice.strategy) not in s.strategy.split("+"):
                s.strategy = f"{s.strategy}+{choice.strategy}"
            s.reason = f"{s.reason}; then {choice.reason}"
        else:
            s.strategy, s.reason = str(choice.strategy), choice.reason
        if total == 0:
            s.strategy, s.reason = (resumed, "resumed the remote job a crashed run left") if resumed else (
                "-", "nothing to write"
            )
            s.api_calls = self._calls(sink, plan.name)
            return
        progress.phase(f"write {plan.name} ({choice.strategy})", total)
        log.info("load.start", object=plan.name, records=total, strategy=choice.strategy, reason=choice.reason)
        with tracing.span("ferry.load", {"ferry.object": plan.name, "ferry.records": total,
                                         "ferry.strategy": str(choice.strategy)}):
            await self._load_rounds(sink, plan, progress, choice, select)
        s.api_calls = self._calls(sink, plan.name)

    def _calls(self, sink: Sink, obj: str) -> int:
        """The calls this run made for ``obj``."""
        return sink.api_calls.get(obj, 0) - self.calls_before.get(obj, 0)

    async def _load_rounds(
        self, sink: Sink, plan: ObjectPlan, progress: LoadProgress, choice: StrategyChoice,
        select: RowSelector | None = None,
    ) -> None:
        s = self.stats.object(plan.name)
        last = self.budget.max_attempts
        for attempt in range(1, last + 1):
            # Every round sends whatever is still in the outbox; a record's own attempt count (kept across
            # crashes) decides when a transient failure is final. Retries go record by record, never as a job.
            advance = progress.advance if attempt == 1 else _no_advance
            if attempt == 1 and choice.remote_job:
                retried = await self._send_job(sink, plan, advance, select)
            else:
                strategy = choice.strategy if attempt == 1 else self._retry_strategy(sink, plan, select)
                retried = await self._send_direct(sink, plan, strategy, advance, select)
            if not retried:
                break
            s.retried += retried
            await asyncio.sleep(self.budget.pause(attempt))

    def _retry_strategy(self, sink: Sink, plan: ObjectPlan, select: RowSelector | None = None) -> str:
        return per_record_write(sink.write_costs(plan.name, self.count(plan, select))).strategy

    async def _send_direct(
        self, sink: Sink, plan: ObjectPlan, strategy: str, advance: Callable[[int], None],
        select: RowSelector | None = None,
    ) -> int:
        retried = 0
        for page in self._pages(plan, _SEND_CHUNK, select):
            slices = self._latency_slices(sink, plan, page, strategy) if self.latency_sensitive else [(page, strategy)]
            counts: list[int] = []  # each slice's records left to retry
            await run_together(self._send_rows(sink, plan, rows, how, counts) for rows, how in slices)
            retried += sum(counts)
            advance(len(page))
        return retried

    def _latency_slices(
        self, sink: Sink, plan: ObjectPlan, rows: list[OutboxRow], strategy: str
    ) -> list[tuple[list[OutboxRow], str]]:
        """Events wait on this write: slices sent at the same time instead of one large call. A call's time grows
        with the records it carries (an org saves them one after another: ~4 ms each, so 1,000 records in one
        Composite call take ~4.5 s), while calls in flight together overlap. Slices of ``LATENCY_SLICE`` records,
        larger when there would be more than ``LATENCY_PARALLEL`` of them (a backlog stays a few calls per object);
        each by the strategy chosen for the whole (Composite carries a slice in one subrequest)."""
        size = max(LATENCY_SLICE, -(-len(rows) // LATENCY_PARALLEL))
        return [(rows[start:start + size], strategy) for start in range(0, len(rows), size)]

    async def _send_rows(
        self, sink: Sink, plan: ObjectPlan, rows: Sequence[OutboxRow], strategy: str, retried: list[int]
    ) -> None:
        """One upsert of ``rows`` and its answers recorded; how many will be retried goes on ``retried``."""
        with tracing.span("ferry.write.batch", {"ferry.object": plan.name, "ferry.strategy": strategy,
                                                "ferry.records": len(rows)}) as span:
            tracing.set_keys(span, (r.key for r in rows))
            results = await sink.upsert(
                plan.name, plan.external_id, [r.payload for r in rows], strategy,
                target_ids=self.target_ids(sink, plan.name, rows),
            )
            retried.append(self.reconcile(plan, rows, results, jobs=[]))
            if span.is_recording():
                _describe_results(span, results)

    async def load_combined(
        self, sink: WritesTogether, plans: Sequence[ObjectPlan], groups: Sequence[Group], progress: LoadProgress
    ) -> int:
        """The first write of every object of a micro-batch in combined calls (``engine/combined.py``): groups at
        the same time, each group's calls in turn. Returns how many records wait for a retry; they stay in the
        outbox for ``load`` (object by object, parents first, orphans of dead-lettered parents dropped first)."""
        parts = [part for group in groups for call in group for part in call]
        total = sum(len(part.rows) for part in parts)
        names = [plan.name for plan in plans if any(part.plan.name == plan.name for part in parts)]
        calls = sum(len(group) for group in groups)
        for name in names:
            s = self.stats.object(name)
            s.strategy = "together"
            s.reason = (f"{'+'.join(names)}: {total:,} records in {_plural(calls, 'combined call')} "
                        f"(parents first inside each), {len(groups)} at a time")
        self.combined.update(names)
        progress.phase(f"write {'+'.join(names)} (together)", total)
        log.info("load.combined", objects=names, records=total, calls=calls, groups=len(groups))
        retried: list[int] = []
        with tracing.span("ferry.load", {"ferry.object": "+".join(names), "ferry.records": total,
                                         "ferry.strategy": "together"}):
            await run_together(self._send_group(sink, group, retried, progress.advance) for group in groups)
        return sum(retried)

    async def _send_group(
        self, sink: WritesTogether, group: Group, retried: list[int], advance: Callable[[int], None]
    ) -> None:
        failed: dict[str, set[str]] = {}  # keys failed earlier in this group, by object: their children wait
        for call in group:
            with tracing.span("ferry.write.together", {"ferry.objects": [p.plan.name for p in call],
                                                       "ferry.records": sum(len(p.rows) for p in call)}):
                answers = await sink.upsert_together(
                    [UpsertPart(p.plan.name, p.plan.external_id, [r.payload for r in p.rows]) for p in call]
                )
            for part, results in zip(call, answers, strict=True):
                results = _children_wait(part, results, failed)
                retried.append(self.reconcile(part.plan, part.rows, results, jobs=[]))
                self.stats.object(part.plan.name).retried += retried[-1]
                failed.setdefault(part.plan.name, set()).update(
                    row.key for row, res in zip(part.rows, results, strict=True) if not res.success
                )
                advance(len(part.rows))

    def target_ids(self, sink: Sink, obj: str, rows: Sequence[OutboxRow]) -> list[str | None] | None:
        """The id map's target id of each row, for a sink without an upsert of its own (None for one with)."""
        if sink.capabilities.native_upsert:
            return None
        known = self.store.target_ids(self.pipeline, obj, [r.key for r in rows])
        missing = [r.key for r in rows if r.key not in known]
        if missing and self.linked is not None:
            known.update(self.linked(obj, missing))
        return [known.get(r.key) for r in rows]

    def _pages(self, plan: ObjectPlan, chunk: int, select: RowSelector | None) -> Iterator[list[OutboxRow]]:
        """The object's outbox a page at a time (only what ``select`` picks; no empty page)."""
        for rows in self.store.outbox(self.pipeline, plan.name, chunk=chunk, with_source=False):
            picked = rows if select is None else select(rows)
            if picked:
                yield picked

    async def _send_job(
        self, sink: Sink, plan: ObjectPlan, advance: Callable[[int], None], select: RowSelector | None = None
    ) -> int:
        """The whole outbox of the object through the sink's remote job(s), read and journaled page by page.

        Results come back out of input order, keyed by the record's external key: each batch is matched to
        its records through the jobs' journal and recorded in one transaction. Memory stays flat: at most a
        page of rows and a batch of results are held at once.
        """
        journal = StoreJobJournal(self.store, self.pipeline, plan.name)
        no_key: list[str] = []  # never sent: answered by the sink's missing_key_result once the stream is done
        # External keys a failure was reported for: a JobSucceeded covers the job's other rows only (a sink sends
        # one only while failures are few, so this stays small).
        failed: set[str] = set()
        retried = 0
        pages = self._job_pages(sink, plan, no_key, advance, select)
        columns = list(plan.mapping.keys) or None
        async for answer in sink.upsert_stream(plan.name, plan.external_id, pages, journal, columns=columns):
            if isinstance(answer, JobSucceeded):
                self._record_job_succeeded(plan, answer, failed)
                continue
            failed.update(r.key for r in answer if not r.success)
            retried += self._reconcile_keyed(plan, journal, answer)
        if no_key:
            rows = self.store.outbox_rows(self.pipeline, plan.name, no_key, with_source=False)
            missing = [sink.missing_key_result(r.payload, plan.external_id) for r in rows]
            retried += self.reconcile(plan, rows, [m for m in missing if m is not None], jobs=[])
        # Every result of the job(s) is recorded: nothing left to resume.
        self.store.record_results(self.pipeline, plan.name, self.run_id, [], [], [], journal.jobs)
        return retried

    def _job_pages(
        self, sink: Sink, plan: ObjectPlan, no_key: list[str], advance: Callable[[int], None],
        select: RowSelector | None = None,
    ) -> Iterator[JobPage]:
        for rows in self._pages(plan, _JOB_PAGE, select):
            payloads: list[MappedRecord] = []
            keys: list[tuple[str, str]] = []
            for r in rows:
                if sink.missing_key_result(r.payload, plan.external_id) is not None:
                    no_key.append(r.key)
                    continue
                payloads.append(r.payload)
                keys.append((r.key, r.version))
            advance(len(rows))
            current = tracing.current_span()
            if current.is_recording():  # the job's span (ferry.load): which records each uploaded page carried
                current.add_event("ferry.job.page", {"ferry.record_keys": [k for k, _ in keys[: tracing.MAX_KEYS]]})
            yield JobPage(payloads, keys)

    def _record_job_succeeded(self, plan: ObjectPlan, answer: JobSucceeded, failed: set[str]) -> None:
        """Record as written every row journaled to the job that no failure was reported for (the job's counts
        proved them successes). Nothing of them is read back: the store does it, page by page through the journal."""
        # Read before the rows leave the outbox: what the job wrote, for a two-way pipeline's echo suppression.
        digests = self._job_digests(plan, answer.job_id, failed) if self.keep_digests else {}
        marked = self.store.record_job_written(self.pipeline, plan.name, answer.job_id, failed)
        if digests:
            self.store.save_written_digests(self.pipeline, plan.name, digests)
        s = self.stats.object(plan.name)
        s.written += marked
        self.on_progress()
        if marked != answer.rows:
            # Rows recorded already (a repeated page) or duplicates of one external key: worth a look, harmless.
            log.warning("job.success_count_differs", object=plan.name, job_id=answer.job_id,
                        job_says=answer.rows, recorded=marked)

    def _job_digests(self, plan: ObjectPlan, job_id: str, failed: set[str]) -> dict[str, str]:
        """The payload digest of each record a succeeded job wrote (queued at the version the job carried, not
        among its failures), read from the outbox a chunk at a time."""
        job = next((j for j in self.store.remote_jobs(self.pipeline, plan.name) if j.job_id == job_id), None)
        if job is None:
            return {}
        versions = dict(job.entries)
        keys = list(versions)
        out: dict[str, str] = {}
        for start in range(0, len(keys), _SEND_CHUNK):
            for row in self.store.outbox_rows(self.pipeline, plan.name, keys[start:start + _SEND_CHUNK],
                                              with_source=False):
                if row.version == versions.get(row.key) and str(row.payload.get(plan.external_id)) not in failed:
                    out[row.key] = payload_digest(row.payload)
        return out

    def _reconcile_keyed(self, plan: ObjectPlan, journal: StoreJobJournal, results: Sequence[RecordResult]) -> int:
        """Record a batch of streamed results, matched to (key, version) by external key through the journal."""
        sent: dict[str, dict[str, str]] = {}
        for entry in journal.entries(list({r.key for r in results})):
            sent.setdefault(entry.external_key, {})[entry.key] = entry.version
        matched: list[tuple[str, str, RecordResult]] = []
        for res in results:
            candidates = sent.get(res.key)
            if not candidates:
                # Not a record of this job (cannot happen with a well-behaved target): it stays queued.
                log.warning("job.result_unmatched", object=plan.name, external_key=res.key)
                continue
            key = next(iter(candidates))  # duplicates of one external key take their results in turn
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
            rows.append(replace(row, version=version))
            answers.append(res)
        return self.reconcile(plan, rows, answers, jobs=[])

    async def _resume_jobs(self, sink: Sink, plan: ObjectPlan) -> str | None:
        """Collect the jobs a crashed run left; the strategy they ran under if any was collected."""
        resumed = False
        for job in self.store.remote_jobs(self.pipeline, plan.name):
            versions = dict(job.entries)
            rows = self.store.outbox_rows(self.pipeline, plan.name, list(versions), with_source=False)
            log.info("job.resume", job_id=job.job_id, object=plan.name, records=len(rows))
            try:
                results = (
                    await sink.resume_job(job.job_id, plan.external_id, [r.payload for r in rows]) if rows else []
                )
            except (AuthError, ConfigError):
                raise
            except PermanentError as exc:
                # The target no longer knows the job (it expired): its records go out again below, by upsert,
                # which is harmless whatever the job did.
                log.warning("job.unknown", job_id=job.job_id, object=plan.name, error=str(exc))
                results = None
            if results is None:  # the job never got its data: it was aborted, its records go out again below
                self.store.forget_remote_job(self.pipeline, plan.name, job.job_id)
                continue
            resumed = True
            self.resumed_jobs.append(job.job_id)
            # Results are for the versions the job carried, even if a newer one has been queued since.
            sent = [replace(r, version=versions[r.key]) for r in rows]
            self.reconcile(plan, sent, results, jobs=[job.job_id])
        if not resumed:
            return None
        jobs = [c for c in sink.write_costs(plan.name, 1) if c.remote_job]
        return str(jobs[0].strategy) if jobs else "remote job"

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
                elif res.created is not None:  # None: the target did not say (a job answered by its counts)
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
        if self.keep_digests and written:
            # After the results (a crash in between costs one more write of the record, never a lost one).
            sent = {row.key: row.payload for row, res in zip(rows, results, strict=True) if res.success}
            self.store.save_written_digests(self.pipeline, plan.name, {k: payload_digest(p) for k, p in sent.items()})
        s.written += len(written)
        s.dead_lettered += len(letters)
        self.on_progress()
        return len(retry)


def _children_wait(part: CallPart, results: Sequence[RecordResult], failed: dict[str, set[str]]) -> list[RecordResult]:
    """A child that failed in the same call as its parent is tried again after the parent's own outcome (one more
    attempt): the target's error was about the missing parent, not the child. ``load`` then drops it as an
    orphan if the parent became a dead letter, or writes it under the parent it now holds."""
    waiting = parent_failed(part, failed) if failed else {}
    out = list(results)
    for i, (row, res) in enumerate(zip(part.rows, results, strict=True)):
        if res.success or res.transient or row.key not in waiting:
            continue
        ref, parent = waiting[row.key]
        said = "; ".join(f"{e.code}: {e.message}" for e in res.errors) or "no reason given"
        out[i] = replace(res, errors=[RecordError(
            "PARENT_FAILED", f"{part.plan.name} {row.key}: its parent {ref.object} {parent} ({ref.field}) failed in "
            f"the same call; tried again after it (the target said {said})", [ref.field], transient=True,
        )])
    return out


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"
