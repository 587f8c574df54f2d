"""Distributed runs: a coordinator (``ferry run`` with a bus) and the load work ``ferry worker`` processes do.

The coordinator is an ordinary run (the pipeline's lock, the run row, prepare, read into staging, plan into the
outbox and the DLQ: the embedded code, against the shared PostgreSQL store) that does not write to the target
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

Not distributed yet (said in docs/distributed.md): reads and planning (the coordinator does them), and remote
jobs (Bulk API 2.0): a distributed run writes every object through the cheapest direct strategy.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from ferry.bus.jetstream import JetStreamBus, JetStreamSettings
from ferry.bus.work import LoadBatch, decode, encode, msg_id, subject_for
from ferry.connectors.registry import open_sink
from ferry.core.bus import BusMessage, PermanentWorkError, subject_token
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.writes import StrategyChoice, choose_write
from ferry.engine.budget_blocks import DEFAULT_BLOCK, BlockLedger
from ferry.engine.linkback import link_back
from ferry.engine.loader import Loader, RetryBudget
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan, order_plans
from ferry.engine.runner import Runner, _PhaseClock, prepare_plans
from ferry.engine.stats import RunStats
from ferry.errors import BudgetExhausted

log = structlog.get_logger("ferry.distributed")

LOAD_BATCH = 200  # outbox rows per work item: one Composite call's worth on Salesforce, small enough to spread
POLL_SECONDS = 0.2
EXTRA_ROUNDS = 3  # rounds beyond the retry budget for rows no worker answered (killed workers, bus dead letters)
IDLE_WARNING_SECONDS = 30.0


class DistributedRunner(Runner):
    """A run whose loads go to ``ferry worker`` processes over the bus (the store must be shared: PostgreSQL)."""

    def __init__(
        self, spec: PipelineSpec, store: Any, settings: JetStreamSettings, *, batch: int = LOAD_BATCH, **kwargs: Any
    ) -> None:
        super().__init__(spec, store, **kwargs)
        self.settings = settings
        self.batch = batch
        self._bus: JetStreamBus | None = None
        self.run_token = uuid.uuid4().hex[:12]  # names this run's items on the bus (see LoadBatch.run_token)

    async def run(self) -> RunStats:
        async with JetStreamBus(self.settings) as bus:
            await bus.setup()
            self._bus = bus
            try:
                return await super().run()
            finally:
                self._bus = None

    @property
    def bus(self) -> JetStreamBus:
        assert self._bus is not None, "the bus is connected by run()"
        return self._bus

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
        choice = direct_write(sink, plan.name, total)
        s.strategy, s.reason = f"{choice.strategy} (workers)", f"{choice.reason}; written by ferry workers"
        letters_before = self._open_letters(plan.name)
        self.progress.phase(f"write {plan.name} ({choice.strategy}, workers)", total)
        log.info("load.distributed", object=plan.name, records=total, strategy=choice.strategy)
        rounds = self.budget.max_attempts + EXTRA_ROUNDS
        left = total
        for attempt in range(1, rounds + 1):
            published = await self._publish_round(plan.name, str(choice.strategy), stats.run_id, attempt)
            left = await self._wait_for_round(plan.name, left)
            log.info("load.round", object=plan.name, attempt=attempt, items=published, left=left)
            if left == 0:
                break
            await asyncio.sleep(self.budget.pause(attempt))
        s.dead_lettered = self._open_letters(plan.name) - letters_before
        s.written = total - left - s.dead_lettered
        if left:
            raise RuntimeError(
                f"{plan.name}: {left} records still queued after {rounds} rounds of ferry workers "
                "(are workers running with this pipeline?); the next run sends them"
            )

    def _open_letters(self, obj: str) -> int:
        return int(self.store.count_dead_letters(self.pipeline).get(obj, 0))

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
        while True:
            await asyncio.sleep(POLL_SECONDS)
            now_left = self.store.outbox_count(self.pipeline, obj)
            if now_left < left:
                self.progress.advance(left - now_left)
                left, idle_since = now_left, time.monotonic()
            if left == 0:
                return 0
            waiting = (await self.bus.depth()).get(token, 0)
            if waiting == 0 and _leased(self.store, self.pipeline, obj) == 0:
                return left
            if time.monotonic() - idle_since > IDLE_WARNING_SECONDS:
                log.warning("load.no_progress", object=obj, left=left, queued_items=waiting,
                            hint="is a `ferry worker` running with this pipeline file?")
                idle_since = time.monotonic()


def _leased(store: Any, pipeline: str, obj: str) -> int:
    """Rows under a live claim (the shared PostgreSQL store has claims; the embedded one has none)."""
    count = getattr(store, "outbox_leased", None)
    return int(count(pipeline, obj)) if count is not None else 0


def direct_write(sink: Sink, obj: str, count: int) -> StrategyChoice:
    """The run's planner over the direct strategies: a remote job (Bulk API 2.0) is not spread over workers yet."""
    costs = [c for c in sink.write_costs(obj, count) if not c.remote_job]
    return choose_write(costs, remaining_calls=sink.budget_left())


@dataclass
class _OpenPipeline:
    sink: Sink
    plans: dict[str, ObjectPlan]
    budget: RetryBudget


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
        opened = await self._pipeline(item.pipeline)
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
        loader = Loader(self.store, item.pipeline, item.run_id, stats, opened.budget)
        try:
            keys = [r.key for r in claim.rows]
            target_ids = await asyncio.to_thread(self._target_ids, opened.sink, item.pipeline, plan.name, keys)
            t2 = time.perf_counter()
            results = await opened.sink.upsert(
                plan.name, plan.external_id, [r.payload for r in claim.rows], item.strategy, target_ids=target_ids,
            )
            t3 = time.perf_counter()
            await asyncio.to_thread(loader.reconcile, plan, claim.rows, results, jobs=[])
            t4 = time.perf_counter()
            log.debug("worker.item", object=item.object, rows=len(claim.rows), claim=round(t1 - t0, 3),
                      ids=round(t2 - t1, 3), write=round(t3 - t2, 3), record=round(t4 - t3, 3), at=round(t0, 3))
        except BaseException as exc:
            if isinstance(exc, BudgetExhausted):
                log.warning("worker.budget_exhausted", pipeline=item.pipeline, object=item.object)
            # Rows still held (never answered, or not recorded): free for the next round at once. After a
            # recorded answer nothing is held any more (a written or dead-lettered row left the outbox, a row to
            # retry was given back by record_results, a newer version replaced its row and its lease), so the
            # release is only paid on this path: one transaction less per item.
            await asyncio.to_thread(self.store.release_outbox, item.pipeline, item.object, claim)
            raise
        self.done_rows += len(claim.rows)
        return len(claim.rows)

    def _target_ids(self, sink: Sink, pipeline: str, obj: str, keys: Sequence[str]) -> list[str | None] | None:
        if sink.capabilities.native_upsert:
            return None
        known = self.store.target_ids(pipeline, obj, keys)
        return [known.get(k) for k in keys]

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
            plans = await prepare_plans(spec, sink)
            opened = _OpenPipeline(sink, {p.name: p for p in plans},
                                   RetryBudget(spec.retry.max_attempts, spec.retry.backoff_max_seconds))
            self._open[name] = opened
            return opened

    async def close(self) -> None:
        for opened in self._open.values():
            await opened.sink.__aexit__(None, None, None)
        self._open.clear()
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.close)  # the unused reservations back to the shared budget
