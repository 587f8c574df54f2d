"""One run of a pipeline: extract -> stage -> normalize -> map -> validate -> plan -> load -> reconcile.

Durability points, in order (each one is a single SQLite transaction):
1. each source page is staged together with where the read stands (the source's state, engine/intake.py),
   so a killed run continues at the next page; the cursor the next run reads from moves with a read's last
   page (a source reads so that a record edited mid-read is not skipped: the Source contract's rule);
2. a chunk of staged records goes to the outbox (or, if invalid, the dead-letter queue) together with
   the mark past that chunk, so no staged record is planned twice or skipped;
3. a remote job's id is stored the moment the job exists, with the records it carries; a restart resumes
   it before sending that object's outbox again (engine/loader.py);
4. a record leaves the outbox only with the target's answer for it recorded (version map and id map on
   success, dead-letter queue on a permanent error or an exhausted retry budget, its attempt count and
   error history on a transient one).
A run that dies anywhere is finished by the next run: it reads on from the saved page, plans what is
not planned yet, resumes open remote jobs and sends the outbox again (upserts by external id make a
repeated write harmless; the version map skips what already landed).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import orjson
import structlog

from ferry.connectors.registry import open_sink, open_source
from ferry.core.contracts import Normalized, Sink, SinkContext, Source, WritesTogether
from ferry.core.schema import ObjectSchema
from ferry.engine.adopt import adopt_linked
from ferry.engine.combined import plan_calls
from ferry.engine.intake import Intake
from ferry.engine.linkback import link_back
from ferry.engine.loader import Loader, RetryBudget
from ferry.engine.overlap import Steps, read_plan_load, streams_feeding
from ferry.engine.parents import stage_missing_parents
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan, build_plans, order_plans
from ferry.engine.preflight import static_problems
from ferry.engine.selection import select_for_pipeline
from ferry.engine.stats import RunStats
from ferry.engine.together import run_together
from ferry.engine.twoway import TwoWay
from ferry.engine.waves import RowSelector, load_waves, ready_rows
from ferry.errors import BudgetExhausted, PlanProblems, RecordError
from ferry.observe import metrics, tracing
from ferry.store import NewDeadLetter, PlannedRow, StagedRecord, Store
from ferry.store.lease import PipelineLock

log = structlog.get_logger("ferry.engine")

MAX_ATTEMPTS = RetryBudget().max_attempts  # the default; a pipeline sets its own under `retry:`
PLANNED_MARK = "planned_seq"
# What a batch run may spend to send an object's ready rows ahead of the rest (engine/overlap.py rules 3 and 4):
# the part and the rest together cost at most this many calls more than the whole would (as the planner prices
# them). One buys, at 10,000 orders with an org's real latency, the Orders of registered customers going out
# while the guests' Accounts are written (their ~5 s off the run's tail; bench/RESULTS.md "Waves").
PART_EXTRA_CALLS = 1
_PLAN_CHUNK = 2000


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
    rows: list[PlannedRow]
    letters: list[NewDeadLetter]


# A run allocates millions of short-lived objects (decoded JSON pages, canonical records, mapped payloads). Each
# older-generation pass of the cyclic collector walks every tracked object, including the ~10^5 that exist
# before the run starts (modules, classes, config) and live to its end: freezing those halves the collector's
# CPU (1.3 -> 0.6 s in a 10,000-order run). The thresholds stay as they are: a run's cyclic garbage (HTTP
# responses holding their bodies) must still be collected young, or the peak RSS grows by ~100 MiB.
@contextmanager
def _long_lived_objects_frozen() -> Iterator[None]:
    """For the run, what is alive at its start is left out of the cyclic collector's passes."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _PhaseClock:
    """This process's CPU time and the wall time, charged to the phase that just ended."""

    def __init__(self, into: dict[str, float], wall: dict[str, float]) -> None:
        self.into = into
        self.wall = wall
        self.last = time.process_time()
        self.last_wall = time.monotonic()

    def lap(self, phase: str) -> None:
        now, now_wall = time.process_time(), time.monotonic()
        self.into[phase] = self.into.get(phase, 0.0) + now - self.last
        self.wall[phase] = self.wall.get(phase, 0.0) + now_wall - self.last_wall
        self.last, self.last_wall = now, now_wall


