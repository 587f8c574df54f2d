"""The change feed: a pipeline's event source (``events:`` in its ``source:`` block, e.g. Salesforce CDC) followed
inside ``ferry serve``, each page staged with its position, then the same micro-batch processor as webhooks.

The delivery guarantee is the one ``core.events`` states: a page's records and its state (the replay id) are
staged in ONE transaction (``Staging.stage``) before the next page is asked for, so a restart resumes from the
staged position and loses nothing. Each stream is followed by its own task; a stream that fails (the system
unreachable past the source's retries) is started again from its saved state after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import orjson
import structlog

from ferry.core.contracts import Source
from ferry.core.events import EventSource
from ferry.core.ports import ReadCheckpoints, StagedRow, Staging
from ferry.errors import PermanentError

log = structlog.get_logger("ferry.serve.feed")

EVENT_RUN_ID = 0  # staged by no run, like webhook deliveries (the micro-batch that plans them is the run)
RETRY_PAUSE = 2.0
RETRY_PAUSE_MAX = 60.0


class FeedStore(ReadCheckpoints, Staging, Protocol):
    """Where a feed reads its position from and stages its pages."""


class Feed:
    def __init__(
        self,
        pipeline: str,
        events: EventSource,
        source: Source,
        store: FeedStore,
        on_staged: Callable[[], None],
    ) -> None:
        self.pipeline = pipeline
        self.events = events
        self.source = source  # its identify() gives each record the (key, version) a batch read would
        self.store = store
        self.on_staged = on_staged
        self.pages = 0
        self.records = 0
        self.failures = 0
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        """Follow every stream until cancelled (or a permanent error: a human must act)."""
        async with self.events:
            tasks = [asyncio.create_task(self._follow(s)) for s in self.events.streams]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, stream: str) -> None:
        failed = 0
        while not self._stopping:
            state = await asyncio.to_thread(self.store.read_state, self.pipeline, stream)
            try:
                async with contextlib.aclosing(self.events.events(stream, state)) as pages:  # type: ignore[type-var]
                    async for page in pages:
                        await asyncio.to_thread(self._stage, stream, page.records, page.state)
                        failed = 0
                        if self._stopping:
                            return
            except PermanentError as exc:
                log.error("feed.stopped", pipeline=self.pipeline, stream=stream, error=str(exc))
                raise
            except Exception as exc:  # transient: start again from the saved state
                self.failures += 1
                failed += 1
                pause = min(RETRY_PAUSE_MAX, RETRY_PAUSE * 2 ** (failed - 1))
                log.warning("feed.failed", pipeline=self.pipeline, stream=stream,
                            error=f"{type(exc).__name__}: {exc}", retry_in_s=pause)
                await asyncio.sleep(pause)

    def _stage(self, stream: str, records: list[dict[str, object]], state: dict[str, object] | None) -> None:
        identify = self.source.identify
        rows = []
        for raw in records:
            key, version = identify(stream, raw)
            rows.append(StagedRow(key, version, orjson.dumps(raw)))
        self.store.stage(self.pipeline, stream, EVENT_RUN_ID, rows, state)
        self.pages += 1
        self.records += len(rows)
        if rows:
            self.on_staged()
