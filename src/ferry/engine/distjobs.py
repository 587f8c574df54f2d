"""Reads and remote jobs in distributed runs: the ``ReadStream`` and ``JobLoad`` work items, both sides.

Reads. The coordinator (``DistributedRunner``) lets the source start its reads together (``Intake.prepare``: one
request for Shopify's bulk operations, their states saved first), then publishes one ``ReadStream`` item per
stream and waits until each stream's read is marked done for its run. A worker reads the stream with the embedded
intake (``Intake.read_stream``): each page is staged in one transaction with the read state after it, so a worker
killed mid-read leaves the stream at its last staged page, and the redelivered item continues there (a page is
never lost; a (key, version) is staged once). When the read ends, the worker marks it done (mark
``read:<run>:<stream>`` = records staged + 1, durable after the last page). The coordinator never plans while a
read is in flight: staging rows get their ``seq`` when their transaction inserts them, not when it commits, so a
plan running beside readers could pass a ``seq`` another reader has not committed yet and never plan it. So the
overlapped run (``DistributedRunner._overlapped``) reads the streams one after the other, as the embedded run does,
and plans after each stream's done mark, before it publishes the next stream's item (``read_streams_over_bus``,
then ``wait_for_no_reader`` for a reader a killed run left); its loads go on meanwhile.

Remote jobs. When an object must go through a remote job (Bulk API 2.0): the pipeline forces it
(``bulk_threshold``), or the budget left cannot pay for the direct calls (``choose_for_workers``; where a job would
only be cheaper in calls, direct batches are kept: they spread over every worker, a job runs on one), the
coordinator publishes one ``JobLoad`` item for the object instead of its ``LoadBatch`` items. A worker runs it
through the embedded journaled path (``Loader.load_by_job``): the object's journaled jobs are collected first (a
killed worker's job is found again by the next one and waited for, never uploaded a second time; one that never got
its data is aborted and its records sent again), then what is queued goes out as a new job, journaled before its
data is uploaded. What a job answers transient (or leaves without a result) stays queued and goes out in the
coordinator's next rounds as ``LoadBatch`` items, record by record, as the embedded loader retries. An object with
journaled jobs left by an earlier run gets a ``JobLoad`` that only collects them before any of its rows goes out
directly.

Only one worker runs a stream's read or an object's job at a time: it holds a PostgreSQL advisory lock (a session
of its own, named after what it does and its pid; the server drops it when the process dies). A second delivery
of the same item (a heartbeat lost in a NATS restart) waits for the lock, then finds the work done or continues
it from the durable state. A reader checks after each page that its session (and so the lock) is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from ferry.bus.work import JobLoad, ReadStream, encode, msg_id, subject_for
from ferry.connectors.registry import open_source
from ferry.core.bus import PermanentWorkError, subject_token
from ferry.core.contracts import Sink, Source
from ferry.core.writes import StrategyChoice, choose_write
from ferry.engine import runcalls
from ferry.engine.intake import Intake
from ferry.engine.loader import Loader
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.selection import select_for_pipeline
from ferry.engine.stats import RunStats
from ferry.errors import BudgetExhausted, ReadSuperseded

if TYPE_CHECKING:
    from ferry.bus.jetstream import JetStreamBus
    from ferry.engine.distributed import LoadWork

log = structlog.get_logger("ferry.distributed")

LOCK_POLL_SECONDS = 0.5  # a second delivery of held work looks at the lock this often
READ_ROUNDS = 4  # rounds of ReadStream items before the coordinator gives up on an unfinished read
POLL_SECONDS = 0.2
# The read's progress (records staged) is counted this often, not on every poll: the count reads every staged row
# of the pipeline (25 ms at 100,000 orders, 5 times a second: 11 s of PostgreSQL's CPU in a run).
PROGRESS_SECONDS = 2.0
IDLE_WARNING_SECONDS = 30.0
OUTAGE_SECONDS = 120.0


class WorkLockLost(RuntimeError):
    """The session holding a work lock ended (a PostgreSQL restart): the item is retried, from the durable state."""


def given_spec(specs: dict[str, PipelineSpec], name: str) -> PipelineSpec:
    """The pipeline a work item names, as this worker was given it; a permanent error when it was not (the item
    goes to the dead letters: retrying it on this worker cannot help)."""
    spec = specs.get(name)
    if spec is None:
        raise PermanentWorkError(
            f"this worker was not given pipeline {name!r}: start every worker with the same pipeline files"
        )
    return spec


def read_mark(run_id: int, stream: str) -> str:
    """The mark that says ``stream`` was read to its end in run ``run_id`` (its value: records staged + 1)."""
    return f"read:{run_id}:{stream}"


@contextlib.asynccontextmanager
async def hold(store: Any, name: str, label: str) -> AsyncIterator[Any]:
    """Hold the work lock ``name`` (waiting while another live worker holds it); the lock, or None for a store
    without work locks (the embedded SQLite store: one process)."""
    make = getattr(store, "work_lock", None)
    if make is None:
        yield None
        return
    lock = make(name, label)
    waited = False
    while not await asyncio.to_thread(lock.try_acquire):
        if not waited:
            log.info("worker.work_held_elsewhere", work=name)
            waited = True
        await asyncio.sleep(LOCK_POLL_SECONDS)
    try:
        yield lock
    finally:
        await asyncio.to_thread(lock.release)


# -- the worker's side ---------------------------------------------------------------------------------------


@dataclass
class ReadAndJobWork:
    """What a ``ferry worker`` does with ``ReadStream`` and ``JobLoad`` items. Sources are opened once per
    pipeline for the worker's life; sinks are the ``LoadWork``'s (one sign-in, the shared API ledger)."""

    specs: dict[str, PipelineSpec]
    store: Any
    loads: LoadWork
    _sources: dict[str, Source] = field(default_factory=dict)
    _source_calls: dict[str, runcalls.CallTally] = field(default_factory=dict)  # per pipeline, last reported
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    read_records: int = 0  # staged by this worker
    job_records: int = 0  # written or dead-lettered through remote jobs this worker ran

    async def read(self, item: ReadStream) -> int:
        """Stage the item's stream from where its read stands; the records staged."""
        async with hold(self.store, f"read:{item.pipeline}:{item.stream}", f"read {item.stream}") as lock:
            mark = read_mark(item.run_id, item.stream)
            if await asyncio.to_thread(self.store.get_mark, item.pipeline, mark):
                return 0  # read to its end by another delivery of this item
            if not await self._run_goes_on(item.run_id, item):
                return 0
            source = await self._source(item.pipeline)
            if item.stream not in source.streams:
                raise PermanentWorkError(f"pipeline {item.pipeline!r} has no source stream {item.stream!r}")

            def still_held(_n: int) -> None:
                if lock is not None and not lock.held():
                    raise WorkLockLost(f"read of {item.stream}: the session holding its lock ended")

            intake = Intake(self.store, item.pipeline, item.run_id, still_held)
            log.info("worker.read", stream=item.stream, run_id=item.run_id)
            try:
                count = await intake.read_stream(source, item.stream)
            except ReadSuperseded as exc:
                # A later run saved the stream's read state (its prepare or its reader): this item's run is over
                # (its coordinator was killed). Its page was refused whole; settled undone, never retried.
                log.info("worker.read_superseded", stream=item.stream, run_id=item.run_id, error=str(exc))
                return 0
            finally:
                # Before the done mark: the coordinator that sees the stream read sees its calls too.
                tally = self._source_calls.setdefault(item.pipeline, runcalls.CallTally())
                await runcalls.report_source(self.store, item.run_id, tally, source)
            # Done, after the last page (durable before it): the coordinator may plan this stream's records.
            await asyncio.to_thread(self.store.commit_planned, item.pipeline, item.run_id, {}, [], (mark, count + 1))
            log.info("worker.read_done", stream=item.stream, records=count, resumed=bool(intake.resumed))
            self.read_records += count
            return count

    async def job(self, item: JobLoad) -> int:
        """Collect the object's journaled jobs, then send its queued rows as a new job; rows recorded."""
        try:
            opened = await self.loads.opened(item.pipeline)
        except BudgetExhausted as exc:
            await self._pause(item, exc)
            return 0
        plan = opened.plans.get(item.object)
        if plan is None:
            raise PermanentWorkError(f"pipeline {item.pipeline!r} has no object {item.object!r}")
        async with hold(self.store, f"job:{item.pipeline}:{item.object}", f"bulk {item.object}"):
            if not await self._run_goes_on(item.run_id, item):
                return 0
            stats = RunStats(run_id=item.run_id, pipeline=item.pipeline)
            two_way = opened.two_way
            loader = Loader(self.store, item.pipeline, item.run_id, stats, opened.budget,
                            keep_digests=two_way is not None, linked=two_way.linked if two_way is not None else None)
            queued = await asyncio.to_thread(self.store.outbox_count, item.pipeline, item.object)
            log.info("worker.job", object=item.object, queued=queued, resume_only=item.resume_only)
            try:
                resumed, retried = await loader.load_by_job(opened.sink, plan, send=bool(queued) and not
                                                             item.resume_only)
            except BudgetExhausted as exc:
                # A journaled job stays journaled: the next run collects it. Nothing else is held.
                await self._pause(item, exc)
                return 0
            finally:
                # After the job's answers are recorded: the coordinator waits for this item's ack before it
                # sums the run's calls (DistributedRunner._by_job).
                await self.loads.report_calls(item.pipeline, item.run_id)
            done = stats.object(item.object).written + stats.object(item.object).dead_lettered
            log.info("worker.job_done", object=item.object, recorded=done, retried=retried,
                     resumed_job=resumed is not None)
            self.job_records += done
            return done

    async def _run_goes_on(self, run_id: int, item: ReadStream | JobLoad) -> bool:
        """Whether the item's run is still running. An item of a run that is over (its coordinator was killed and
        the next run closed it as died) is settled undone: the next run publishes its own, and a read staging
        pages while that run plans could stage a row behind its planned mark."""
        row = await asyncio.to_thread(self.store.get_run, run_id)
        if row is not None and row.status == "running":
            return True
        log.info("worker.item_of_finished_run", kind=item.kind, run_id=run_id, status=row.status if row else None)
        return False

    async def _pause(self, item: JobLoad, exc: BudgetExhausted) -> None:
        log.warning("worker.budget_exhausted", pipeline=item.pipeline, object=item.object, at="job")
        await asyncio.to_thread(self.store.note_run_paused, item.run_id, str(exc))

    async def _source(self, name: str) -> Source:
        async with self._opening:
            if name in self._sources:
                return self._sources[name]
            spec = given_spec(self.specs, name)
            source = open_source(spec.source)
            await source.__aenter__()
            # As the coordinator does before its reads: a source that selects reads only what the pipeline's
            # objects map from (the coordinator's plan expects exactly those entities).
            select_for_pipeline(source, spec.objects)
            self._sources[name] = source
            return source

    async def close(self) -> None:
        for source in self._sources.values():
            await source.__aexit__(None, None, None)
        self._sources.clear()


