"""Distributed runs: a coordinator (``ferry run`` with a bus) and the load work ``ferry worker`` processes do.

The coordinator is an ordinary run (the pipeline's lock, the run row, prepare, plan into the outbox and the DLQ:
the embedded code, against the shared PostgreSQL store) that neither reads the source nor writes to the target
itself: workers read each stream (a ``ReadStream`` item, engine/distjobs.py) and load. It reads, plans and loads at
once (engine/overlap.py's first rule: an object's rows go out once every
stream feeding it is read and planned), and publishes ``LoadBatch`` items row by row (engine/distflow.py): a row
goes out once the parent rows it references have their answers recorded, then each object's leftovers go in
rounds until its outbox is drained: every row written, dead-lettered, or (after the last round) left queued for
the next run. Workers take the items from the bus; an item is a claim ticket for up to ``len(rows)`` outbox rows
of its object: the worker claims the rows it names (an ``exact`` item: only those), or for a round's item also
others to make up the number when some are gone or held, that no live lease covers (``claim_outbox``, ``FOR
UPDATE SKIP LOCKED``), writes them through the sink and records the answers as the embedded loader does
(``Loader.reconcile``: written rows leave the outbox at the version sent, failures are retried or dead-lettered
by the row's own attempt count). Correctness rests on the store, not on the bus: a worker killed mid-send leaves
its rows leased; the lease runs out, its item comes back after the ack wait, and a row no item covered goes out
in the coordinator's next round. A record sent twice (a worker killed between the target's answer and the
commit) is an upsert by external id on the target: it lands once.

An object that must go through a remote job (Bulk API 2.0: ``bulk_threshold``, or a budget too small for the
direct calls; where a job would only take fewer calls, direct batches spread over the workers) stays out of the row
by row flow: once its parents are done it is one ``JobLoad`` item (one worker runs the embedded journaled job path),
and what the job leaves queued goes out in the next rounds as ``LoadBatch`` items (engine/distjobs.py). So is an
object with jobs an earlier run journaled: they are collected before any of its rows goes out again.

Not distributed yet (said in docs/distributed.md): planning (the coordinator maps and validates, after each
stream's read), a stream split into slices read by several workers at once.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from ferry.bus.jetstream import JetStreamBus, JetStreamSettings
from ferry.bus.work import LoadBatch, decode, encode, msg_id
from ferry.connectors.registry import open_sink
from ferry.core.bus import BusMessage, PermanentWorkError, subject_token, work_subject
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.ports import LetterFilter
from ferry.core.writes import StrategyChoice, choose_write
from ferry.engine import runcalls
from ferry.engine.adopt import adopt_linked
from ferry.engine.budget_blocks import DEFAULT_BLOCK, BlockLedger
from ferry.engine.distflow import LoadFlow
from ferry.engine.distjobs import (
    CoordinatorLink,
    choose_for_workers,
    given_spec,
    publish_job,
    read_over_bus,
    read_streams_over_bus,
    wait_for_no_reader,
)
from ferry.engine.intake import Intake
from ferry.engine.linkback import link_back
from ferry.engine.loader import Loader, RetryBudget
from ferry.engine.overlap import streams_feeding
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan
from ferry.engine.runner import Runner, _NoProgress, _PhaseClock, prepare_plans
from ferry.engine.stats import RunStats
from ferry.engine.together import run_together
from ferry.engine.twoway import TwoWay
from ferry.errors import BudgetExhausted

log = structlog.get_logger("ferry.distributed")

LOAD_BATCH = 200  # outbox rows per work item: one Composite call's worth on Salesforce, small enough to spread
POLL_SECONDS = 0.2
EXTRA_ROUNDS = 3  # rounds beyond the retry budget for rows no worker answered (killed workers, bus dead letters)
IDLE_WARNING_SECONDS = 30.0
OUTAGE_SECONDS = 120.0  # how long a server (PostgreSQL, NATS) may stay away before the run gives up on it
SETTLE_SECONDS = 10.0  # how long a recorded job's item may take to be acknowledged (its calls reported)
T = TypeVar("T")


class DistributedRunner(Runner):
    """A run whose loads go to ``ferry worker`` processes over the bus (the store must be shared: PostgreSQL)."""

    overlaps = True  # its loads start while other streams are read (``_overlapped``)

    def __init__(
        self, spec: PipelineSpec, store: Any, settings: JetStreamSettings, *, batch: int = LOAD_BATCH, **kwargs: Any
    ) -> None:
        super().__init__(spec, store, **kwargs)
        self.settings = settings
        self.batch = batch
        self._bus: JetStreamBus | None = None
        self._held_lock: Any = None
        self._sink: Sink | None = None
        self._stats: RunStats | None = None
        self._flow: LoadFlow | None = None
        self._tokens: dict[str, str] = {}  # object subject token -> object name
        self._choices: dict[str, StrategyChoice] = {}  # object -> its write choice (a remote job: one JobLoad)
        self._journaled: set[str] = set()  # objects with remote jobs an earlier run journaled: collected first
        self._next_partition = 0  # items go round the partitions: each partition's in-flight bound is used evenly
        self.run_token = uuid.uuid4().hex[:12]  # names this run's items on the bus (see LoadBatch.run_token)
        self._own = _OwnCalls()

    async def run(self) -> RunStats:
        self._own = _OwnCalls()  # this run's source and sink are opened afresh: their counters start at 0
        async with JetStreamBus(self.settings) as bus:
            await bus.setup()
            self._bus = bus
            try:
                return await super().run()
            finally:
                self._bus = None

    def _lock(self) -> Any:
        self._held_lock = super()._lock()  # kept: a server restart drops it, ``_keep_lock`` takes it again
        return self._held_lock

    def _keep_lock(self) -> None:
        keep = getattr(self._held_lock, "keep", None)
        if keep is not None:
            keep()

    @property
    def bus(self) -> JetStreamBus:
        assert self._bus is not None, "the bus is connected by run()"
        return self._bus

    async def _prepare(self, sink: Sink, stats: RunStats | None) -> list[ObjectPlan]:
        plans = await super()._prepare(sink, stats)
        self._own.sink, self._own.objects = sink, {p.name for p in plans}
        if stats is not None:
            await self._report_own(stats.run_id)  # the describe
        return plans

    async def _report_own(self, run_id: int, source: Source | None = None) -> None:
        """The coordinator's own calls so far into the run's shared tally (engine/runcalls.py): a coordinator
        killed mid-run leaves them counted for its ``died`` row. Before each hand-over to the workers."""
        own = self._own
        if source is not None:
            own.note(await runcalls.report_source(self.store, run_id, own.source_tally, source))
        sink, objects = own.sink, own.objects
        if sink is not None:
            own.note(await runcalls.report_sink(self.store, run_id, own.sink_tally, sink, objects))

    async def _extract(self, source: Source, run_id: int, stats: RunStats) -> None:
        """The read, by workers: one ``ReadStream`` item per stream, all at once (engine/distjobs.py)."""
        await self._report_own(run_id, source)
        self.progress.phase("read (workers)", None)
        await read_over_bus(self._link(run_id), source, run_id, stats)

    def _link(self, run_id: int) -> CoordinatorLink:
        return CoordinatorLink(self.store, self.bus, self.pipeline, self.run_token, self._keep_lock,
                               lambda n: self._on_page(run_id, n))

    async def _plan_and_load(
        self, source: Source, sink: Sink, plans: list[ObjectPlan], stats: RunStats, loader: Loader, clock: _PhaseClock
    ) -> None:
        # The embedded path (runner._plan_and_load) with the loads handed out: every object open at once.
        run_id = stats.run_id
        last_seq = self.store.max_staged_seq(self.pipeline)
        self._plan_records(source, plans, run_id, stats)
        self._analyze()
        clock.lap("plan")
        stats.adopted = await adopt_linked(sink, self.store, self.pipeline, plans, self.two_way)
        await self._report_own(run_id, source)
        flow = self._start_flow(sink, plans, stats)
        flow.open(p.name for p in plans)
        await flow.run()
        clock.lap("load")
        stats.linked_back = await link_back(source, self.store, self.pipeline, plans)
        self.store.clear_staging(self.pipeline, last_seq)
        clock.lap("finish")

    async def _overlapped(
        self, source: Source, sink: Sink, plans: list[ObjectPlan], stats: RunStats, loader: Loader, clock: _PhaseClock
    ) -> None:
        """Read, plan and the workers' loads at once: an object opens to the flow (engine/distflow.py) once every
        stream feeding it is read to its end and planned (engine/overlap.py's first rule), while the next streams
        are read; its rows then go out as their parents' rows are written."""
        if self.two_way is not None:
            # Two-way: the peer's records are adopted (engine/adopt.py) once everything is planned: strict order.
            await self._extract(source, stats.run_id, stats)
            clock.lap("read")
            await self._plan_and_load(source, sink, plans, stats, loader, clock)
            return
        run_id = stats.run_id
        link = self._link(run_id)

        def plan_staged() -> None:
            self._plan_records(source, plans, run_id, stats, _NoProgress())

        await Intake(self.store, self.pipeline, run_id).prepare(source)  # states durable before any read item
        await self._report_own(run_id, source)
        feeding = streams_feeding(source, plans)
        flow = self._start_flow(sink, plans, stats)

        async def reads() -> None:
            # Workers read the streams one after the other (a ReadStream item each), as overlap.py reads them,
            # and the coordinator plans after each stream's done mark, before the next item goes out. Safe: no
            # read is in flight while it plans (a staging row's seq is assigned at insert, not at commit, so a
            # plan beside a reader could pass a row not committed yet and never plan it; engine/distjobs.py).
            # A reader a killed run left on a stream not read yet is waited for too (wait_for_no_reader).
            read: set[str] = set()
            for stream in source.streams:
                self.progress.phase(f"read {stream} (workers)", None)
                counts = await read_streams_over_bus(link, run_id, [stream])
                stats.source_records[stream] = counts[stream]
                # The streams read so far are marked: a lock still held on one of them is its reader finishing,
                # or a second delivery that finds the mark and stages nothing. The unread ones must be free.
                await wait_for_no_reader(link, [s for s in source.streams if s != stream and s not in read])
                plan_staged()
                read.add(stream)
                opened = [p.name for p in plans if feeding[p.name] & set(source.streams) <= read]
                if opened:
                    await asyncio.to_thread(self._analyze)  # claims by key use the index (analyze_outbox)
                flow.open(opened)
            plan_staged()  # with no stream to read, what an earlier run staged is still planned
            flow.open(p.name for p in plans)
            clock.lap("read+plan")  # the loads that overlapped it are in here too; the rest is "load after read"

        await run_together([reads(), flow.run()])
        clock.lap("load after read")
        last_seq = self.store.max_staged_seq(self.pipeline)
        stats.linked_back = await link_back(source, self.store, self.pipeline, plans)
        clock.lap("link back")
        self.store.clear_staging(self.pipeline, last_seq)
        clock.lap("finish")

    def _analyze(self) -> None:
        analyze = getattr(self.store, "analyze_outbox", None)
        if analyze is not None:
            analyze()  # the planner's statistics of the outbox just filled: claims by key use the index

    def _start_flow(self, sink: Sink, plans: list[ObjectPlan], stats: RunStats) -> LoadFlow:
        self._sink, self._stats = sink, stats
        self._tokens = {subject_token(p.name): p.name for p in plans}
        self._flow = LoadFlow(self, plans, self.batch, outage_seconds=OUTAGE_SECONDS)
        return self._flow

    # -- what the flow asks of the run (distflow.FlowHost) ---------------------------------------------------------

    def strategy(self, plan: ObjectPlan, total: int) -> str:
        """The object's write strategy (the cheapest direct one), noted in the run's stats."""
        assert self._sink is not None and self._stats is not None
        s = self._stats.object(plan.name)
        if total == 0:
            s.strategy, s.reason = "-", "nothing to write"
            return "auto"
        # Direct batches over the workers; a remote job (one item, one worker) only when forced or the budget needs
        # it, or jobs an earlier run journaled must be collected first: then the object stays out of the flow.
        choice = choose_for_workers(self._sink, plan.name, total)
        self._choices[plan.name] = choice
        if self.store.remote_jobs(self.pipeline, plan.name):
            self._journaled.add(plan.name)
        s.strategy, s.reason = f"{choice.strategy} (workers)", f"{choice.reason}; written by ferry workers"
        return str(choice.strategy)

    def by_job(self, obj: str) -> bool:
        """Whether ``obj`` goes as a ``JobLoad`` (in ``finish``, its parents done) instead of row by row."""
        choice = self._choices.get(obj)
        return obj in self._journaled or (choice is not None and choice.remote_job)

    def opened(self, plan: ObjectPlan, strategy: str, total: int) -> Any:
        """A bar of its own for an object the flow opened (several load at once, beside the reads)."""
        part = self._part_progress()
        part.phase(f"send {plan.name} to workers ({strategy})", total)
        return part

    def closed(self, progress: Any) -> None:
        finish = getattr(progress, "finish", None)
        if callable(finish) and progress is not self.progress:
            finish()

    async def publish(
        self, obj: str, strategy: str, rows: Sequence[tuple[str, str]], attempt: int, *, exact: bool
    ) -> None:
        assert self._stats is not None
        item = LoadBatch(self.pipeline, self._stats.run_id, obj, tuple(rows), strategy, attempt, self.run_token,
                         exact)
        # Round the partitions, not by key: a load item needs no order (claims and the version map guard each
        # row), and a partition holds at most max_ack_pending items in flight across all workers.
        partition = self._next_partition % self.bus.partitions
        self._next_partition += 1
        # Published again after an outage it is the same item (same msg id): the bus keeps it once.
        await _through_outages(functools.partial(
            self.bus.publish, work_subject(self.pipeline, obj, partition), encode(item), msg_id(item)))

    @property
    def in_flight(self) -> int:
        """Work items every worker together holds at most: each partition's consumer lets ``max_ack_pending``
        out unacknowledged (docs/distributed.md, "Tuning")."""
        return self.settings.max_ack_pending * self.settings.partitions

    async def object_depths(self) -> dict[str, int]:
        by_token = await self.bus.depth_by_object(subject_token(self.pipeline))
        return {self._tokens.get(token, token): count for token, count in by_token.items()}

    def keep_lock(self) -> None:
        self._keep_lock()

    def check_paused(self) -> None:
        assert self._stats is not None
        self._pause_if_budget_spent(self._stats.run_id)

    async def finish(self, plan: ObjectPlan, strategy: str) -> int:
        """An object's rounds once the flow is settled for it and its parents are done: what it still has queued
        goes out again (parents first: their rounds are over), then its figures. Returns the rows left."""
        assert self._stats is not None and self._flow is not None
        stats, flow = self._stats, self._flow.objects[plan.name]
        left = await asyncio.to_thread(self.store.outbox_count, self.pipeline, plan.name)
        if left:
            # Its parents' rounds may have dead-lettered what its leftovers reference. Counted below, with the
            # object's other letters since it opened: not in these throwaway stats.
            self._drop_orphans(plan, stats.run_id, RunStats(run_id=stats.run_id, pipeline=self.pipeline))
            left = await asyncio.to_thread(self.store.outbox_count, self.pipeline, plan.name)
        if self.by_job(plan.name):
            left, strategy = await self._by_job(plan, strategy, left)
        if left:
            left = await self._rounds(plan.name, strategy, stats.run_id, left)
        s = stats.object(plan.name)
        letters = self.store.count_matching_letters(LetterFilter(self.pipeline, plan.name, since=flow.since)) \
            if flow.since else 0
        s.dead_lettered += letters  # added to the planner's (invalid records), as the embedded loader does
        # Never below 0: it feeds a metrics counter, which refuses to go down (and would fail a finished run).
        s.written = max(0, flow.total - left - letters)
        log.info("load.object_done", object=plan.name, records=flow.total, left=left, items=flow.published)
        if left:
            raise RuntimeError(
                f"{plan.name}: {left} records still queued after {self.budget.max_attempts + EXTRA_ROUNDS} rounds "
                "of ferry workers (are workers running with this pipeline?); the next run sends them"
            )
        return left

    async def _by_job(self, plan: ObjectPlan, strategy: str, left: int) -> tuple[int, str]:
        """An object the flow held back: the jobs an earlier run journaled collected (one ``JobLoad`` that sends
        nothing), then, when its choice is a remote job, its queued rows as one new job. Returns the rows still
        queued and the direct strategy of the rounds after (a job's retries go record by record, as in the
        embedded loader)."""
        assert self._sink is not None and self._stats is not None
        run_id, obj = self._stats.run_id, plan.name
        link = self._link(run_id)
        if obj in self._journaled:
            await _through_outages(functools.partial(publish_job, link, run_id, obj, strategy, resume_only=True))
            left = await self._wait_for_round(obj, left)
            await self._until_acknowledged(obj)
        choice = self._choices.get(obj)
        if left and choice is not None and choice.remote_job:
            self._pause_if_budget_spent(run_id)
            await _through_outages(functools.partial(publish_job, link, run_id, obj, strategy, resume_only=False))
            left = await self._wait_for_round(obj, left)
            await self._until_acknowledged(obj)
            log.info("load.job_round", object=obj, left=left)
        return left, str(direct_write(self._sink, obj, max(left, 1)).strategy)

    async def _until_acknowledged(self, obj: str) -> None:
        """Until the object's ``JobLoad`` has left the bus (up to ``SETTLE_SECONDS``): its rows can be recorded
        before the worker reports the job's calls (engine/runcalls.py), which it does before the item's ack."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while (await self.object_depths()).get(obj, 0) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)

    def _add_helpers_calls(self, stats: RunStats) -> None:
        """The workers' API calls for this run (the shared ``run_calls``, less the coordinator's own reports, which
        its figures hold already) added to the coordinator's own; the tally summed is noted with the figures."""
        try:
            calls = self.store.run_calls(stats.run_id)
        except Exception as exc:  # the run's outcome matters more than its figures: still finished
            log.warning("run.worker_calls_unknown", error=f"{type(exc).__name__}: {exc}")
            # Of the tally, the figures hold only this process's reports: readers add the workers' later.
            stats.run_calls_counted = dict(self._own.reported)
            return
        runcalls.add_to_stats(stats, {part: n - self._own.reported.get(part, 0) for part, n in calls.items()})
        stats.run_calls_counted = calls

    async def _rounds(self, obj: str, strategy: str, run_id: int, left: int) -> int:
        """Rounds 2.. (the flow was the first): every queued row of ``obj`` in items, until none is left or the
        rounds are spent; the retry budget's pause before each. Returns the rows still queued."""
        rounds = self.budget.max_attempts + EXTRA_ROUNDS
        for attempt in range(2, rounds + 1):
            self._pause_if_budget_spent(run_id)
            await asyncio.sleep(self.budget.pause(attempt - 1))
            published = await _through_outages(functools.partial(self._publish_round, obj, strategy, attempt))
            left = await self._wait_for_round(obj, left)
            log.info("load.round", object=obj, attempt=attempt, items=published, left=left)
            if left == 0:
                break
        return left

    def _pause_if_budget_spent(self, run_id: int) -> None:
        """A worker found the API budget spent (``note_run_paused``): the run pauses as an embedded one does
        (exit 5); what is still queued stays in the outbox for the next run."""
        row = self.store.get_run(run_id)
        if row is not None and row.error:
            raise BudgetExhausted(f"in a ferry worker: {row.error}")

    async def _publish_round(self, obj: str, strategy: str, attempt: int) -> int:
        """One item per ``batch`` queued rows (their keys and versions name the item, for the bus's dedup)."""
        published = 0
        for rows in self.store.outbox(self.pipeline, obj, chunk=self.batch, with_source=False):
            await self.publish(obj, strategy, [(r.key, r.version) for r in rows], attempt, exact=False)
            published += 1
        return published

    async def _wait_for_round(self, obj: str, left: int) -> int:
        """Until the round's items are all answered (none on the bus) and no live lease holds a row; reports
        progress from the shared outbox meanwhile. Returns the rows still queued."""
        token = subject_token(self.pipeline)
        idle_since = time.monotonic()
        away_since: float | None = None
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                now_left, waiting, leased = await self._look(obj, token)
            except Exception as exc:
                # PostgreSQL or NATS restarting: the workers' items and leases wait for them; so does this run.
                if not _retryable(exc) or (away_since and time.monotonic() - away_since > OUTAGE_SECONDS):
                    raise
                if away_since is None:
                    away_since = time.monotonic()
                    log.warning("load.server_away", object=obj, error=f"{type(exc).__name__}: {exc}")
                continue
            if away_since is not None:
                log.info("load.server_back", object=obj, seconds=round(time.monotonic() - away_since, 1))
                away_since = None
            if now_left < left:
                self.progress.advance(left - now_left)
                left, idle_since = now_left, time.monotonic()
            if left == 0:
                return 0
            if waiting == 0 and leased == 0:
                return left
            if time.monotonic() - idle_since > IDLE_WARNING_SECONDS:
                log.warning("load.no_progress", object=obj, left=left, queued_items=waiting,
                            hint="is a `ferry worker` running with this pipeline file?")
                idle_since = time.monotonic()

    async def _look(self, obj: str, token: str) -> tuple[int, int, int]:
        """(rows queued, items of ``obj`` on the bus, rows under a live lease), the lock checked on the way."""
        self._keep_lock()
        now_left = self.store.outbox_count(self.pipeline, obj)
        if now_left == 0:
            return 0, 0, 0
        waiting = (await self.object_depths()).get(obj, 0)
        leased = _leased(self.store, self.pipeline, obj)
        if waiting == 0 and leased == 0:
            # The last item may have been answered between the count and the bus's look: count again, or the
            # round would end with rows it has just written still counted as left (and pause for nothing).
            now_left = self.store.outbox_count(self.pipeline, obj)
        return now_left, waiting, leased


