"""Durable intake: read each stream page by page into staging, resumable at the next page after a crash.

The source reads; the engine stages. Each page's records are staged in the same transaction as the state
the source gave that page (opaque here: where the read stands, and on a read's last page the cursor the
next run starts from), so a killed run continues at the page after the last staged one instead of reading
the stream again, and a finished read is never read again. How a source keeps a read from skipping a
record is its own business (the Source contract's never-skip rule); staging keeps a (key, version) once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import structlog

from ferry.core.contracts import Source, SourcePage
from ferry.core.ports import StagedRow
from ferry.errors import TransientError
from ferry.observe import metrics, tracing
from ferry.store import Store

log = structlog.get_logger("ferry.engine.intake")

PHASE_ATTEMPTS = 4  # a stream read is continued this many times after a call gave up (2, 4, 8 s apart)


class Intake:
    def __init__(
        self,
        store: Store,
        pipeline: str,
        run_id: int,
        on_page: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.run_id = run_id
        self.on_page = on_page
        self.resumed: list[str] = []  # streams whose read continued one a run before this one left
        self.staged = 0  # records staged by this intake

    async def prepare(self, source: Source) -> None:
        """Let a source that can start its reads together do so (optional ``prepare_reads``: Shopify over GraphQL
        starts every stream's bulk operation in one request). The states it returns are saved before any read,
        so a crash from here on finds what it started instead of starting it again."""
        prepare = getattr(source, "prepare_reads", None)
        if prepare is None:
            return
        for attempt in range(1, PHASE_ATTEMPTS + 1):
            try:
                states = await prepare({s: self.store.read_state(self.pipeline, s) for s in source.streams})
                break
            except TransientError as exc:
                if attempt == PHASE_ATTEMPTS:
                    raise
                log.warning("read.prepare_pause", error=str(exc), pause_s=2.0**attempt)
                await asyncio.sleep(2.0**attempt)
        for stream, state in states.items():
            self.store.stage(self.pipeline, stream, self.run_id, [], state)

    async def read_stream(self, source: Source, stream: str) -> int:
        """Stage everything of ``stream`` the source reads from its saved state; returns how many records were
        staged. A call that fails past the HTTP core's own retries (a long 429 burst, an outage of a few
        seconds) pauses the read, which then continues from its last staged page: the state is durable."""
        count = 0
        pages = 0  # staged by this intake: a read continued after a pause is not one a crash left
        for attempt in range(1, PHASE_ATTEMPTS + 1):
            try:
                # One span per stream read: the source's API calls are its children, each staged page one too.
                with tracing.span("ferry.read", {"ferry.stream": stream, "ferry.attempt": attempt}):
                    async for page in source.read(stream, self.store.read_state(self.pipeline, stream)):
                        if page.resumed and not pages and stream not in self.resumed:
                            self.resumed.append(stream)
                        count += self._stage(source, stream, page)
                        pages += 1
                return count
            except TransientError as exc:
                if attempt == PHASE_ATTEMPTS:
                    raise
                pause = 2.0**attempt
                log.warning("read.pause", stream=stream, pages=pages, error=str(exc), pause_s=pause)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _stage(self, source: Source, stream: str, page: SourcePage) -> int:
        identify = source.identify
        rows = []
        with tracing.span("ferry.read.page", {"ferry.stream": stream, "ferry.records": len(page.records)}) as span:
            for raw in page.records:
                key, version = identify(stream, raw)
                rows.append(StagedRow(key, version, orjson.dumps(raw)))
            self.store.stage(self.pipeline, stream, self.run_id, rows, page.state)
            tracing.set_keys(span, (f"{stream}/{row.key}" for row in rows), "ferry.source_keys")
        metrics.source_staged(self.pipeline, stream, len(rows))
        self.staged += len(rows)
        self.on_page(len(rows))
        return len(rows)
