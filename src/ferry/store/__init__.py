"""State: runs, cursors, staged records, outbox, version/id map and dead letters."""

from ferry.store.sqlite import DeadLetter, NewDeadLetter, OutboxRow, RunRow, StagedRecord, Store

__all__ = ["DeadLetter", "NewDeadLetter", "OutboxRow", "RunRow", "StagedRecord", "Store"]