# -- the coordinator's side ----------------------------------------------------------------------------------


@dataclass
class CoordinatorLink:
    """What the coordinator's helpers need of the ``DistributedRunner``: its store, bus and run, and callbacks."""

    store: Any
    bus: JetStreamBus
    pipeline: str
    run_token: str
    keep_lock: Callable[[], None]
    on_staged: Callable[[int], None]  # records staged since the last look (progress; the run's first progress)


async def read_over_bus(link: CoordinatorLink, source: Source, run_id: int, stats: RunStats) -> None:
    """Every stream of ``source`` read by workers into staging, all at once; returns when all are read to their
    end (the two-way path: it plans after every read anyway)."""
    intake = Intake(link.store, link.pipeline, run_id)
    await intake.prepare(source)  # the source's reads started together, their states durable before any item
    for stream, count in (await read_streams_over_bus(link, run_id, list(source.streams))).items():
        stats.source_records[stream] = count


async def read_streams_over_bus(link: CoordinatorLink, run_id: int, streams: Sequence[str]) -> dict[str, int]:
    """``streams`` read by workers into staging (one ``ReadStream`` item each, up to ``READ_ROUNDS`` rounds);
    returns the records staged per stream once every one is read to its end. ``Intake.prepare`` must have run."""
    store = link.store
    for attempt in range(1, READ_ROUNDS + 1):
        todo = [s for s in streams if not store.get_mark(link.pipeline, read_mark(run_id, s))]
        if not todo:
            break
        for stream in todo:
            item = ReadStream(link.pipeline, run_id, stream, attempt, link.run_token)
            await _through_outages(lambda item=item: link.bus.publish(  # type: ignore[misc]
                subject_for(item, link.bus.partitions), encode(item), msg_id(item)))
        log.info("read.distributed", streams=todo, round=attempt)
        await _wait_for_reads(link, run_id, todo)
    left = [s for s in streams if not store.get_mark(link.pipeline, read_mark(run_id, s))]
    if left:
        raise RuntimeError(f"reads of {', '.join(left)} unfinished after {READ_ROUNDS} rounds of ferry workers "
                           "(see `ferry dlq` for their work items' errors); the next run continues them")
    return {s: max(0, store.get_mark(link.pipeline, read_mark(run_id, s)) - 1) for s in streams}