class Runner:
    # A batch run reads, plans and loads at once (engine/overlap.py); a runner that hands its loads out
    # (engine/distributed.py) overlaps them its own way (``_overlapped``: engine/distflow.py).
    overlaps: ClassVar[bool] = True

    def __init__(
        self,
        spec: PipelineSpec,
        store: Store,
        progress: Progress | None = None,
        *,
        clock: Callable[[], float] = time.time,
        force: bool = False,
        origin: str = "manual",
        latency_sensitive: bool = False,
    ) -> None:
        self.spec = spec
        # Event micro-batches (``ferry serve``): no queued remote job for a write, and objects whose parents the
        # target already holds are written alongside them (engine/waves.py) instead of one after another.
        self.latency_sensitive = latency_sensitive
        self.origin = origin  # what started the run (ferry.core.ports.RUN_ORIGINS), kept in the run log
        self.force = force  # write even when `ferry plan` reports problems with the mapping
        self.run_id: int | None = None
        self.clock = clock  # wall time of the API budget's rolling window (tests move it)
        self.store = store
        self.progress: Progress = progress or _NoProgress()
        self.pipeline = spec.name
        self.budget = RetryBudget(spec.retry.max_attempts, spec.retry.backoff_max_seconds)
        self.two_way = TwoWay(spec.two_way, store, spec.name) if spec.two_way is not None else None
        self._progressed = False
        self._loading: set[str] = set()  # objects whose load began in this run (overlapped batch runs)
        self._late: set[str] = set()  # of those, the ones rows were planned for afterwards

    async def run(self) -> RunStats:
        with _long_lived_objects_frozen():
            return await self._run()

    def _lock(self) -> Any:
        """One run per pipeline: a store shared by several machines (PostgreSQL) brings its own lock; SQLite's
        is a file next to it."""
        shared_lock = getattr(self.store, "pipeline_lock", None)
        return shared_lock(self.pipeline) if shared_lock else PipelineLock(self.store.path.parent, self.pipeline)

    async def _run(self) -> RunStats:
        with self._lock():
            return await self._tracked(self._read_and_load)

    async def run_staged(
        self, source: Source, sink: Sink, plans: list[ObjectPlan], calls_before: dict[str, int] | None = None
    ) -> RunStats:
        """A run without the read: what is staged (events ``ferry serve`` took in) goes the same plan and load
        path as a batch run's pages, through a source and sink the caller keeps open across runs (one
        sign-in and one describe for many). Holds the pipeline's lock like ``run`` (PipelineBusy if held).
        ``calls_before``: the sink's counts before whatever the caller did for this run (the describe of the
        first micro-batch), so the run reports those calls too; default: the counts now."""
        with self._lock():
            # The source and sink count calls for their whole life: this run reports its own (the difference).
            source_before = source.api_calls
            before = dict(sink.api_calls) if calls_before is None else dict(calls_before)

            async def load_staged(stats: RunStats, loader: Loader, opened: list[Sink]) -> None:
                opened.append(sink)
                clock = _PhaseClock(stats.cpu_seconds, stats.wall_seconds)
                # Events come one resource at a time: what they refer to and the target lacks comes along.
                stats.parents_fetched = await stage_missing_parents(
                    source, self.store, self.pipeline, plans, self.store.get_mark(self.pipeline, PLANNED_MARK))
                clock.lap("fetch parents")
                await self._plan_and_load(source, sink, plans, stats, loader, clock)
                stats.source_api_calls = source.api_calls - source_before
                stats.setup_api_calls = sum(v - before.get(k, 0) for k, v in sink.api_calls.items()
                                            if k not in stats.objects)

            return await self._tracked(load_staged, calls_before=before)

    async def _tracked(
        self, body: Callable[[RunStats, Loader, list[Sink]], Awaitable[None]],
        calls_before: dict[str, int] | None = None,
    ) -> RunStats:
        """A run's bookkeeping around ``body``: the run row (origin, status, stats), the resumed-from note, the
        outcome by exception type. The caller holds the pipeline's lock."""
        started = time.monotonic()
        # This process holds the pipeline's lock: a run still marked running has no process left.
        abandoned = self.store.close_abandoned_runs(self.pipeline)
        previous = self.store.list_runs(self.pipeline, 1)
        run_id = self.store.start_run(self.pipeline, pid=os.getpid(), host=socket.gethostname(), origin=self.origin)
        self.run_id = run_id
        self._progressed = False
        stats = RunStats(run_id=run_id, pipeline=self.pipeline, dead_letter_cap=self.spec.max_dead_letter_share)
        if previous and previous[0].status in ("interrupted", "died", "failed", "paused"):
            last = previous[0]
            stats.resumed_from = {"run_id": last.id, "status": "died" if abandoned else last.status}
        # Every log line of the run names it (structlog contextvars); the run is one trace.
        with structlog.contextvars.bound_contextvars(pipeline=self.pipeline, run_id=run_id), tracing.span(
            "ferry.run", {"ferry.pipeline": self.pipeline, "ferry.run_id": run_id,
                          "ferry.source.system": self.spec.source.system,
                          "ferry.target.system": self.spec.target.system},
        ) as run_span:
            run_span.set_attribute("ferry.origin", self.origin)
            try:
                return await self._run_started(body, run_id, stats, started, calls_before)
            finally:
                run_span.set_attribute("ferry.status", stats.status)
                _report_metrics(self.spec.target.system, stats)

    async def _run_started(
        self, body: Callable[[RunStats, Loader, list[Sink]], Awaitable[None]], run_id: int, stats: RunStats,
        started: float, calls_before: dict[str, int] | None = None,
    ) -> RunStats:
        log.info("run.start", pipeline=self.pipeline, run_id=run_id, origin=self.origin)
        loader = Loader(self.store, self.pipeline, run_id, stats, self.budget, on_progress=lambda: self._mark(run_id),
                        latency_sensitive=self.latency_sensitive, keep_digests=self.two_way is not None,
                        calls_before=calls_before,
                        linked=self.two_way.linked if self.two_way is not None else None)
        opened: list[Sink] = []  # the sink, once there is one: its budget goes into the report
        try:
            await body(stats, loader, opened)
            stats.status = "succeeded"
        except BudgetExhausted as exc:
            stats.status = "paused"
            stats.error = f"API budget exhausted: {exc}"
        except (asyncio.CancelledError, KeyboardInterrupt):
            # SIGINT / SIGTERM: what is committed stays; the next run resumes from it.
            stats.status = "interrupted"
            stats.error = "interrupted"
            raise
        except Exception as exc:
            stats.status = "failed"
            stats.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            stats.seconds = time.monotonic() - started
            stats.budget = opened[0].budget_status() if opened else None
            self._add_helpers_calls(stats)
            self.store.finish_run(run_id, stats.status, stats.as_dict(), stats.error)
            log.info("run.end", pipeline=self.pipeline, run_id=run_id, status=stats.status, seconds=stats.seconds)
        return stats

    def _add_helpers_calls(self, stats: RunStats) -> None:
        """API calls other processes sent for this run, added to its figures (a distributed run's workers)."""

    async def _read_and_load(self, stats: RunStats, loader: Loader, opened: list[Sink]) -> None:
        """A batch run: prepare, read every stream into staging, then plan and load what is staged."""
        run_id = stats.run_id
        sink = open_sink(self.spec.target, SinkContext(
            self.pipeline, ledger=self.store, clock=self.clock, target_ids=self._id_map,
        ))
        opened.append(sink)
        async with open_source(self.spec.source) as source, sink:
            # Before any read: a source that selects reads only what the pipeline's objects map from.
            stats.skipped_entities = select_for_pipeline(source, self.spec.objects)
            clock = _PhaseClock(stats.cpu_seconds, stats.wall_seconds)
            plans = await self._prepare(sink, stats)
            clock.lap("prepare")
            if self.overlaps:
                await self._overlapped(source, sink, plans, stats, loader, clock)
            else:
                await self._extract(source, run_id, stats)
                clock.lap("read")
                await self._plan_and_load(source, sink, plans, stats, loader, clock)
            stats.source_api_calls = source.api_calls
            stats.source_api = getattr(source, "api", None)  # optional: sources with more than one API
            stats.source_reads = dict(getattr(source, "read_plans", None) or {})
            stats.setup_api_calls = sum(v for k, v in sink.api_calls.items() if k not in stats.objects)
            stats.resumed_bulk_jobs = list(loader.resumed_jobs)

    async def _plan_and_load(
        self, source: Source, sink: Sink, plans: list[ObjectPlan], stats: RunStats, loader: Loader, clock: _PhaseClock
    ) -> None:
        """Staged raw -> outbox / DLQ, then each object's outbox to the target, then staging cleared: the path
        every record takes, whether a batch read or an event staged it."""
        run_id = stats.run_id
        last_seq = self.store.max_staged_seq(self.pipeline)
        # A micro-batch plans at most realtime.max_records events: what is staged beyond stays for the next one
        # (cleared below only up to what was planned).
        limit = self.spec.realtime.max_records if self.latency_sensitive else None
        planned = self._plan_records(source, plans, run_id, stats, limit=limit)
        if limit is not None and planned is not None:
            last_seq = min(last_seq, planned)
        clock.lap("plan")
        # two-way: records the other direction made from the target get their key first (no second record)
        stats.adopted = await adopt_linked(sink, self.store, self.pipeline, plans, self.two_way)
        if self.latency_sensitive and await self._load_combined(sink, plans, stats, loader):
            clock.lap("load together")
            if any(self.store.outbox_count(self.pipeline, plan.name) for plan in plans):
                await asyncio.sleep(loader.budget.pause(1))  # records to retry: back off as a round does
        # Object by object (a micro-batch: whatever its combined calls left to retry).
        waves = load_waves(self.store, self.pipeline, plans) if self.latency_sensitive else [
            [plan] for plan in order_plans(plans)
        ]
        for wave in waves:
            for plan in wave:
                self._drop_orphans(plan, run_id, stats)
            await run_together(loader.load(sink, plan, self.progress) for plan in wave)
            clock.lap(f"load {'+'.join(plan.name for plan in wave)}")
        # A source that records the target's ids on its records gets them now (optional capability), before
        # staging is cleared: a crash here leaves the records staged, and the next pass links them.
        stats.linked_back = await link_back(source, self.store, self.pipeline, plans)
        clock.lap("link back")
        # Every staged record up to last_seq has now reached the outbox or the DLQ, and the outbox is drained.
        self.store.clear_staging(self.pipeline, last_seq)
        clock.lap("finish")

    async def _load_combined(self, sink: Sink, plans: list[ObjectPlan], stats: RunStats, loader: Loader) -> bool:
        """A micro-batch's first write of every object in combined calls (``engine/combined.py``), when the sink
        writes together and the batch suits; False: nothing was sent, load object by object."""
        limits = sink.together_limits() if isinstance(sink, WritesTogether) else None
        if limits is None:
            return False
        for plan in order_plans(plans):  # children of open dead letters could only fail
            self._drop_orphans(plan, stats.run_id, stats)
        groups = plan_calls(self.store, self.pipeline, plans, limits, self.spec.realtime.records_per_call)
        left = sink.budget_left()
        if groups is None or (left is not None and left < sum(len(g) for g in groups)):
            return False
        assert isinstance(sink, WritesTogether)
        await loader.load_combined(sink, order_plans(plans), groups, self.progress)
        return True

    async def _overlapped(
        self, source: Source, sink: Sink, plans: list[ObjectPlan], stats: RunStats, loader: Loader, clock: _PhaseClock
    ) -> None:
        """A batch run's read, plan and load overlapped (engine/overlap.py): each object loads as soon as the
        streams it comes from are read and planned and its parents are loaded, while other streams are read."""
        run_id = stats.run_id
        unplanned = 0  # records staged since the last plan

        def on_page(n: int) -> None:
            # A long read is planned as it goes (every _PLAN_CHUNK records), mostly while the source makes us
            # wait (a leaky bucket, a points budget): what is left to plan after its last page is one chunk.
            # Only objects fed by this stream get rows, and none of them loads before the stream's end.
            nonlocal unplanned
            self._on_page(run_id, n)
            unplanned += n
            if unplanned >= _PLAN_CHUNK:
                plan(_NoProgress())  # the read's bar goes on; a bar per chunk planned would only clutter

        intake = Intake(self.store, self.pipeline, run_id, on_page)
        await intake.prepare(source)
        started = time.monotonic()
        timing = _Timing(stats, started)

        async def read(stream: str) -> None:
            self.progress.phase(f"read {stream}", None)
            t0 = time.monotonic()
            stats.source_records[stream] = await intake.read_stream(source, stream)
            timing.add(f"read {stream}", time.monotonic() - t0)

        def plan(progress: Progress | None = None) -> None:
            nonlocal unplanned
            unplanned = 0
            t0, c0 = time.monotonic(), time.process_time()
            self._plan_records(source, plans, run_id, stats, progress)
            timing.add("plan", time.monotonic() - t0, time.process_time() - c0)

        ahead: dict[str, list[RowSelector]] = {}  # per object, the rows of its parts still being sent
        feeding = streams_feeding(source, plans)
        read_here = frozenset(source.streams)

        async def load(plan: ObjectPlan) -> None:
            t0 = time.monotonic()
            self._loading.add(plan.name)
            self._drop_orphans(plan, run_id, stats)
            if self._adopts_into(plan):  # two-way: as in _plan_and_load, before the object's own upsert
                stats.adopted += await adopt_linked(sink, self.store, self.pipeline, plans, self.two_way)
            progress = self._part_progress()
            await loader.load(sink, plan, progress, select=_rest_of(ahead.get(plan.name)))
            if progress is not self.progress:
                _finish(progress)
            timing.add(f"load {plan.name}", time.monotonic() - t0)
            timing.load_ended()

        def load_part(plan: ObjectPlan, streams: frozenset[str]) -> Coroutine[Any, Any, None] | None:
            """The sending of the object's ready rows ahead of the rest (engine/overlap.py rules 3 and 4), when
            they are most of what it holds and the part and the rest cost at most ``PART_EXTRA_CALLS`` more than
            the whole; None: nothing goes ahead. Chosen and set aside at once, so the rest, whenever it starts,
            leaves them out."""
            if self._adopts_into(plan):
                return None  # two-way adoption goes before the object's first upsert, once: it loads whole
            if any(self.store.outbox_count(self.pipeline, p.object) > stats.object(p.object).written
                   for p in plan.parents if p.object in feeding and p.object != plan.name):
                return None  # a parent owes more than it wrote: few rows can be ready, spare judging them all
            planned = all(feeding[p.object] & read_here <= streams for p in plan.parents if p.object in feeding)
            select = ready_rows(self.store, self.pipeline, plan, plans, streams, parents_planned=planned)
            if select is None:
                return None
            self._drop_orphans(plan, run_id, stats)  # before a part: its rows may name a dead letter
            ready, total = loader.count(plan, select), self.store.outbox_count(self.pipeline, plan.name)
            if not ready or ready * 2 < total:
                return None
            calls = loader.calls_for(sink, plan.name, ready) + loader.calls_for(sink, plan.name, total - ready)
            if calls > loader.calls_for(sink, plan.name, total) + PART_EXTRA_CALLS:
                return None
            ahead.setdefault(plan.name, []).append(select)
            return send_part(plan, select, ready)

        async def send_part(plan: ObjectPlan, select: RowSelector, ready: int) -> None:
            t0 = time.monotonic()
            try:
                progress = self._part_progress()
                await loader.load(sink, plan, progress, select=select, count=ready)
                if progress is not self.progress:
                    _finish(progress)
            finally:
                ahead[plan.name].remove(select)
            timing.add(f"load {plan.name} ahead", time.monotonic() - t0)
            timing.load_ended()

        self._loading = set()
        self._late = set()
        try:
            await read_plan_load(
                source.streams, plans, feeding, Steps(read, plan, load, load_part),
                on_read_end=timing.read_ended,
            )
            await self._load_late(sink, plans, stats, loader)
        finally:
            self._loading = set()
        # Every stream is read to its end and planned and every outbox drained: staging up to here can go
        # once the source has had its links back (a crash before leaves it staged, and the next pass links it).
        last_seq = self.store.max_staged_seq(self.pipeline)
        stats.resumed_reads = list(intake.resumed)
        timing.finish()
        # The CPU of the overlapped part is one figure (the plan's own share is known: it never interleaves).
        clock.lap("read+plan+load")
        stats.cpu_seconds["read+plan+load"] -= stats.cpu_seconds.get("plan", 0.0)
        stats.linked_back = await link_back(source, self.store, self.pipeline, plans)
        clock.lap("link back")
        self.store.clear_staging(self.pipeline, last_seq)
        clock.lap("finish")

    async def _load_late(self, sink: Sink, plans: list[ObjectPlan], stats: RunStats, loader: Loader) -> None:
        """Rows planned for an object after its load began (a source whose stream_entities missed an entity):
        loaded now, parents first, rather than left for the next run."""
        if not self._late:
            return
        log.warning("run.rows_after_load", objects=sorted(self._late))
        for plan in order_plans(plans):
            if plan.name in self._late:
                self._drop_orphans(plan, stats.run_id, stats)
                await loader.load(sink, plan, self.progress)

    def _adopts_into(self, plan: ObjectPlan) -> bool:
        """Whether ``plan`` is the object a two-way peer's records are adopted into (``engine/adopt.py``)."""
        peer = self.two_way.spec.peer if self.two_way is not None else None
        return peer is not None and peer.via == plan.name

    def _part_progress(self) -> Progress:
        """Progress for one of several things running at once: a display's own part of it when the display has
        parts (optional ``part()``: the CLI's), else the run's."""
        part = getattr(self.progress, "part", None)
        return part() if callable(part) else self.progress

    def _on_page(self, run_id: int, n: int) -> None:
        self._mark(run_id)
        self.progress.advance(n)

    def _id_map(self, obj: str, keys: Sequence[str]) -> dict[str, str]:
        return self.store.target_ids(self.pipeline, obj, keys)

    def _mark(self, run_id: int) -> None:
        """The first durable step of a run: how long a restart takes to resume is measured up to here."""
        if not self._progressed:
            self._progressed = True
            self.store.mark_progress(run_id)

    # -- extract ----------------------------------------------------------------

    async def _extract(self, source: Source, run_id: int, stats: RunStats) -> None:
        intake = Intake(self.store, self.pipeline, run_id, lambda n: self._on_page(run_id, n))
        await intake.prepare(source)
        for stream in source.streams:
            self.progress.phase(f"read {stream}", None)
            stats.source_records[stream] = await intake.read_stream(source, stream)
        stats.resumed_reads = list(intake.resumed)

    # -- prepare ----------------------------------------------------------------

    async def prepare(self, sink: Sink) -> list[ObjectPlan]:
        """The compiled plans for ``run_staged`` (PlanProblems as a run would raise them): describe once, then
        load many micro-batches with them."""
        return await self._prepare(sink, None)

    def id_map(self, obj: str, keys: Sequence[str]) -> dict[str, str]:
        """The id map bound to this pipeline: what a sink opened for ``run_staged`` gets as ``target_ids``."""
        return self._id_map(obj, keys)

    async def _prepare(self, sink: Sink, stats: RunStats | None) -> list[ObjectPlan]:
        """The compiled plans; a problem `ferry plan` would report stops the run here, before any read or write,
        unless it was forced."""
        plans, schemas = await _describe_and_build(self.spec, sink, stats)
        problems = static_problems(self.spec, plans, schemas)
        if problems and not self.force:
            raise PlanProblems(self.pipeline, problems)
        if problems:
            log.warning("run.forced", pipeline=self.pipeline, problems=len(problems))
        return plans

    # -- plan: staged raw -> canonical -> mapped -> validated -> outbox / DLQ -------

    def _plan_records(
        self, source: Source, plans: list[ObjectPlan], run_id: int, stats: RunStats, progress: Progress | None = None,
        limit: int | None = None,
    ) -> int | None:
        """Staged records after the planned mark -> outbox / DLQ, ``limit`` records at most; returns the seq of the
        last one planned (None: none)."""
        progress = progress or self.progress
        by_entity: dict[str, list[ObjectPlan]] = {}
        for p in plans:
            by_entity.setdefault(p.entity, []).append(p)
        streams, normalize = source.streams, source.normalize
        after = self.store.get_mark(self.pipeline, PLANNED_MARK)
        progress.phase("map and validate", self.store.staged_count(self.pipeline, after))
        last: int | None = None
        chunks = self.store.staged(self.pipeline, streams, chunk=_PLAN_CHUNK, after=after)
        try:
            for chunk in chunks:
                if limit is not None:
                    chunk = chunk[:limit]
                    limit -= len(chunk)
                if not chunk:
                    break
                last = chunk[-1].seq
                with tracing.span("ferry.plan.chunk", {"ferry.records": len(chunk)}) as span:
                    routed = {p.name: _Routed(p, [], []) for p in plans}
                    for staged in chunk:
                        route_staged(staged, normalize, by_entity, routed)
                    self._commit_routed(list(routed.values()), run_id, stats, chunk[-1].seq)
                    if span.is_recording():
                        _describe_chunk(span, chunk, routed.values())
                self._mark(run_id)
                progress.advance(len(chunk))
                if limit == 0:
                    break
        finally:
            close = getattr(chunks, "close", None)  # a store's generator stopped early: its cursor goes now
            if close is not None:
                close()
        return last

    def _commit_routed(self, routed: list[_Routed], run_id: int, stats: RunStats, up_to_seq: int) -> None:
        outbox: dict[str, list[PlannedRow]] = {}
        letters: list[NewDeadLetter] = []
        for r in routed:
            letters.extend(r.letters)
            fresh = fresh_rows(self.store, self.pipeline, r, stats, self.two_way)
            if not r.rows:
                continue
            if fresh and r.plan.name in self._loading:
                self._late.add(r.plan.name)
            outbox[r.plan.name] = fresh
        self.store.commit_planned(self.pipeline, run_id, outbox, letters, (PLANNED_MARK, up_to_seq))

    # -- load -------------------------------------------------------------------

    def _drop_orphans(self, plan: ObjectPlan, run_id: int, stats: RunStats) -> None:
        """Dead-letter children whose parent is itself a dead letter: the write could only fail."""
        if not plan.parents:
            return
        dead = {p.object: self.store.dead_letter_keys(self.pipeline, p.object) for p in plan.parents}
        if not any(dead.values()):
            return
        # Page by page, each page's orphans in one transaction; rows are read without their source payload,
        # which is fetched (one query a page) only for the rows that become dead letters.
        for rows in self.store.outbox(self.pipeline, plan.name, with_source=False):
            orphans = [(row, errors) for row in rows if (errors := orphan_errors(plan, row.key, row.payload, dead))]
            if not orphans:
                continue
            sources = self.store.source_payloads(self.pipeline, plan.name, [row.key for row, _ in orphans])
            letters = [
                NewDeadLetter(
                    plan.name, row.key, row.version, errors, sources.get(row.key), row.payload,
                    row.stream, row.source_key,
                )
                for row, errors in orphans
            ]
            done = [(row.key, row.version) for row, _ in orphans]
            self.store.record_results(self.pipeline, plan.name, run_id, [], letters, done)
            stats.object(plan.name).dead_lettered += len(letters)


