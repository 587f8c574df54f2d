"""Remote jobs, connector-neutral: create, journal, upload, close, wait, collect, and resume after a crash.

A remote job (Salesforce Bulk API 2.0 ingest, Shopify Bulk Operations) is created, fed, closed, polled and
collected while the run goes on; a run that crashes in between must find the job again and collect it
rather than send its records a second time. A job API implements ``JobApi`` (bound to what its jobs do: an
object and operation, a query); ``start_job`` and ``resume_job`` run the lifecycle the same way for every
API, in the shape of Airbyte CDK's ``async_job`` (a repository of jobs, an orchestrator over it).

An ingest job's records are journaled before they are uploaded. The engine keeps the journal
(``ferry.core.contracts.JobJournal``, stored through the ``RemoteJobJournal`` port); ``JournaledPages`` is
the sink side of the bargain: it pulls the engine's pages for the job API's upload and tells the journal
which job each record goes to, always before the record can be uploaded.

The order it keeps, whatever the job API: the first page is read before the job exists (the API may need it
to decide the job's shape), so its entries wait and are journaled with the job the moment it is created; a
page read while a job is open is journaled to it at once; a stream that continues in a next job (an upload
limit reached) journals the page read last to the next job too, since its rows may be in either (a resumed
job reports a record it did not carry as not processed: a transient answer, the record is sent again).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from enum import Enum
from typing import Any, Protocol, TypeVar

from ferry.core.contracts import JobJournal, JobPage
from ferry.core.ports import JournalEntry
from ferry.core.records import MappedRecord
from ferry.errors import FerryError

Outcome = TypeVar("Outcome")
T = TypeVar("T")


class JobPhase(Enum):
    OPEN = "open"  # created, its data not (all) uploaded: it can never finish, abort it and start over
    RUNNING = "running"  # closed (or a read job started): wait for it
    DONE = "done"  # terminal: its results can be collected


class JobApi(Protocol[Outcome]):
    """One remote job API, bound to what its jobs do. ``Outcome`` is the API's own account of a finished job
    (its state and counts); results are whatever the job produces (per-record answers, or records read)."""

    async def create(self) -> str:
        """A new job; its id. Not retried blindly: a repeated create at worst leaves an empty job to expire."""
        ...

    async def upload(self, job_id: str, body: bytes | AsyncIterator[bytes]) -> None:
        """The job's data, whole or streamed (sent once: an upload that may have landed is never repeated)."""
        ...

    async def close(self, job_id: str) -> None:
        """No more data: the target may start."""
        ...

    async def phase(self, job_id: str) -> JobPhase:
        """Where a job found in the journal stands. Raises PermanentError when the target no longer knows it."""
        ...

    async def wait(self, job_id: str, *, expected_rows: int | None = None, immediate: bool = False) -> Outcome:
        """Poll (with backoff) until the job is terminal. ``immediate``: it may be done already (a resume)."""
        ...

    def results(self, outcome: Outcome) -> AsyncIterator[list[Any]]:
        """What the finished job produced, in batches."""
        ...

    async def abort(self, job_id: str) -> None:
        """Best effort: the job stops (or expires on its own)."""
        ...


async def start_job(
    api: JobApi[Any],
    body: bytes | AsyncIterator[bytes] | None = None,
    *,
    on_created: Callable[[str], None] | None = None,
) -> str:
    """Create a job, tell ``on_created`` (the journal) before anything else happens to it, then upload
    ``body`` (none for a read job) and close it. A failed upload aborts the job and raises."""
    job_id = await api.create()
    if on_created is not None:
        on_created(job_id)
    if body is not None:
        try:
            await api.upload(job_id, body)
            await api.close(job_id)
        except FerryError:
            await api.abort(job_id)
            raise
    return job_id


async def resume_job(api: JobApi[Outcome], job_id: str) -> Outcome | None:
    """The outcome of a job a crashed run left, once it is terminal; None when it never got its data (it is
    aborted: send its records again). PermanentError from ``phase``: the target no longer knows the job."""
    if await api.phase(job_id) is JobPhase.OPEN:
        await api.abort(job_id)
        return None
    return await api.wait(job_id, immediate=True)


class JournaledPages:
    """Pages of one streamed remote-job upsert, journaled job by job (see the module docstring)."""

    def __init__(self, journal: JobJournal | None, external_key: Callable[[MappedRecord], str]) -> None:
        self._journal = journal
        self._external_key = external_key
        self.jobs: list[str] = []
        self._pending: list[JournalEntry] = []
        self._last_page: list[JournalEntry] = []

    def job_created(self, job_id: str) -> None:
        """The job API's hook: runs right after the job exists, before its data is uploaded."""
        entries = self._pending if not self.jobs else [*self._last_page, *self._pending]
        self.jobs.append(job_id)
        self._pending = []
        if self._journal is not None:
            self._journal.job_created(job_id, entries)

    async def records(
        self, pages: AsyncIterator[JobPage] | Iterable[JobPage]
    ) -> AsyncIterator[Sequence[MappedRecord]]:
        """The pages' records for the job API's upload, each page journaled before it is handed on."""
        async for page in aiterate(pages):
            self._page_read(page)
            yield page.records

    def _page_read(self, page: JobPage) -> None:
        key_of = self._external_key
        entries = [
            JournalEntry(key, version, key_of(record))
            for record, (key, version) in zip(page.records, page.keys, strict=True)
        ]
        self._last_page = entries
        if not self.jobs:
            self._pending.extend(entries)  # waits for the job to exist
        elif self._journal is not None:
            self._journal.page_sent(self.jobs[-1], entries)


async def aiterate(items: AsyncIterable[T] | Iterable[T]) -> AsyncIterator[T]:
    """Either kind of iterable, as an async iterator (pages come from a generator or a plain list)."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