async def wait_for_no_reader(link: CoordinatorLink, streams: Sequence[str]) -> None:
    """Until no worker holds the read lock of any of ``streams``. A reader still staging would make a plan unsafe
    (a staging row's ``seq`` is assigned at insert, not at commit: a plan beside it could pass a row not committed
    yet and never plan it). This run's readers of these streams are done (their marks come last); a reader of a
    run that is over (its coordinator killed mid-read) may still be staging until its next page's check."""
    held = getattr(link.store, "work_held", None)
    if held is None:
        return  # a store without work locks: one process, no other reader
    waited = False
    while any([await asyncio.to_thread(held, f"read:{link.pipeline}:{s}") for s in streams]):
        if not waited:
            log.info("read.waits_for_reader", streams=list(streams))
            waited = True
        link.keep_lock()
        await asyncio.sleep(LOCK_POLL_SECONDS)


async def _wait_for_reads(link: CoordinatorLink, run_id: int, streams: Sequence[str]) -> None:
    """Until every stream in ``streams`` is read, or no item of the pipeline is left on the bus (a round lost to
    dead letters: the caller publishes again). Reports staged records as progress meanwhile."""
    store, token = link.store, subject_token(link.pipeline)
    staged = store.staged_count(link.pipeline)
    idle_since = counted_at = time.monotonic()
    away_since: float | None = None
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            link.keep_lock()
            pending = [s for s in streams if not store.get_mark(link.pipeline, read_mark(run_id, s))]
            now_staged = staged
            if not pending or time.monotonic() - counted_at >= PROGRESS_SECONDS:
                now_staged, counted_at = store.staged_count(link.pipeline), time.monotonic()
            waiting = (await link.bus.depth()).get(token, 0) if pending else 0
        except Exception as exc:
            # PostgreSQL or NATS restarting: the workers' reads wait for them; so does this run.
            if not getattr(exc, "retryable", False) or (away_since and time.monotonic() - away_since > OUTAGE_SECONDS):
                raise
            away_since = away_since or time.monotonic()
            continue
        away_since = None
        if now_staged > staged:
            link.on_staged(now_staged - staged)
            staged, idle_since = now_staged, time.monotonic()
        if not pending or waiting == 0:
            return
        if time.monotonic() - idle_since > IDLE_WARNING_SECONDS:
            log.warning("read.no_progress", streams=pending, queued_items=waiting,
                        hint="is a `ferry worker` running with this pipeline file?")
            idle_since = time.monotonic()


