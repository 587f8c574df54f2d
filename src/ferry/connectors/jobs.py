"""Remote jobs, connector-neutral: which records each job carries, journaled before they are uploaded.

A remote job (Salesforce Bulk API 2.0 ingest, Shopify Bulk Operations) is created, fed, closed, polled and
collected while the run goes on; a run that crashes in between must find the job again and collect it
rather than send its records a second time. The engine keeps the journal (``ferry.core.contracts.JobJournal``,
stored through the ``RemoteJobJournal`` port); this module is the sink side of the bargain: it pulls the
engine's pages for the job API's upload and tells the journal which job each record goes to, always before
the record can be uploaded.

The order it keeps, whatever the job API: the first page is read before the job exists (the API may need it
to decide the job's shape), so its entries wait and are journaled with the job the moment it is created; a
page read while a job is open is journaled to it at once; a stream that continues in a next job (an upload
limit reached) journals the page read last to the next job too, since its rows may be in either (a resumed
job reports a record it did not carry as not processed: a transient answer, the record is sent again).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence

from ferry.core.contracts import JobJournal, JobPage
from ferry.core.ports import JournalEntry
from ferry.core.records import MappedRecord


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
        async for page in _aiter(pages):
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


async def _aiter(pages: AsyncIterator[JobPage] | Iterable[JobPage]) -> AsyncIterator[JobPage]:
    if isinstance(pages, AsyncIterable):
        async for page in pages:
            yield page
    else:
        for page in pages:
            yield page