def _rest_of(parts: list[RowSelector] | None) -> RowSelector | None:
    """The rows none of ``parts`` picks (an object's whole, beside a part of it still being sent)."""
    if not parts:
        return None
    taken = list(parts)

    def rest(rows: list[Any]) -> list[Any]:
        picked = {row.key for select in taken for row in select(rows)}
        return [row for row in rows if row.key not in picked]

    return rest


def _finish(progress: Progress) -> None:
    finish = getattr(progress, "finish", None)
    if callable(finish):
        finish()


class _Timing:
    """Wall seconds of an overlapped run's parts into the run's stats: each stream's read and each object's
    load on its own (they overlap, so they do not add up to the run), the plan's total, how long the reads took
    from the first to the last, and how much of the loading came after them (what overlapping did not hide)."""

    def __init__(self, stats: RunStats, started: float) -> None:
        self.stats = stats
        self.started = started
        self.reads_end: float | None = None
        self.last_load_end = started

    def add(self, part: str, wall: float, cpu: float | None = None) -> None:
        self.stats.wall_seconds[part] = self.stats.wall_seconds.get(part, 0.0) + wall
        if cpu is not None:
            self.stats.cpu_seconds[part] = self.stats.cpu_seconds.get(part, 0.0) + cpu

    def read_ended(self) -> None:
        self.reads_end = time.monotonic()
        self.stats.wall_seconds["read"] = self.reads_end - self.started

    def load_ended(self) -> None:
        self.last_load_end = max(self.last_load_end, time.monotonic())

    def finish(self) -> None:
        reads_end = self.reads_end if self.reads_end is not None else time.monotonic()
        self.stats.wall_seconds["load after read"] = max(0.0, self.last_load_end - reads_end)