async def _through_outages(call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.monotonic()
    while True:
        try:
            return await call()
        except Exception as exc:
            if not getattr(exc, "retryable", False) or time.monotonic() - started > OUTAGE_SECONDS:
                raise
            log.warning("read.server_away", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1.0)


def choose_for_workers(sink: Sink, obj: str, count: int) -> StrategyChoice:
    """The strategy of an object's load over workers: a remote job when the pipeline forces one
    (``bulk_threshold``) or the budget left cannot pay for the direct calls; else the cheapest direct strategy,
    even where a job would take fewer calls, because direct batches spread over every worker while a job runs on
    one (bench/RESULTS.md: the load is latency-bound, and workers scale it)."""
    costs = sink.write_costs(obj, count)
    left = sink.budget_left()
    full = choose_write(costs, remaining_calls=left)
    forced = next((c for c in costs if c.forced and c.unavailable is None), None)
    if not full.remote_job or (forced is not None and forced.remote_job):
        return full
    direct_costs = [c for c in costs if not c.remote_job]
    if not direct_costs:
        return full
    direct = choose_write(direct_costs, remaining_calls=left)
    if left is not None and direct.estimated_calls > left:
        return full  # the budget cannot pay for the direct calls: the job it can pay for
    direct.reason += f"; spread over the workers instead of one {full.strategy} job (bulk_threshold forces a job)"
    return direct


async def publish_job(link: CoordinatorLink, run_id: int, obj: str, strategy: str, *, resume_only: bool) -> int:
    """One ``JobLoad`` item for ``obj``; returns 1 (the items published)."""
    item = JobLoad(link.pipeline, run_id, obj, strategy, resume_only, link.run_token)
    await link.bus.publish(subject_for(item, link.bus.partitions), encode(item), msg_id(item))
    log.info("load.job_item", object=obj, strategy=strategy, resume_only=resume_only)
    return 1
