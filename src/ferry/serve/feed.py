"""The change feed: a pipeline's event source (``events:`` in its ``source:`` block, e.g. Salesforce CDC) followed
inside ``ferry serve``, each page staged with its position, then the same micro-batch processor as webhooks.

The delivery guarantee is the one ``core.events`` states: a page's records and its state (the replay id) are
staged in ONE transaction (``Staging.stage``) before the next page is asked for, so a restart resumes from the
staged position and loses nothing. Each stream is followed by its own task; a stream that fails (the system
unreachable past the source's retries) is started again from its saved state after a pause.

Health: a stream that failed stays a *problem* (``problems``: the reason, since when, whether a human must act)
until the stream hands out a page again; an event source hands out a page, empty if need be, as soon as it is
subscribed, so a recovered feed shows healthy without waiting for a change. A permanent error (credentials
refused) is retried too, at the longest pause: someone fixing the org's side (the connected app, the user) is
picked up without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
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
MAX_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class FeedProblem:
    """Why a stream is not following its changes now (shown by ``/healthz``; no secrets: errors carry none)."""

    stream: str
    reason: str
    since: float  # wall time of the first failure in a row
    permanent: bool  # a human must act (credentials, configuration); retried at the longest pause meanwhile
    failures: int  # failures in a row

    def as_dict(self) -> dict[str, object]:
        return {"stream": self.stream, "reason": self.reason, "permanent": self.permanent,
                "failures": self.failures,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))}


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
        self.problems: dict[str, FeedProblem] = {}  # streams failing now, by stream
        self.retry_pause = RETRY_PAUSE
        self.retry_pause_max = RETRY_PAUSE_MAX
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
        while not self._stopping:
            state = await asyncio.to_thread(self.store.read_state, self.pipeline, stream)
            try:
                async with contextlib.aclosing(self.events.events(stream, state)) as pages:  # type: ignore[type-var]
                    async for page in pages:
                        await asyncio.to_thread(self._stage, stream, page.records, page.state)
                        self._recovered(stream)
                        if self._stopping:
                            return
            except Exception as exc:  # start again from the saved state, after a pause
                await asyncio.sleep(self._failed(stream, exc))

    def _failed(self, stream: str, exc: Exception) -> float:
        """Record the failure as the stream's problem; the pause before the next attempt."""
        self.failures += 1
        permanent = isinstance(exc, PermanentError)
        before = self.problems.get(stream)
        failures = before.failures + 1 if before else 1
        reason = f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
        self.problems[stream] = FeedProblem(stream, reason, before.since if before else time.time(), permanent,
                                            failures)
        pause = self.retry_pause_max if permanent else min(self.retry_pause_max,
                                                           self.retry_pause * 2 ** (failures - 1))
        if permanent:
            log.error("feed.refused", pipeline=self.pipeline, stream=stream, error=reason, retry_in_s=pause)
        else:
            log.warning("feed.failed", pipeline=self.pipeline, stream=stream, error=reason, retry_in_s=pause)
        return pause

    def _recovered(self, stream: str) -> None:
        problem = self.problems.pop(stream, None)
        if problem is not None:
            log.info("feed.recovered", pipeline=self.pipeline, stream=stream, failures=problem.failures,
                     down_s=round(time.time() - problem.since, 1))

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
