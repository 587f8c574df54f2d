"""The event work a ``ferry worker`` does for ``ferry serve`` in distributed mode: ``EventBatch`` items in,
micro-batches of staged events planned and sent through the batch run's own path.

One micro-batch: the items a worker holds within ``window`` seconds (one per partition at most when the bus keeps
strict order per partition) are joined; the worker claims the staged records they name (``claim_events``: a
record another worker holds right now is left to it), maps and validates them exactly as a run plans a page
(``route_staged``; versions not newer than the target's are dropped; two-way ownership and echo suppression),
queues the rows with the dead letters in one transaction, then sends the rows *of the keys it planned*, object by
object, parents first (``claim_outbox_keys``; each object in concurrent slices, as the embedded micro-batch does),
and records every answer as the embedded loader does (``Loader.reconcile``). Only then are the staged records
deleted (``finish_events``). A micro-batch is one run of origin ``webhook`` in ``ferry runs``.

A key queued by another worker's batch (an Account both a customer's and an order's event carry) is waited for
briefly instead of written twice; a row the target answered with a transient error stays queued and the item is
handed back to the bus (``EventsLeft``: retried with back-off, the row's own attempt count dead-letters it in the
end). Items are acknowledged only after all this is durable: a worker killed anywhere leaves its records staged
and leased; the lease runs out and the redelivered item does the work again (upserts by external id, versions
forward only: nothing twice, nothing stale).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from ferry.bus.work import EventBatch, decode
from ferry.connectors.registry import open_sink, open_source
from ferry.core.bus import BusMessage, PermanentWorkError, key_partition
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.ports import NewDeadLetter, OutboxRow, PlannedRow, StagedRecord
from ferry.engine.adopt import adopt_linked
from ferry.engine.distjobs import given_spec
from ferry.engine.distributed import direct_write
from ferry.engine.loader import Loader, RetryBudget
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan, order_plans
from ferry.engine.runner import _Routed, fresh_rows, orphan_errors, prepare_plans, route_staged
from ferry.engine.selection import select_for_pipeline
from ferry.engine.stats import RunStats
from ferry.engine.twoway import TwoWay
from ferry.errors import BudgetExhausted
from ferry.observe import metrics

log = structlog.get_logger("ferry.events")

WINDOW = 0.03  # seconds a worker gathers items before planning them together
SLICE = 100  # rows per write call, all of an object's slices in flight at once (engine/together.py's reason)
MAX_BATCH = 2000  # staged events one micro-batch plans at most (a bigger backlog: the next one, at once)
WAIT_FOR_OTHERS = 5.0  # seconds to wait for a key another worker is sending before handing the item back


class EventsLeft(Exception):
    """Rows of this micro-batch are still queued (a transient error, or another worker still holds them): the
    item goes back to the bus and comes again after its back-off."""


@dataclass
class _Open:
    spec: PipelineSpec
    source: Source
    sink: Sink
    plans: list[ObjectPlan]
    by_entity: dict[str, list[ObjectPlan]]
    budget: RetryBudget
    two_way: TwoWay | None


@dataclass
class _Gather:
    refs: list[tuple[str, str, str]] = field(default_factory=list)
    parts: set[int] = field(default_factory=set)  # the partitions whose items this batch holds
    done: asyncio.Future[None] | None = None


@dataclass
class EventWork:
    """The handler for ``EventBatch`` items (a worker routes other kinds elsewhere)."""

    specs: dict[str, PipelineSpec]
    store: Any  # PostgresStore: claim_events, queue_planned, claim_outbox_keys, queued_keys, finish_events
    lease_seconds: float
    partitions: int = 8  # the bus's (FERRY_BUS_PARTITIONS): items' partitions name their backlog in the store
    window: float = WINDOW
    clock: Callable[[], float] = time.time
    done_records: int = 0
    paused_batches: int = 0  # micro-batches the API budget stopped (their records stay staged)
    _open: dict[str, _Open] = field(default_factory=dict)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    _gathering: dict[str, _Gather] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __call__(self, message: BusMessage) -> None:
        item = decode(message.data)
        if not isinstance(item, EventBatch):
            raise PermanentWorkError(f"{item.kind} is not an event item")
        await self.submit(item)

    async def submit(self, item: EventBatch) -> None:
        """Join the micro-batch gathering for the item's pipeline; returns (or raises) when it is done."""
        given_spec(self.specs, item.pipeline)
        batch = self._gathering.get(item.pipeline)
        if batch is None:
            batch = _Gather(done=asyncio.get_running_loop().create_future())
            self._gathering[item.pipeline] = batch
            task = asyncio.create_task(self._flush_after(item.pipeline, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.refs.extend(item.refs)
        batch.parts.add(key_partition(item.partition_key, self.partitions))
        assert batch.done is not None
        await asyncio.shield(batch.done)

    async def _flush_after(self, pipeline: str, batch: _Gather) -> None:
        await asyncio.sleep(self.window)
        if self._gathering.get(pipeline) is batch:
            del self._gathering[pipeline]
        assert batch.done is not None
        try:
            while await self.process(pipeline, batch.refs, batch.parts) >= MAX_BATCH:
                batch.refs = []  # a full batch: the partitions' backlog goes on at once
        except BudgetExhausted as exc:
            # Not the items' failure: a retry cannot help before the budget's window frees calls, and a dead letter
            # would be wrong. The items are settled; their records stay staged (released), and serve's sweep hands
            # them out again when the bus holds nothing of the pipeline, as the embedded processor waits it out.
            self.paused_batches += 1
            log.warning("events.budget_exhausted", pipeline=pipeline, error=str(exc))
            batch.done.set_result(None)
        except BaseException as exc:
            batch.done.set_exception(exc)
            batch.done.exception()  # every member awaits it; never "exception was never retrieved"
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            batch.done.set_result(None)

    async def process(
        self, pipeline: str, refs: Sequence[tuple[str, str, str]], parts: Collection[int] = ()
    ) -> int:
        """Plan and send the staged records ``refs`` names and the backlog of the partitions ``parts`` (at most
        MAX_BATCH, oldest first) that no other worker holds; returns how many."""
        opened = await self._pipeline(pipeline)
        claim = await asyncio.to_thread(
            lambda: self.store.claim_events(pipeline, list(refs), self.lease_seconds, partitions=sorted(parts),
                                            of=self.partitions, limit=MAX_BATCH)
        )
        if not claim.records:
            return 0
        run_id = await asyncio.to_thread(
            self.store.start_run, pipeline, pid=os.getpid(), host=socket.gethostname(), origin="webhook"
        )
        stats = RunStats(run_id=run_id, pipeline=pipeline, dead_letter_cap=opened.spec.max_dead_letter_share)
        started = time.monotonic()
        left: dict[str, list[str]] = {}
        try:
            keys = await asyncio.to_thread(self._plan, opened, claim.records, run_id, stats)
            left = await self._send_all(opened, keys, run_id, stats)
            stats.status = "succeeded"
        except BudgetExhausted as exc:
            stats.status, stats.error = "paused", f"API budget exhausted: {exc}"
            raise
        except BaseException as exc:
            stats.status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"
            stats.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            stats.seconds = time.monotonic() - started
            # What is sent leaves staging; what is not stays, released for the redelivered item or the sweep.
            await asyncio.to_thread(self.store.finish_events, pipeline, claim)
            await asyncio.to_thread(self.store.finish_run, run_id, stats.status, stats.as_dict(), stats.error)
        self.done_records += len(claim.records)
        log.info("events.batch", pipeline=pipeline, run_id=run_id, records=len(claim.records),
                 written={k: v.written for k, v in stats.objects.items() if v.written},
                 left=sum(map(len, left.values())))
        for obj, figures in stats.objects.items():
            metrics.records(pipeline, obj, read=figures.read, written=figures.written,
                            dead_lettered=figures.dead_lettered)
        if left:
            raise EventsLeft(f"{pipeline}: still queued after this batch: "
                             + ", ".join(f"{obj} {len(keys)}" for obj, keys in left.items()))
        return len(claim.records)

    # -- plan: staged -> canonical -> mapped -> validated -> outbox / DLQ (as Runner._plan_records) -----------

    def _plan(self, opened: _Open, records: list[StagedRecord], run_id: int, stats: RunStats) -> dict[str, list[str]]:
        """Queue the records' fresh rows and dead letters in one transaction; the keys queued, per object."""
        routed = {p.name: _Routed(p, [], []) for p in opened.plans}
        for staged in records:
            route_staged(staged, opened.source.normalize, opened.by_entity, routed)
        pipeline = opened.spec.name
        outbox: dict[str, list[PlannedRow]] = {}
        letters: list[NewDeadLetter] = []
        for r in routed.values():
            letters.extend(r.letters)
            fresh = fresh_rows(self.store, pipeline, r, stats, opened.two_way)
            if fresh:
                outbox[r.plan.name] = fresh
        self.store.queue_planned(pipeline, run_id, outbox, letters)
        return {obj: sorted({row.key for row in rows}) for obj, rows in outbox.items()}

    # -- send: the batch's own keys, parents first ------------------------------------------------------------

    async def _send_all(
        self, opened: _Open, keys: dict[str, list[str]], run_id: int, stats: RunStats
    ) -> dict[str, list[str]]:
        loader = Loader(self.store, opened.spec.name, run_id, stats, opened.budget, latency_sensitive=True,
                        keep_digests=opened.two_way is not None)
        left: dict[str, list[str]] = {}
        peer = opened.two_way.spec.peer if opened.two_way is not None else None
        if peer is not None and keys.get(peer.via):  # two-way: no second record for one the peer made
            stats.adopted += await adopt_linked(opened.sink, self.store, opened.spec.name, opened.plans,
                                                opened.two_way, keys=keys[peer.via])
        for plan in order_plans(opened.plans):
            mine = keys.get(plan.name)
            if not mine:
                continue
            if any(parent.object in left for parent in plan.parents):
                left[plan.name] = mine  # its parent is not in the target yet: the write could only fail
                continue
            await asyncio.to_thread(self._drop_orphans, opened, plan, mine, run_id, stats)
            still = await self._send(opened, loader, plan, mine)
            if still:
                left[plan.name] = still
        return left

    async def _send(self, opened: _Open, loader: Loader, plan: ObjectPlan, keys: list[str]) -> list[str]:
        """Send the queued rows of ``keys``; wait (briefly) for those another worker is sending. The keys still
        queued at the end."""
        pipeline = opened.spec.name
        deadline = time.monotonic() + WAIT_FOR_OTHERS
        pending = keys
        while True:
            claim = await asyncio.to_thread(
                self.store.claim_outbox_keys, pipeline, plan.name, pending, self.lease_seconds
            )
            try:
                if claim.rows:
                    await self._write(opened, loader, plan, claim.rows)
            finally:
                await asyncio.to_thread(self.store.release_outbox, pipeline, plan.name, claim)
            queued = await asyncio.to_thread(self.store.queued_keys, pipeline, plan.name, pending)
            others = {k for k, leased in queued.items() if k not in claim.fences}
            if not queued or not others or time.monotonic() > deadline:
                return sorted(queued)
            pending = sorted(others)
            if all(queued[k] for k in others):  # all held by other workers: give them a moment
                await asyncio.sleep(0.05)

    async def _write(self, opened: _Open, loader: Loader, plan: ObjectPlan, rows: list[OutboxRow]) -> None:
        sink = opened.sink
        strategy = direct_write(sink, plan.name, len(rows)).strategy
        slices = [rows[i:i + SLICE] for i in range(0, len(rows), SLICE)]

        async def one(part: list[OutboxRow]) -> Any:
            target_ids = None
            if not sink.capabilities.native_upsert:
                known = await asyncio.to_thread(self.store.target_ids, opened.spec.name, plan.name,
                                                [r.key for r in part])
                target_ids = [known.get(r.key) for r in part]
            return await sink.upsert(plan.name, plan.external_id, [r.payload for r in part], strategy,
                                     target_ids=target_ids)

        answers = await asyncio.gather(*(one(part) for part in slices), return_exceptions=True)
        for part, answer in zip(slices, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer  # not recorded: the rows stay queued, and are released for the retry
            await asyncio.to_thread(loader.reconcile, plan, part, answer, jobs=[])

    def _drop_orphans(self, opened: _Open, plan: ObjectPlan, keys: list[str], run_id: int, stats: RunStats) -> None:
        """Children whose parent is an open dead letter become dead letters too (as in a run)."""
        if not plan.parents:
            return
        pipeline = opened.spec.name
        dead = {p.object: self.store.dead_letter_keys(pipeline, p.object) for p in plan.parents}
        if not any(dead.values()):
            return
        rows = self.store.outbox_rows(pipeline, plan.name, keys, with_source=False)
        orphans = [(row, errors) for row in rows if (errors := orphan_errors(plan, row.key, row.payload, dead))]
        if not orphans:
            return
        sources = self.store.source_payloads(pipeline, plan.name, [row.key for row, _ in orphans])
        letters = [NewDeadLetter(plan.name, row.key, row.version, errors, sources.get(row.key), row.payload,
                                 row.stream, row.source_key) for row, errors in orphans]
        done = [(row.key, row.version) for row, _ in orphans]
        self.store.record_results(pipeline, plan.name, run_id, [], letters, done)
        stats.object(plan.name).dead_lettered += len(letters)

    # -- the pipelines this worker was given: source (normalize), sink (one sign-in, one describe) --------------

    async def _pipeline(self, name: str) -> _Open:
        async with self._opening:
            if name in self._open:
                return self._open[name]
            spec = self.specs[name]
            sink = open_sink(spec.target, SinkContext(
                name, ledger=self.store, clock=self.clock,
                target_ids=lambda obj, keys: self.store.target_ids(name, obj, keys),
            ))
            source = open_source(spec.source)
            await source.__aenter__()
            select_for_pipeline(source, spec.objects)  # parents it fetches: only what is mapped
            try:
                await sink.__aenter__()
            except BaseException:
                await source.__aexit__(None, None, None)
                raise
            plans = await prepare_plans(spec, sink)
            by_entity: dict[str, list[ObjectPlan]] = {}
            for p in plans:
                by_entity.setdefault(p.entity, []).append(p)
            two_way = TwoWay(spec.two_way, self.store, spec.name) if spec.two_way is not None else None
            opened = _Open(spec, source, sink, plans, by_entity,
                           RetryBudget(spec.retry.max_attempts, spec.retry.backoff_max_seconds), two_way)
            self._open[name] = opened
            return opened

    async def close(self) -> None:
        for opened in self._open.values():
            await opened.sink.__aexit__(None, None, None)
            await opened.source.__aexit__(None, None, None)
        self._open.clear()
