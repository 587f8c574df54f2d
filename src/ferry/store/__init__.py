"""State: runs, read states, staged records, outbox, Bulk jobs, version/id map and dead letters."""

from ferry.store.sqlite import (
    DLQ_STATUSES,
    BulkJobRow,
    DeadLetter,
    LetterFilter,
    NewDeadLetter,
    OutboxRow,
    RunRow,
    StagedRecord,
    Store,
    utc_now,
)

__all__ = [
    "DLQ_STATUSES",
    "BulkJobRow",
    "DeadLetter",
    "LetterFilter",
    "NewDeadLetter",
    "OutboxRow",
    "RunRow",
    "StagedRecord",
    "Store",
    "utc_now",
]
