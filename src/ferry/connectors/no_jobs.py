"""The Sink contract's remote-job methods for a target that has no remote write jobs (QuickBooks; Shopify's
customers): its ``write_costs`` offer no job strategy, so the planner never picks one and a call is a bug,
refused plainly and permanently rather than answered with nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import ClassVar

from ferry.core.contracts import JobJournal, JobPage
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult, StreamAnswer
from ferry.errors import PermanentError


class NoRemoteJobs:
    NO_JOBS: ClassVar[str] = "this target has no remote write jobs"

    def upsert_stream(
        self,
        obj: str,
        external_id: str,
        pages: AsyncIterator[JobPage] | Iterable[JobPage],
        journal: JobJournal,
        *,
        columns: Sequence[str] | None = None,
    ) -> AsyncIterator[StreamAnswer]:
        raise PermanentError(self.NO_JOBS)

    async def resume_job(
        self, job_id: str, external_id: str, records: Sequence[MappedRecord]
    ) -> list[RecordResult] | None:
        raise PermanentError(self.NO_JOBS)
