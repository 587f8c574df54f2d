"""The event processor: what the inbox staged goes to the target in micro-batches, through the batch run's own
plan and load path (``Runner.run_staged``), one run (origin ``webhook``) per micro-batch.

Micro-batching (the pipeline's ``realtime:``): a batch gathers for ``max_wait_ms`` from the first event it takes
(no longer once ``max_records`` are waiting; events that came during the previous batch have waited part of it
already), so a burst is planned together. A sink that writes several objects in one call (Salesforce: Composite
of Collections subrequests) gets the whole batch in one call per ``records_per_call`` records, parents first
inside it (engine/combined.py); else the loader picks the write strategy per object by count.
The run is latency-sensitive: objects whose parents the target already holds are written alongside them, each
object's records in concurrent slices, never through a queued Bulk job (engine/waves.py, ``Loader``; docs/serve.md).
Latest wins by the source's own version: staging keeps one (key, version), the outbox keeps the newest
version per key, and the version map skips what is not newer than what the target already holds.

The source and the sink stay open across micro-batches (one sign-in and one describe for the process's
life). A batch never overlaps another run of the pipeline: the shared ``asyncio.Lock`` keeps the schedule's
runs apart inside the process, the pipeline's file lock (``store/lease.py``) keeps ``ferry run`` out; a
batch that finds the pipeline busy waits and tries again. A crash anywhere loses nothing: the next
process plans what is staged and sends the outbox again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from ferry.connectors.registry import open_sink
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan
from ferry.engine.runner import PLANNED_MARK, Runner
from ferry.engine.selection import select_for_pipeline
from ferry.engine.stats import RunStats
from ferry.errors import PipelineBusy
from ferry.observe import metrics
from ferry.serve.wake import wake
from ferry.store import Store

log = structlog.get_logger("ferry.serve.processor")

IDLE_POLL = 1.0  # seconds between looks at the store when no event woke the processor (restart, retries)
BUSY_PAUSE = 1.0  # seconds before trying again when another process runs the pipeline
ERROR_PAUSE = 2.0  # seconds before trying again after a failed micro-batch (the target down, ...),
ERROR_PAUSE_MAX = 60.0  # doubling with each failure in a row up to this: an outage is not a run a second


class Processor:
    def __init__(
        self,
        spec: PipelineSpec,
        store: Store,
        source: Source,
        run_lock: asyncio.Lock,
        *,
        window: float | None = None,
        max_batch: int | None = None,
    ) -> None:
        """``window`` (seconds) and ``max_batch`` override the pipeline's ``realtime:`` (``max_wait_ms``,
        ``max_records``)."""
        self.spec = spec
        self.store = store
        self.source = source
        self.run_lock = run_lock
        self.window = spec.realtime.max_wait_ms / 1000 if window is None else window
        self.max_batch = spec.realtime.max_records if max_batch is None else max_batch
        self.runner = Runner(spec, store, origin="webhook", latency_sensitive=True)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop run() runs on (the workers' thread)
        self._stopping = False
        self._sink: Sink | None = None
        self._plans: list[ObjectPlan] | None = None
        self.batches = 0
        self.failures = 0
        self._failed_in_a_row = 0
        self.problem: str | None = None  # why the last micro-batch failed (/healthz); None once one succeeds
        self.last_batch_at: float | None = None
        self._first_event_at: float | None = None  # monotonic time of the first event the next batch takes
        self._arrivals: list[float] = []  # when each event not yet in a batch arrived (end-to-end metric)

    def notify(self) -> None:
        """An event was staged: start a micro-batch soon. Called from the inbox, on the server's thread."""
        now = time.monotonic()
        if self._first_event_at is None:
            self._first_event_at = now
        self._arrivals.append(now)
        wake(self._loop, self._wake)

    def stop(self) -> None:
        """Finish the micro-batch under way, start no other. Any thread."""
        self._stopping = True
        wake(self._loop, self._wake)

    async def run(self) -> None:
        """Until ``stop``: micro-batches of what is staged (and whatever a crashed process left)."""
        sink = open_sink(self.spec.target, SinkContext(
            self.spec.name, ledger=self.store, clock=time.time, target_ids=self.runner.id_map,
        ))
        self._loop = asyncio.get_running_loop()
        async with self.source, sink:
            select_for_pipeline(self.source, self.spec.objects)  # parents it fetches: only what is mapped
            self._sink = sink
            self._wake.set()  # at start: a previous process may have left staged events or a queued outbox
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
                self._wake.clear()
                if self._stopping or not self._pending():
                    continue
                waiting = self._waiting()
                if waiting < self.max_batch:
                    await asyncio.sleep(self._gather_left())  # let the burst gather
                    waiting = self._waiting()
                cut = time.monotonic()
                self._first_event_at = None  # what arrives from now on starts the next batch's window
                arrivals, self._arrivals = self._arrivals, []
                await self._one_batch(sink, arrivals)
                if waiting > self.max_batch:
                    # The batch took max_records; the events beyond it have waited since the cut: their window
                    # runs from there, and the loop goes on without a new webhook to wake it.
                    first = self._first_event_at
                    self._first_event_at = cut if first is None else min(first, cut)
                    self._wake.set()

    def _gather_left(self) -> float:
        """Seconds until the window opened by the oldest event not yet in a batch closes: a steady stream's events
        that arrived during the previous batch have waited already, and wait only the rest."""
        first = self._first_event_at
        return 0.0 if first is None else max(0.0, first + self.window - time.monotonic())

    def _report(self, stats: RunStats, arrivals: list[float]) -> None:
        """Metrics: each event's arrival -> its batch written, per object written; what still waits."""
        done = time.monotonic()
        name = self.spec.name
        for obj, figures in stats.objects.items():
            if figures.written:
                for arrived in arrivals:
                    metrics.event_delivered(name, obj, done - arrived)
        metrics.queue_depth(name, "inbox", self._waiting())
        metrics.queue_depth(name, "outbox", self.store.outbox_count(name))

    def _waiting(self) -> int:
        return self.store.staged_count(self.spec.name, self.store.get_mark(self.spec.name, PLANNED_MARK))

    def _pending(self) -> bool:
        return self._waiting() > 0 or self.store.outbox_count(self.spec.name) > 0

    async def _one_batch(self, sink: Sink, arrivals: list[float]) -> None:
        pause = 0.0
        async with self.run_lock:
            try:
                calls_before = dict(sink.api_calls)  # the first batch's describe is its run's call too
                if self._plans is None:
                    self._plans = await self.runner.prepare(sink)
                stats = await self.runner.run_staged(self.source, sink, self._plans, calls_before)
            except PipelineBusy:
                pause = BUSY_PAUSE
            except Exception as exc:  # the run is recorded as failed; what it committed stays; try again later
                self.failures += 1
                self._failed_in_a_row += 1
                pause = min(ERROR_PAUSE_MAX, ERROR_PAUSE * 2 ** (self._failed_in_a_row - 1))
                self.problem = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("events.batch_failed", pipeline=self.spec.name, error=f"{type(exc).__name__}: {exc}",
                            retry_in_s=pause)
            else:
                self.problem = None
                if self.store.outbox_count(self.spec.name):
                    # Records the target answered with a transient error wait in the outbox: the next attempts
                    # back off like failed batches, so a short outage does not spend their retry budget at once.
                    self._failed_in_a_row += 1
                    pause = min(ERROR_PAUSE_MAX, ERROR_PAUSE * 2 ** (self._failed_in_a_row - 1))
                    log.info("events.batch_left_retries", pipeline=self.spec.name, retry_in_s=pause)
                else:
                    self._failed_in_a_row = 0
                self.batches += 1
                self.last_batch_at = time.time()
                self._report(stats, arrivals)
                log.info("events.batch", pipeline=self.spec.name, run_id=stats.run_id, status=stats.status,
                         written={k: v.written for k, v in stats.objects.items() if v.written})
        if pause:  # outside the lock (a sweep may run meanwhile), and cut short by stop()
            deadline = time.monotonic() + pause
            while not self._stopping and time.monotonic() < deadline:
                await asyncio.sleep(min(0.2, deadline - time.monotonic()))
            self._wake.set()
