"""State: the ports of ``ferry.core.ports`` on SQLite (``Store``, also named ``SqliteStore``), and the
dataclasses callers hand them and get back. See docs/store.md."""

from ferry.core.ports import (
    DLQ_STATUSES,
    DeadLetter,
    FailedAttempt,
    JournalEntry,
    LetterFilter,
    NewDeadLetter,
    OutboxRow,
    PlannedRow,
    RemoteJob,
    RunRow,
    StagedRecord,
    StagedRow,
    StateStore,
    Written,
)
from ferry.store.sqlite import SqliteStore, Store, utc_now

__all__ = [
    "DLQ_STATUSES",
    "DeadLetter",
    "FailedAttempt",
    "JournalEntry",
    "LetterFilter",
    "NewDeadLetter",
    "OutboxRow",
    "PlannedRow",
    "RemoteJob",
    "RunRow",
    "SqliteStore",
    "StagedRecord",
    "StagedRow",
    "StateStore",
    "Store",
    "Written",
    "utc_now",
]