def _describe_chunk(span: tracing.Span, chunk: Sequence[StagedRecord], routed: Iterable[_Routed]) -> None:
    """Which source records a plan chunk took and what became of them per object (keys, to follow one record)."""
    tracing.set_keys(span, (f"{s.stream}/{s.key}" for s in chunk), "ferry.source_keys")
    for r in routed:
        if r.rows:
            tracing.set_keys(span, (row.key for row in r.rows), f"ferry.outbox.{r.plan.name}")
        if r.letters:
            tracing.set_keys(span, (letter.record_key for letter in r.letters), f"ferry.dead_lettered.{r.plan.name}")


def _report_metrics(target_system: str, stats: RunStats) -> None:
    """A finished run's figures into the Prometheus counters (ferry/observe/metrics.py), exactly its stats."""
    for name, s in stats.objects.items():
        metrics.records(stats.pipeline, name, read=s.read, written=s.written, dead_lettered=s.dead_lettered)
    metrics.run_finished(stats.pipeline, stats.status, stats.seconds)
    budget = stats.budget or {}
    if isinstance(budget.get("remaining"), int | float):
        metrics.budget_remaining(target_system, "pipeline_share", budget["remaining"])
    if isinstance(budget.get("org_max"), int | float) and isinstance(budget.get("org_used"), int | float):
        metrics.budget_remaining(target_system, "org_daily", budget["org_max"] - budget["org_used"])