def _retryable(exc: BaseException) -> bool:
    """A store or bus error marked worth retrying (``StateUnavailable``, ``BusUnavailable``)."""
    return bool(getattr(exc, "retryable", False))


async def _through_outages(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, again after a retryable failure (a server restarting) for up to ``OUTAGE_SECONDS``."""
    started = time.monotonic()
    while True:
        try:
            return await call()
        except Exception as exc:
            if not _retryable(exc) or time.monotonic() - started > OUTAGE_SECONDS:
                raise
            log.warning("load.server_away", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1.0)


def _leased(store: Any, pipeline: str, obj: str) -> int:
    """Rows under a live claim (the shared PostgreSQL store has claims; the embedded one has none)."""
    count = getattr(store, "outbox_leased", None)
    return int(count(pipeline, obj)) if count is not None else 0


def direct_write(sink: Sink, obj: str, count: int) -> StrategyChoice:
    """The run's planner over the direct strategies (what goes out after a remote job: its retries)."""
    costs = [c for c in sink.write_costs(obj, count) if not c.remote_job]
    return choose_write(costs, remaining_calls=sink.budget_left())


@dataclass
class _OwnCalls:
    """A coordinator's own source and sink calls reported into its run's shared tally, and where each stood."""

    sink: Sink | None = None
    objects: set[str] = field(default_factory=set)  # the pipeline's objects: a sink label of one is its writes
    source_tally: runcalls.CallTally = field(default_factory=runcalls.CallTally)
    sink_tally: runcalls.CallTally = field(default_factory=runcalls.CallTally)
    reported: dict[str, int] = field(default_factory=dict)  # by part: what the tally holds of this process's

    def note(self, added: Mapping[str, int]) -> None:
        for part, n in added.items():
            self.reported[part] = self.reported.get(part, 0) + n


@dataclass
class _OpenPipeline:
    sink: Sink
    plans: dict[str, ObjectPlan]
    budget: RetryBudget
    two_way: TwoWay | None = None  # a two-way pipeline's digests and links (engine/twoway.py)
    calls: runcalls.CallTally = field(default_factory=runcalls.CallTally)  # the sink's calls last reported


@dataclass
class LoadWork:
    """The handler a ``ferry worker`` runs for each bus message: a ``LoadBatch`` of a pipeline it was given.

    Sinks are opened once per pipeline and kept for the worker's life (one sign-in, one describe); the API
    ledger is the shared store's, so every worker's calls count against the same budget."""

    specs: dict[str, PipelineSpec]
    store: Any
    lease_seconds: float
    clock: Callable[[], float] = time.time
    budget_block: int = DEFAULT_BLOCK  # API calls reserved at once from the shared ledger (budget_blocks.py)
    _open: dict[str, _OpenPipeline] = field(default_factory=dict)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ledger: BlockLedger | None = None
    done_rows: int = 0
    paused_items: int = 0  # items settled unsent because the API budget was spent

    @property
    def ledger(self) -> BlockLedger:
        if self._ledger is None:
            self._ledger = BlockLedger(self.store, self.budget_block)
        return self._ledger

    async def __call__(self, message: BusMessage) -> None:
        item = decode(message.data)
        if not isinstance(item, LoadBatch):
            raise PermanentWorkError(f"{item.kind} work items are not run by ferry workers yet")
        await self.load(item)

    async def load(self, item: LoadBatch) -> int:
        """Claim up to ``len(item.rows)`` rows of the item's object, write them, record the answers."""
        try:
            opened = await self._pipeline(item.pipeline)
        except BudgetExhausted as exc:
            # Opening the sink spends calls too (its describe): a worker whose first item comes after the share
            # is spent (counted, or reserved whole by another worker's block) pauses the run like a load does.
            # Raised, it would be retried by the bus until it became a dead letter. Nothing is claimed yet.
            await self._pause(item, exc, claim=None)
            return 0
        plan = opened.plans.get(item.object)
        if plan is None:
            raise PermanentWorkError(f"pipeline {item.pipeline!r} has no object {item.object!r}")
        # The store is synchronous (psycopg's thread-safe pool): its round trips run in threads, so one item's
        # wait on PostgreSQL does not stall the worker's other items.
        t0 = time.perf_counter()
        # An exact item (the flow's) claims only its rows: another row of the object may still wait for its
        # parent (engine/distflow.py). One statement either way: the claim returns the rows.
        claim = await asyncio.to_thread(
            self.store.claim_outbox, item.pipeline, item.object, len(item.rows), self.lease_seconds,
            keys=[key for key, _version in item.rows], fill=not item.exact,
        )
        t1 = time.perf_counter()
        if not claim.rows:
            return 0
        stats = RunStats(run_id=item.run_id, pipeline=item.pipeline)
        two_way = opened.two_way
        loader = Loader(self.store, item.pipeline, item.run_id, stats, opened.budget, keep_digests=two_way is not None,
                        linked=two_way.linked if two_way is not None else None)
        try:
            target_ids = await asyncio.to_thread(loader.target_ids, opened.sink, plan.name, claim.rows)
            t2 = time.perf_counter()
            try:
                results = await opened.sink.upsert(
                    plan.name, plan.external_id, [r.payload for r in claim.rows], item.strategy,
                    target_ids=target_ids,
                )
            finally:
                # Before the answers are recorded: a coordinator that sees them written sees their calls too.
                await self.report_calls(item.pipeline, item.run_id)
            t3 = time.perf_counter()
            await asyncio.to_thread(loader.reconcile, plan, claim.rows, results, jobs=[])
            t4 = time.perf_counter()
            log.debug("worker.item", object=item.object, rows=len(claim.rows), claim=round(t1 - t0, 3),
                      ids=round(t2 - t1, 3), write=round(t3 - t2, 3), record=round(t4 - t3, 3), at=round(t0, 3))
        except BudgetExhausted as exc:
            # Not a failure of the item: retrying cannot help before the budget's window frees calls, and a
            # dead letter would be wrong (the rows are fine). Its rows are released (they stay queued for the
            # next run), then the run is told (its coordinator pauses, exit 5) and the item is settled.
            await self._pause(item, exc, claim=claim)
            return 0
        except BaseException:
            # Rows still held (never answered, or not recorded): free for the next round at once. After a
            # recorded answer nothing is held any more (a written or dead-lettered row left the outbox, a row to
            # retry was given back by record_results, a newer version replaced its row and its lease), so the
            # release is only paid on this path: one transaction less per item.
            await asyncio.to_thread(self.store.release_outbox, item.pipeline, item.object, claim)
            raise
        self.done_rows += len(claim.rows)
        return len(claim.rows)

    async def _pause(self, item: LoadBatch, exc: BudgetExhausted, *, claim: Any) -> None:
        """The API budget is spent: the item's rows (if claimed) go back to the outbox, unsent, for the next run,
        and the run is told (its coordinator pauses, exit 5); the caller then settles the item (no dead letter)."""
        log.warning("worker.budget_exhausted", pipeline=item.pipeline, object=item.object,
                    at="open" if claim is None else "load")
        if claim is not None:
            await asyncio.to_thread(self.store.release_outbox, item.pipeline, item.object, claim)
        await asyncio.to_thread(self.store.note_run_paused, item.run_id, str(exc))
        self.paused_items += 1

    async def report_calls(self, pipeline: str, run_id: int) -> None:
        """The calls the pipeline's sink sent since the last report, added to run ``run_id``'s (runcalls.py)."""
        opened = self._open.get(pipeline)
        if opened is not None:
            await runcalls.report_sink(self.store, run_id, opened.calls, opened.sink, opened.plans)

    async def opened(self, name: str) -> _OpenPipeline:
        """The pipeline's sink and plans, opened once for the worker's life (shared with engine/distjobs.py)."""
        return await self._pipeline(name)

    async def _pipeline(self, name: str) -> _OpenPipeline:
        async with self._opening:
            if name in self._open:
                return self._open[name]
            spec = given_spec(self.specs, name)
            sink = open_sink(spec.target, SinkContext(
                name, ledger=self.ledger, clock=self.clock,
                target_ids=lambda obj, keys: self.store.target_ids(name, obj, keys),
            ))
            await sink.__aenter__()
            try:
                plans = await prepare_plans(spec, sink)
            except BaseException as exc:
                # Not kept (the next item opens it again): closed now, or its client would be left open.
                await sink.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            opened = _OpenPipeline(sink, {p.name: p for p in plans},
                                   RetryBudget(spec.retry.max_attempts, spec.retry.backoff_max_seconds),
                                   TwoWay(spec.two_way, self.store, name) if spec.two_way is not None else None)
            self._open[name] = opened
            return opened

    async def close(self) -> None:
        for opened in self._open.values():
            await opened.sink.__aexit__(None, None, None)
        self._open.clear()
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.close)  # the unused reservations back to the shared budget
