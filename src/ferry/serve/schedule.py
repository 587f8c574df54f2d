"""A pipeline's ``schedule:`` inside ``ferry serve``: the incremental batch run (origin ``schedule``) at each cron
time, a reconciliation sweep that catches what webhooks missed (a delivery Shopify gave up on, a WooCommerce
webhook that was disabled, products WooCommerce webhooks do not carry).

A sweep never overlaps the event processor or itself: it runs under the process's run lock and the
pipeline's file lock, one at a time; a sweep that outlasts the next cron time skips the missed times
(the next sweep reads everything since the last one anyway) instead of piling up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from croniter import croniter

from ferry.engine.pipeline import PipelineSpec
from ferry.engine.runner import Runner
from ferry.errors import PipelineBusy
from ferry.store import Store

log = structlog.get_logger("ferry.serve.schedule")


class Schedule:
    def __init__(
        self,
        spec: PipelineSpec,
        store: Store,
        run_lock: asyncio.Lock,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not spec.schedule:
            raise ValueError(f"pipeline {spec.name} has no schedule")
        self.spec = spec
        self.store = store
        self.run_lock = run_lock
        self.now = now
        self.runs = 0

    def next_time(self, after: datetime) -> datetime:
        nxt: datetime = croniter(self.spec.schedule, after).get_next(datetime)
        return nxt

    async def run(self) -> None:
        """Sweep at each cron time until cancelled (a sweep under way is then marked interrupted)."""
        while True:
            due = self.next_time(self.now())
            await asyncio.sleep(max(0.0, (due - self.now()).total_seconds()))
            await self.sweep()

    async def sweep(self) -> None:
        async with self.run_lock:
            try:
                stats = await Runner(self.spec, self.store, origin="schedule").run()
            except PipelineBusy as exc:
                log.info("schedule.skipped", pipeline=self.spec.name, reason=str(exc))
                return
            except Exception as exc:  # recorded as a failed run; the next cron time tries again
                log.warning("schedule.failed", pipeline=self.spec.name, error=str(exc))
                return
        self.runs += 1
        log.info("schedule.run", pipeline=self.spec.name, run_id=stats.run_id, status=stats.status)
