"""``ferry serve`` in distributed mode: what the inbox staged goes on the bus for ``ferry worker``s, instead of
being planned and sent in this process.

The inbox stays as it is (authenticate, stage in the shared PostgreSQL store with the delivery's dedup key in one
transaction, then 2xx): the staged record is the event's durable copy, and the dedup table is shared, so several
serve processes behind a load balancer take each delivery once. The dispatcher then gathers what was staged for
``window`` seconds and publishes one ``EventBatch`` per partition (``key_partition(key)``: a key's events always go
to the same partition, whose consumer delivers in order), naming the records by (stream, key, version). A burst
queues on the bus (a file-backed stream) and workers take it at the pace of their in-flight bound and the
target's shared API budget: back-pressure, not a flood.

A serve process killed after the 2xx but before its publish leaves the record staged: every ``sweep_every``
seconds, when the bus holds no item of the pipeline, the dispatcher hands the bus again every event that was
staged before the previous sweep and that no worker holds (any serve process's: they share the store). A
record handed twice is harmless: the worker's claim takes it once, and a done record is no longer staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Sequence

import structlog

from ferry.bus.jetstream import JetStreamBus, JetStreamSettings
from ferry.bus.work import EventBatch, encode, msg_id, subject_for
from ferry.core.bus import key_partition, subject_token
from ferry.core.ports import StagedRow
from ferry.observe import metrics
from ferry.serve.wake import wake

log = structlog.get_logger("ferry.serve.dispatch")

DEFAULT_WINDOW = 0.02  # seconds the dispatcher gathers staged events before publishing them
SWEEP_EVERY = 10.0  # seconds between looks for events staged but never handed over (a serve process died)
MAX_REFS = 2000  # records per item at most
SCAN_LIMIT = 5000  # staged events one look at the store hands over
RETRY_PAUSE = 1.0  # seconds before publishing again when the bus is away (the events stay staged meanwhile)

Ref = tuple[str, str, str]


class Dispatcher:
    """One pipeline's events onto the bus. ``add`` is called from the server's thread; ``run`` runs on the
    serve workers' loop."""

    def __init__(
        self, pipeline: str, store: object, settings: JetStreamSettings, *, window: float = DEFAULT_WINDOW,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        self.pipeline = pipeline
        self.store = store  # PostgresStore (unclaimed_events, max_staged_seq)
        self.settings = settings
        self.window = window
        self.sweep_every = sweep_every
        self.token = uuid.uuid4().hex[:12]  # this process's items (see EventBatch.token)
        self._lock = threading.Lock()
        self._pending: list[Ref] = []
        self._scan = True  # at start: what a previous process staged and never handed over
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._dispatches = 0
        # What was staged before this process takes requests (a previous process's leftovers): the first scan
        # hands it over; what is staged from now on comes through add() (or notify()).
        self._start_top = int(store.max_staged_seq(pipeline))  # type: ignore[attr-defined]
        self._swept_up_to = self._start_top  # the sweep's floor: events staged up to here were visible one sweep ago
        self._scan_up_to: int | None = self._start_top  # the next scan's end (None: what is staged now)
        self._scanned = 0  # staged events up to this seq were looked at by a scan
        self.published = 0  # records handed to the bus
        self.swept = 0  # of which by the sweep
        self.failures = 0

    # -- inputs (any thread) --------------------------------------------------------------------------------

    def add(self, stream: str, rows: Sequence[StagedRow]) -> None:
        """The inbox staged ``rows`` of ``stream`` (committed): hand them over soon."""
        with self._lock:
            self._pending.extend((stream, r.key, r.version) for r in rows)
        wake(self._loop, self._wake)

    def notify(self) -> None:
        """Something staged events without naming them (a change feed's page): look at the store."""
        self._scan = True
        wake(self._loop, self._wake)

    def stop(self) -> None:
        self._stopping = True
        wake(self._loop, self._wake)

    # -- the loop -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with JetStreamBus(self.settings) as bus:
            await bus.setup()
            next_sweep = time.monotonic() + self.sweep_every
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(1.0, self.sweep_every))
                self._wake.clear()
                if self._pending and not self._stopping:
                    await asyncio.sleep(self.window)  # let a burst gather
                try:
                    await self._dispatch(bus)
                    if self._scan:
                        self._scan = False
                        await self._scan_new(bus)
                    if time.monotonic() >= next_sweep:
                        await self._sweep(bus)
                        next_sweep = time.monotonic() + self.sweep_every
                except Exception as exc:  # the bus is away: the events stay staged (and pending) for the next try
                    self.failures += 1
                    log.warning("events.dispatch_failed", pipeline=self.pipeline, error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(RETRY_PAUSE)
                    self._wake.set()
                if self._stopping and not self._pending:
                    return

    async def _dispatch(self, bus: JetStreamBus) -> None:
        with self._lock:
            refs, self._pending = self._pending, []
        try:
            await self._publish(bus, refs)
        except BaseException:
            with self._lock:
                self._pending[:0] = refs  # in order, before what came meanwhile
            raise

    async def _publish(self, bus: JetStreamBus, refs: Sequence[Ref]) -> None:
        """One item per partition (at most MAX_REFS records each), the partitions' publishes concurrently."""
        if not refs:
            return
        by_partition: dict[int, list[Ref]] = {}
        for ref in refs:
            by_partition.setdefault(key_partition(ref[1], bus.partitions), []).append(ref)
        items = []
        for part in by_partition.values():
            for i in range(0, len(part), MAX_REFS):
                self._dispatches += 1
                items.append(EventBatch(self.pipeline, tuple(part[i:i + MAX_REFS]), f"{self.token}-{self._dispatches}"))
        # Within a partition the items go out one after another (order); partitions concurrently.
        chains: dict[str, list[EventBatch]] = {}
        for item in items:
            chains.setdefault(subject_for(item, bus.partitions), []).append(item)

        async def chain(subject: str, batch: list[EventBatch]) -> None:
            for item in batch:
                await bus.publish(subject, encode(item), msg_id(item))

        await asyncio.gather(*(chain(s, b) for s, b in chains.items()))
        self.published += len(refs)

    async def _scan_new(self, bus: JetStreamBus) -> None:
        top: int = self._scan_up_to if self._scan_up_to is not None else await asyncio.to_thread(
            self.store.max_staged_seq, self.pipeline  # type: ignore[attr-defined]
        )
        rows = await asyncio.to_thread(
            self.store.unclaimed_events, self.pipeline, self._scanned, top, SCAN_LIMIT  # type: ignore[attr-defined]
        )
        await self._publish(bus, [ref for _, ref in rows])
        if len(rows) == SCAN_LIMIT:  # more than one look's worth: go on from the last one handed over
            self._scanned, self._scan = rows[-1][0], True
            self._wake.set()
        else:
            self._scanned, self._scan_up_to = top, None

    async def _sweep(self, bus: JetStreamBus) -> None:
        """Events staged before the previous sweep, held by no worker, while the bus has no item of the pipeline:
        handed over again (a serve process died between its 2xx and its publish)."""
        top = await asyncio.to_thread(self.store.max_staged_seq, self.pipeline)  # type: ignore[attr-defined]
        floor, self._swept_up_to = self._swept_up_to, top
        waiting = (await bus.depth()).get(subject_token(self.pipeline), 0)
        if waiting:
            return
        rows = await asyncio.to_thread(
            self.store.unclaimed_events, self.pipeline, 0, floor, SCAN_LIMIT  # type: ignore[attr-defined]
        )
        if rows:
            log.warning("events.swept", pipeline=self.pipeline, records=len(rows))
            await self._publish(bus, [ref for _, ref in rows])
            self.swept += len(rows)
        metrics.queue_depth(self.pipeline, "staged", len(rows))
