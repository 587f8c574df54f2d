"""The target's answers: one ``RecordResult`` per record, or a remote job's ``JobSucceeded``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry.errors import RecordError


@dataclass(slots=True)
class RecordResult:
    """The target's answer for one record. ``key`` is the external id value sent."""

    key: str
    success: bool
    id: str | None = None
    created: bool | None = None  # None: the target did not say (a job answered by its counts)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def transient(self) -> bool:
        return not self.success and bool(self.errors) and all(e.transient for e in self.errors)


@dataclass(frozen=True, slots=True)
class JobSucceeded:
    """A remote job's answer for every row it carried that no result row has reported: succeeded.

    Sent instead of the job's per-record success results when the job's own counts prove them (complete,
    every uploaded row processed, few failures): the caller matches it to the rows it journaled for the
    job. Such rows have no target id and no created/updated flag, which only those results would have told.
    """

    job_id: str
    rows: int


# What a streamed upsert through a remote job yields: a batch of per-record results, or a job's JobSucceeded.
StreamAnswer = list[RecordResult] | JobSucceeded
