"""A Shopify stream's incremental read, as the pages and opaque states of the Source contract.

Where the read stands travels in each page's state (``ReadState``, JSON): the engine stages the page's
records and that state in one transaction and hands the last saved state back after a crash, so the read
continues at the page after the last staged one instead of reading the stream again.

A stream is read in updated_at order from its cursor (phase ORDERED). Shopify's page cursors are keyset
ranges over (updated_at, id): a record edited on a page already passed gets a newer updated_at, sorts
after every page served so far and comes again later in the same read, at its newest version (latest
wins) with no second read of the stream.

The cursor rule. A page can pass over a change only if the change commits after the page was served with
an updated_at below the page's last one. Changes are stamped at most CLOCK_MARGIN before they become
visible, so such a change has updated_at >= T - margin, T the store's clock (its ``Date`` header) when it
served that page; the page itself then reached T - margin (its newest version >= it): "the read reached
the present". So the progress keeps, in ``started_at``, the smallest ``T - margin`` of a page that reached
it, and the cursor moves to the newest version seen but never past that value; the next run's inclusive
lower bound then meets any such change. A backfill of history never reaches the present, and its cursor is
simply the newest version seen: a change made after its last page is newer than everything the read
returned. The last page of a read carries the state with the new cursor and no progress: the cursor moves
in the same transaction as that page is staged.

A read an older ferry left (phase PAGES or CATCHUP, paged in id order; the store's migration turns its
``cursors`` and ``reads`` rows into this state) is finished as that ferry would have: the rest of its pages,
then a catch-up read of what changed since the read began, the cursor never past the catch-up's own start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from ferry.connectors.shopify.normalize import mark_unsettled
from ferry.core.contracts import SourcePage
from ferry.errors import PermanentError
from ferry.model.values import SETTLE_SECONDS, version_of

log = structlog.get_logger("ferry.connectors.shopify.reader")

# Shopify's updated_at has one-second resolution, the store's clock is not ours, and a write is stamped a
# little before it commits: a change is taken to be visible within this long of its updated_at, so a page
# served at the store's time T (its Date header) cannot pass over a change older than T - CLOCK_MARGIN.
CLOCK_MARGIN = dt.timedelta(seconds=SETTLE_SECONDS)  # the same window makes a record seen in it unsettled
ORDERED = "ordered"  # one read in updated_at order; what it needs to stay correct is in the module docstring
PAGES, CATCHUP = "pages", "catchup"  # an older ferry's read in id order, and its catch-up read


@dataclass(slots=True)
class ShopifyPage:
    """One page as the store served it."""

    records: list[dict[str, Any]]
    next_url: str | None  # where the following page starts; saved to continue a read after a crash
    server_time: str | None  # the store's clock (``Date`` header) as ``YYYY-MM-DDTHH:MM:SSZ``, if it sent one


class PageReader(Protocol):
    """What the reader needs of the store: keyset pages in updated_at order, or from a saved next-page link."""

    def read_pages(
        self, stream: str, *, updated_at_min: str | None = None, resume_url: str | None = None
    ) -> AsyncIterator[ShopifyPage]: ...


@dataclass(slots=True)
class Progress:
    """Where an unfinished phase of a stream read stands."""

    phase: str  # ORDERED; legacy: PAGES (id order) then CATCHUP
    since: str | None  # the phase's inclusive lower bound on updated_at (a version string)
    next_url: str | None  # the next page to fetch (None: the phase has no page left once ``pages`` > 0)
    newest: str | None  # newest version staged so far
    # The cursor never passes it. ORDERED: the store's clock (less the margin) at the first page that reached
    # the present, "" while none has; PAGES/CATCHUP: the clock when the phase began.
    started_at: str
    pages: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "since": self.since,
            "next_url": self.next_url,
            "newest": self.newest,
            "started_at": self.started_at,
            "pages": self.pages,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            str(data.get("phase") or ORDERED),
            data.get("since"),
            data.get("next_url"),
            data.get("newest"),
            str(data.get("started_at") or ""),
            int(data.get("pages") or 0),
        )


@dataclass(slots=True)
class ReadState:
    """A stream's read state: the cursor the next read starts from, and the read under way, if any."""

    cursor: str | None
    read: Progress | None = None

    @classmethod
    def parse(cls, state: dict[str, Any] | None) -> ReadState:
        if not state:
            return cls(None)
        read = state.get("read")
        return cls(state.get("cursor"), Progress.from_json(read) if isinstance(read, dict) else None)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cursor": self.cursor}
        if self.read is not None:
            out["read"] = self.read.as_json()
        return out


