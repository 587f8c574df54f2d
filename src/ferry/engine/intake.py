"""Durable intake: read each stream page by page into staging, resumable at the next page after a crash.

Each page is staged in the same transaction as the read's progress (the next-page link, the newest
version seen), so a killed run continues at the page after the last staged one instead of reading the
stream again.

A stream is read in updated_at order from its cursor (phase ORDERED). Shopify's page cursors are keyset
ranges over (updated_at, id): a record edited on a page already passed gets a newer updated_at, sorts
after every page served so far and comes again later in the same read, at its newest version (latest
wins) with no second read of the stream.

The cursor rule. A page can pass over a change only if the change commits after the page was served with
an updated_at below the page's last one. Changes are stamped at most CLOCK_MARGIN before they become
visible, so such a change has updated_at >= T - margin, T the store's clock when it served that page;
the page itself then reached T - margin (its newest version >= it): "the read reached the present". So
the progress keeps, in ``started_at``, the smallest ``T - margin`` of a page that reached it, and the
cursor moves to the newest version seen but never past that value; the next run's inclusive lower bound
then meets any such change. A backfill of history never reaches the present, and its cursor is simply
the newest version seen: a change made after its last page is newer than everything the read returned.
The cursor moves in one transaction with forgetting the progress.

A progress row left by an older ferry (phase PAGES or CATCHUP, paged in id order) is finished as that
ferry would have: the rest of its pages, then a catch-up read of what changed since the read began, the
cursor never past the catch-up's own start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable

import orjson
import structlog

from ferry.connectors.shopify.source import ShopifySource, SourcePage
from ferry.errors import PermanentError, TransientError
from ferry.model.normalize import shopify as shopify_normalize
from ferry.model.values import version_of
from ferry.store import ReadProgress, Store

log = structlog.get_logger("ferry.engine.intake")

# Shopify's updated_at has one-second resolution, the store's clock is not ours, and a write is stamped a
# little before it commits: a change is taken to be visible within this long of its updated_at, so a page
# served at the store's time T (its Date header) cannot pass over a change older than T - CLOCK_MARGIN.
CLOCK_MARGIN = dt.timedelta(seconds=5)
ORDERED = "ordered"  # one read in updated_at order; what it needs to stay correct is in the module docstring
PAGES, CATCHUP = "pages", "catchup"  # an older ferry's read in id order, and its catch-up read
PHASE_ATTEMPTS = 4  # a read phase is continued this many times after a call gave up (2, 4, 8 s apart)


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
        self.resumed: list[str] = []  # streams continued from a saved next-page link
        self.staged = 0  # records staged by this intake

    async def read_stream(self, source: ShopifySource, stream: str) -> int:
        """Stage everything of ``stream`` changed since its cursor; returns how many records were staged."""
        progress = self.store.read_progress(self.pipeline, stream)
        if progress is None:
            progress = ReadProgress(
                stream, self.run_id, self.store.get_cursor(self.pipeline, stream), None, None, "", ORDERED
            )
        else:
            self.resumed.append(stream)
            log.info("read.resume", stream=stream, phase=progress.phase, pages=progress.pages)
        progress.run_id = self.run_id
        count = 0
        if progress.phase == PAGES:  # legacy: an id-order read an older ferry left unfinished
            count += await self._phase_until_done(source, progress)
            # The main read is done: catch up from its start, at the catch-up's own start time.
            progress.phase, progress.since, progress.started_at = CATCHUP, progress.started_at or None, ""
            progress.next_url, progress.pages = None, 0
            self.store.save_read(self.pipeline, progress)
        count += await self._phase_until_done(source, progress)
        # ORDERED: started_at is where the read first reached the present (or "": it never did);
        # CATCHUP: when the catch-up began. Either way the cursor stops there.
        cursor = progress.newest
        if cursor is not None and progress.started_at and progress.started_at < cursor:
            cursor = progress.started_at
        self.store.finish_read(self.pipeline, stream, cursor)
        return count

    async def _phase_until_done(self, source: ShopifySource, progress: ReadProgress) -> int:
        """A phase, continued from its last staged page when a call fails past the HTTP core's own retries
        (a long 429 burst, an outage of a few seconds): the progress is durable, so going on is cheap."""
        before = self.staged
        for attempt in range(1, PHASE_ATTEMPTS + 1):
            try:
                await self._phase(source, progress, since=progress.since)
                return self.staged - before
            except TransientError as exc:
                if attempt == PHASE_ATTEMPTS:
                    raise
                pause = 2.0**attempt
                log.warning("read.pause", stream=progress.stream, pages=progress.pages, error=str(exc), pause_s=pause)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _phase(self, source: ShopifySource, progress: ReadProgress, *, since: str | None) -> int:
        count = 0
        resume = progress.next_url
        if progress.next_url is None and progress.pages > 0:
            return 0  # every page of this phase is staged already (the crash came before the next step)
        try:
            async for page in source.read_pages(progress.stream, updated_at_min=since, resume_url=resume):
                count += self._stage(progress, page)
                resume = None
        except PermanentError as exc:
            if resume is None:
                raise
            # A saved page link the store no longer honours: read the phase again from its lower bound.
            log.warning("read.resume_link_refused", stream=progress.stream, error=str(exc))
            progress.next_url, progress.pages = None, 0
            return count + await self._phase(source, progress, since=since)
        return count

    def _stage(self, progress: ReadProgress, page: SourcePage) -> int:
        start = _read_start(page.server_time)
        if progress.phase != ORDERED and not progress.started_at:
            progress.started_at = start
        rows = []
        page_newest: str | None = None
        for raw in page.records:
            key = shopify_normalize.record_key(progress.stream, raw)
            version = shopify_normalize.record_version(progress.stream, raw)
            rows.append((key, version, orjson.dumps(raw)))
            if page_newest is None or version > page_newest:
                page_newest = version
        if page_newest is not None and (progress.newest is None or page_newest > progress.newest):
            progress.newest = page_newest
        if progress.phase == ORDERED and _reached(page_newest, start, progress.started_at):
            progress.started_at = start
        progress.next_url = page.next_url
        progress.pages += 1
        self.store.stage(self.pipeline, progress.stream, self.run_id, rows, progress)
        self.staged += len(rows)
        self.on_page(len(rows))
        return len(rows)


def _reached(page_newest: str | None, start: str, kept: str) -> bool:
    """Whether a page reached the present (its newest version is at or past its read start): a change it
    passed over is no older than ``start``. The smallest such start is kept, as it bounds the cursor (with
    the store's clock moving forward, that is the first such page's)."""
    return page_newest is not None and page_newest >= start and (not kept or start < kept)


def _read_start(server_time: str | None) -> str:
    """The read's start as a version string (same fixed-width UTC form as record versions), less the margin."""
    now = dt.datetime.now(dt.UTC)
    if server_time:
        with contextlib.suppress(ValueError):
            now = dt.datetime.fromisoformat(server_time.replace("Z", "+00:00"))
    return version_of((now - CLOCK_MARGIN).strftime("%Y-%m-%dT%H:%M:%SZ"), None)