async def prepare_plans(spec: PipelineSpec, sink: Sink, stats: RunStats | None = None) -> list[ObjectPlan]:
    """Describe every target object and resolve the mapping's query constants: the compiled plans, in the
    sink's dialect."""
    plans, _ = await _describe_and_build(spec, sink, stats)
    return plans


async def _describe_and_build(
    spec: PipelineSpec, sink: Sink, stats: RunStats | None
) -> tuple[list[ObjectPlan], dict[str, ObjectSchema]]:
    queries = list(_queries(spec))
    # The sink may answer the constants' queries in the same call as the describes (one API call for the setup).
    schemas: dict[str, ObjectSchema] = await sink.describe([m.name for m in spec.objects], queries)
    constants: dict[str, Any] = {query: await sink.constant(query) for query in queries}
    if stats is not None:
        for m in spec.objects:
            stats.object(m.name)
    return build_plans(spec.objects, schemas, constants, sink.dialect), schemas


def route_staged(
    staged: StagedRecord,
    normalize: Callable[[str, dict[str, Any]], Normalized],
    by_entity: dict[str, list[ObjectPlan]],
    routed: dict[str, _Routed],
) -> None:
    """A staged record's canonical records (``normalize``: its source's), each mapped and validated by every plan
    of its entity: into the plan's outbox rows, or its dead letters."""
    raw = orjson.loads(staged.payload)
    for entity, record in normalize(staged.stream, raw):
        for plan in by_entity.get(entity, ()):
            _route(plan, record, staged, routed[plan.name])