async def read_stream(
    store: PageReader, stream: str, state: dict[str, Any] | None, version: Callable[[str, dict[str, Any]], str]
) -> AsyncIterator[SourcePage]:
    """The pages of one stream's read from ``state``, each with the state after it; the last one's state holds
    the moved cursor and no progress. ``version`` gives a raw record's version (the cursor's unit)."""
    saved = ReadState.parse(state)
    resumed = saved.read is not None
    progress = saved.read or Progress(ORDERED, saved.cursor, None, None, "")
    if resumed:
        log.info("read.resume", stream=stream, phase=progress.phase, pages=progress.pages)
    while True:
        async for records, after in _phase(store, stream, progress, version):
            if after is None:  # the phase's last page: what comes after it
                after = _after_phase(saved.cursor, progress)
            yield SourcePage(records, after.as_json(), resumed)
        if progress.phase != PAGES:
            return
        progress = _catch_up(progress)


async def _phase(
    store: PageReader, stream: str, progress: Progress, version: Callable[[str, dict[str, Any]], str]
) -> AsyncIterator[tuple[list[dict[str, Any]], ReadState | None]]:
    """Each page of a phase with the state after it (None on the phase's last page: the caller decides it)."""
    if progress.next_url is None and progress.pages > 0:
        # Every page of this phase is staged already (an older ferry crashed before its next step).
        yield [], None
        return
    resume = progress.next_url
    try:
        async for page in store.read_pages(stream, updated_at_min=progress.since, resume_url=resume):
            resume = None
            _advance(progress, page, stream, version)
            mark_unsettled(stream, page.records, read_start(page.server_time), time.time())
            more = ReadState(None, progress) if page.next_url is not None else None
            yield page.records, more
    except PermanentError as exc:
        if resume is None:
            raise
        # A saved page link the store no longer honours: read the phase again from its lower bound.
        log.warning("read.resume_link_refused", stream=stream, error=str(exc))
        progress.next_url, progress.pages = None, 0
        async for item in _phase(store, stream, progress, version):
            yield item


def _advance(progress: Progress, page: ShopifyPage, stream: str, version: Callable[[str, dict[str, Any]], str]) -> None:
    """Where the read stands after ``page``."""
    start = read_start(page.server_time)
    if progress.phase != ORDERED and not progress.started_at:
        progress.started_at = start
    page_newest = max((version(stream, raw) for raw in page.records), default=None)
    if page_newest is not None and (progress.newest is None or page_newest > progress.newest):
        progress.newest = page_newest
    if progress.phase == ORDERED and _reached(page_newest, start, progress.started_at):
        progress.started_at = start
    progress.next_url = page.next_url
    progress.pages += 1


def _after_phase(cursor: str | None, progress: Progress) -> ReadState:
    """The state once a phase's pages are all read: a legacy id-order read goes on with its catch-up;
    otherwise the read is done and its cursor moves (forward only)."""
    if progress.phase == PAGES:
        return ReadState(cursor, _catch_up(progress))
    return ReadState(moved_cursor(cursor, progress))


def _catch_up(progress: Progress) -> Progress:
    """An older ferry's main read is done: catch up from its start, at the catch-up's own start time."""
    return Progress(CATCHUP, progress.started_at or None, None, progress.newest, "", 0)


def moved_cursor(cursor: str | None, progress: Progress) -> str | None:
    """ORDERED: started_at is where the read first reached the present (or "": it never did); CATCHUP: when the
    catch-up began. Either way the new cursor stops there, and a cursor never moves back."""
    new = progress.newest
    if new is not None and progress.started_at and progress.started_at < new:
        new = progress.started_at
    if new is None or (cursor is not None and new <= cursor):
        return cursor
    return new


def _reached(page_newest: str | None, start: str, kept: str) -> bool:
    """Whether a page reached the present (its newest version is at or past its read start): a change it
    passed over is no older than ``start``. The smallest such start is kept, as it bounds the cursor (with
    the store's clock moving forward, that is the first such page's)."""
    return page_newest is not None and page_newest >= start and (not kept or start < kept)


def read_start(server_time: str | None) -> str:
    """The read's start as a version string (same fixed-width UTC form as record versions), less the margin."""
    now = dt.datetime.now(dt.UTC)
    if server_time:
        with contextlib.suppress(ValueError):
            now = dt.datetime.fromisoformat(server_time.replace("Z", "+00:00"))
    return version_of((now - CLOCK_MARGIN).strftime("%Y-%m-%dT%H:%M:%SZ"), None)
