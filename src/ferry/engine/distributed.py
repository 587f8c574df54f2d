"""Distributed runs: a coordinator (``ferry run`` with a bus) and the load work ``ferry worker`` processes do.

The coordinator is an ordinary run (the pipeline's lock, the run row, prepare, plan into the outbox and the
DLQ: the embedded code, against the shared PostgreSQL store) that neither reads the source nor writes to the target
itself. For each object, once its parents' loads are done, it publishes ``LoadBatch`` items covering the
object's outbox and waits until the outbox of that object is drained: every row written, dead-lettered, or
(after the last round) left queued for the next run. Workers take the items from the bus; an item is a claim
ticket for up to ``len(rows)`` outbox rows of its object: the worker claims the rows it names, and others to make
up the number when some are gone or held, that no live lease covers (``claim_outbox``, ``FOR UPDATE SKIP
LOCKED``), writes them through the sink and records the answers as the embedded loader does
(``Loader.reconcile``: written rows leave the outbox at the version sent, failures are retried or dead-lettered
by the row's own attempt count). Correctness rests on the store, not on the bus: a worker killed mid-send leaves
its rows leased; the lease runs out, its item comes back after the ack wait, and a row no item covered goes out
in the coordinator's next round. A record sent twice (a worker killed between the target's answer and the
commit) is an upsert by external id on the target: it lands once.

The reads are workers' work too: one ``ReadStream`` item per stream, staged page by page with its read state; the
coordinator plans once every stream is read (engine/distjobs.py).

An object that must go through a remote job (Bulk API 2.0: ``bulk_threshold``, or a budget too small for the
direct calls; where a job would only take fewer calls, direct batches spread over the workers) is one ``JobLoad``
item instead: one worker runs the embedded journaled job path, and what the job leaves queued goes out in the
next rounds as ``LoadBatch`` items (engine/distjobs.py).

Not distributed yet (said in docs/distributed.md): planning (the coordinator maps and validates), a stream split
into slices read by several workers at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from ferry.bus.jetstream import JetStreamBus, JetStreamSettings
from ferry.bus.work import LoadBatch, decode, encode, msg_id, subject_for
from ferry.connectors.registry import open_sink
from ferry.core.bus import BusMessage, PermanentWorkError, subject_token
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.ports import LetterFilter
from ferry.core.writes import StrategyChoice, choose_write
from ferry.engine.adopt import adopt_linked
from ferry.engine.budget_blocks import DEFAULT_BLOCK, BlockLedger
from ferry.engine.distjobs import CoordinatorLink, choose_for_workers, publish_job, read_over_bus
from ferry.engine.linkback import link_back
from ferry.engine.loader import Loader, RetryBudget
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan, order_plans
from ferry.engine.runner import Runner, _PhaseClock, prepare_plans
from ferry.engine.stats import RunStats
from ferry.engine.twoway import TwoWay
from ferry.errors import BudgetExhausted

log = structlog.get_logger("ferry.distributed")

LOAD_BATCH = 200  # outbox rows per work item: one Composite call's worth on Salesforce, small enough to spread
POLL_SECONDS = 0.2
EXTRA_ROUNDS = 3  # rounds beyond the retry budget for rows no worker answered (killed workers, bus dead letters)
IDLE_WARNING_SECONDS = 30.0
OUTAGE_SECONDS = 120.0  # how long a server (PostgreSQL, NATS) may stay away before the run gives up on it
T = TypeVar("T")


class DistributedRunner(Runner):
    """A run whose loads go to ``ferry worker`` processes over the bus (the store must be shared: PostgreSQL)."""

    overlaps = False  # its loads wait for the whole read (the coordinator plans once, then publishes)

    def __init__(
        self, spec: PipelineSpec, store: Any, settings: JetStreamSettings, *, batch: int = LOAD_BATCH, **kwargs: Any
    ) -> None:
        super().__init__(spec, store, **kwargs)
        self.settings = settings
        self.batch = batch
        self._bus: JetStreamBus | None = None
        self._held_lock: Any = None
        self.run_token = uuid.uuid4().hex[:12]  # names this run's items on the bus (see LoadBatch.run_token)

    async def run(self) -> RunStats:
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

    async def _extract(self, source: Source, run_id: int, stats: RunStats) -> None:
        """The read, by workers: one ``ReadStream`` item per stream (engine/distjobs.py)."""
        self.progress.phase("read (workers)", None)
        await read_over_bus(self._link(run_id), source, run_id, stats)

    def _link(self, run_id: int) -> CoordinatorLink:
        return CoordinatorLink(self.store, self.bus, self.pipeline, self.run_token, self._keep_lock,
                               lambda n: self._on_page(run_id, n))

    async def _plan_and_load(
        self, source: Source, sink: Sink, plans: list[ObjectPlan], stats: RunStats, loader: Loader, clock: _PhaseClock
    ) -> None:
        # The embedded path (runner._plan_and_load) with each object's load handed out instead of done here.
        run_id = stats.run_id
        last_seq = self.store.max_staged_seq(self.pipeline)
        self._plan_records(source, plans, run_id, stats)
        analyze = getattr(self.store, "analyze_outbox", None)
        if analyze is not None:
            analyze()  # the planner's statistics of the outbox just filled: claims by key use the index
        clock.lap("plan")
        stats.adopted = await adopt_linked(sink, self.store, self.pipeline, plans, self.two_way)
        await self._load_by_dependencies(sink, plans, stats, clock)
        stats.linked_back = await link_back(source, self.store, self.pipeline, plans)
        self.store.clear_staging(self.pipeline, last_seq)
        clock.lap("finish")

    async def _load_by_dependencies(
        self, sink: Sink, plans: list[ObjectPlan], stats: RunStats, clock: _PhaseClock
    ) -> None:
        """Each object's load starts as soon as every object it references is loaded, not after every object
        before it in ``order_plans``: Account and Product2 go out together, then Contact and PricebookEntry...
        Parents still reach the target before their children (a child waits for each of its parents' loads,
        and its orphans are dead-lettered after them, as in the embedded run)."""
        ordered = order_plans(plans)
        names = {p.name for p in ordered}
        done = {p.name: asyncio.Event() for p in ordered}

        async def load(plan: ObjectPlan) -> None:
            for parent in {ref.object for ref in plan.parents if ref.object in names and ref.object != plan.name}:
                await done[parent].wait()
            self._drop_orphans(plan, stats.run_id, stats)
            await self._load_over_bus(sink, plan, stats)
            clock.lap(f"load {plan.name}")  # loads overlap: each lap is the time since the previous one ended
            done[plan.name].set()

        # The first failed load is the run's error, as it was one object at a time; it cancels the others (a
        # child never waits for a parent that will not finish).
        tasks = [asyncio.create_task(load(plan)) for plan in ordered]
        try:
            for next_done in asyncio.as_completed(tasks):
                await next_done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _load_over_bus(self, sink: Sink, plan: ObjectPlan, stats: RunStats) -> None:
        s = stats.object(plan.name)
        total = self.store.outbox_count(self.pipeline, plan.name)
        if total == 0:
            s.strategy, s.reason = "-", "nothing to write"
            return
        # Direct batches over the workers, a remote job (one item, one worker) only when forced or the budget needs it.
        choice = choose_for_workers(sink, plan.name, total)
        s.strategy, s.reason = f"{choice.strategy} (workers)", f"{choice.reason}; written by ferry workers"
        # Letters this load opened: last seen from now on (a count of open letters before and after would go
        # down when a row with an old letter is written at last, and make the figure negative). The workers
        # stamp them with their clocks: a figure, as exact as the machines' clocks agree.
        since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.progress.phase(f"write {plan.name} ({choice.strategy}, workers)", total)
        log.info("load.distributed", object=plan.name, records=total, strategy=choice.strategy)
        rounds = self.budget.max_attempts + EXTRA_ROUNDS
        left = total
        if self.store.remote_jobs(self.pipeline, plan.name):
            # Jobs an earlier run journaled are collected (by one worker) before any of these rows goes out again.
            await _through_outages(functools.partial(publish_job, self._link(stats.run_id), stats.run_id, plan.name,
                                                     str(choice.strategy), resume_only=True))
            left = await self._wait_for_round(plan.name, left)
        # Retries after a remote job go record by record through the direct strategies, as in the embedded loader.
        direct = direct_write(sink, plan.name, total).strategy if choice.remote_job else choice.strategy
        for attempt in range(1, rounds + 1):
            # A round published again after an outage is the same items (same msg ids): the bus keeps them once.
            publish = (
                functools.partial(publish_job, self._link(stats.run_id), stats.run_id, plan.name,
                                  str(choice.strategy), resume_only=False)
                if attempt == 1 and choice.remote_job
                else functools.partial(self._publish_round, plan.name, str(direct), stats.run_id, attempt)
            )
            published = await _through_outages(publish)
            left = await self._wait_for_round(plan.name, left)
            log.info("load.round", object=plan.name, attempt=attempt, items=published, left=left)
            if left == 0:
                break
            self._pause_if_budget_spent(stats.run_id)
            await asyncio.sleep(self.budget.pause(attempt))
        letters = self.store.count_matching_letters(LetterFilter(self.pipeline, plan.name, since=since))
        s.dead_lettered += letters  # added to the planner's (invalid records), as the embedded loader does
        # Never below 0: it feeds a metrics counter, which refuses to go down (and would fail a finished run).
        s.written = max(0, total - left - letters)
        if left:
            raise RuntimeError(
                f"{plan.name}: {left} records still queued after {rounds} rounds of ferry workers "
                "(are workers running with this pipeline?); the next run sends them"
            )

    def _pause_if_budget_spent(self, run_id: int) -> None:
        """A worker found the API budget spent (``note_run_paused``): the run pauses as an embedded one does
        (exit 5); what is still queued stays in the outbox for the next run."""
        row = self.store.get_run(run_id)
        if row is not None and row.error:
            raise BudgetExhausted(f"in a ferry worker: {row.error}")

    async def _publish_round(self, obj: str, strategy: str, run_id: int, attempt: int) -> int:
        """One item per ``batch`` queued rows (their keys and versions name the item, for the bus's dedup)."""
        published = 0
        for rows in self.store.outbox(self.pipeline, obj, chunk=self.batch, with_source=False):
            item = LoadBatch(self.pipeline, run_id, obj, tuple((r.key, r.version) for r in rows), strategy, attempt,
                             self.run_token)
            await self.bus.publish(subject_for(item, self.bus.partitions), encode(item), msg_id(item))
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
        """(rows queued, items on the bus, rows under a live lease), the lock checked on the way."""
        self._keep_lock()
        now_left = self.store.outbox_count(self.pipeline, obj)
        if now_left == 0:
            return 0, 0, 0
        waiting = (await self.bus.depth()).get(token, 0)
        return now_left, waiting, _leased(self.store, self.pipeline, obj)


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
class _OpenPipeline:
    sink: Sink
    plans: dict[str, ObjectPlan]
    budget: RetryBudget
    two_way: TwoWay | None = None  # a two-way pipeline's digests and links (engine/twoway.py)


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
        claim = await asyncio.to_thread(
            self.store.claim_outbox, item.pipeline, item.object, len(item.rows), self.lease_seconds,
            keys=[key for key, _version in item.rows],
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
            results = await opened.sink.upsert(
                plan.name, plan.external_id, [r.payload for r in claim.rows], item.strategy, target_ids=target_ids,
            )
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

    async def opened(self, name: str) -> _OpenPipeline:
        """The pipeline's sink and plans, opened once for the worker's life (shared with engine/distjobs.py)."""
        return await self._pipeline(name)

    async def _pipeline(self, name: str) -> _OpenPipeline:
        async with self._opening:
            if name in self._open:
                return self._open[name]
            spec = self.specs.get(name)
            if spec is None:
                raise PermanentWorkError(
                    f"this worker was not given pipeline {name!r}: start every worker with the same pipeline files"
                )
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