def fresh_rows(
    store: Store, pipeline: str, routed: _Routed, stats: RunStats, two_way: TwoWay | None
) -> list[PlannedRow]:
    """Of an object's routed rows, those newer than the version the store holds (and, two-way, not the peer's own
    echo); the object's read, dead-lettered and unchanged counts in ``stats`` grow by what was routed."""
    s = stats.object(routed.plan.name)
    s.read += len(routed.rows) + len(routed.letters)
    s.dead_lettered += len(routed.letters)
    if not routed.rows:
        return []
    known = store.versions_for(pipeline, routed.plan.name, [row.key for row in routed.rows])
    fresh = [row for row in routed.rows if row.version > known.get(row.key, "")]
    s.unchanged += len(routed.rows) - len(fresh)
    if two_way is not None:
        fresh = two_way.filter(routed.plan.name, fresh, known, s, routed.plan.external_id)
    return fresh


def _route(plan: ObjectPlan, record: Any, staged: StagedRecord, out: _Routed) -> None:
    key = str(record.key)
    mapped, errors = plan.map_and_validate(record)
    if errors:
        out.letters.append(
            NewDeadLetter(
                plan.name, key, record.version, [e.as_dict() for e in errors], staged.payload, mapped,
                staged.stream, staged.key,
            )
        )
    else:
        # The raw record stays in staging, once however many target rows it maps to: the row points at it.
        out.rows.append(PlannedRow(key, record.version, mapped, staged.seq, staged.stream, staged.key))


def orphan_errors(
    plan: ObjectPlan, key: str, payload: dict[str, Any], dead: dict[str, set[str]]
) -> list[dict[str, Any]]:
    """PARENT_DEAD_LETTERED errors for each parent of the record that is an open dead letter."""
    errors = []
    for parent in plan.parents:
        value = payload.get(parent.payload_key)
        if value is not None and str(value) in dead[parent.object]:
            errors.append(
                RecordError(
                    "PARENT_DEAD_LETTERED",
                    f"{plan.name} {key}: parent {parent.object} {value} ({parent.field}) is in the "
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


ProgressFactory = Callable[[], Progress]
