"""The state store's ports: one protocol per concern, dataclasses in and out, no backend types.

SQLite (``ferry.store.sqlite``) is the embedded backend; a PostgreSQL one comes with distributed mode.
Every backend passes the same contract suite (``tests/store/contract/``). The ports are synchronous:
each call is one short transaction on local state, cheaper than a task switch on SQLite; a backend that
talks to a server keeps calls short and is called from worker threads where it matters.

The atomic units are the invariants' durability points (docs/architecture.md): a page staged together with
the read state that follows it; a chunk planned together with the mark past it; a batch's answers recorded
(version map, dead letters, outbox removal, attempts, finished jobs) in one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DLQ_STATUSES = ("open", "resolved", "discarded")
# What started a run: `ferry run` (manual), a pipeline's `schedule:` inside `ferry serve`, the event processor of
# `ferry serve` (webhook), or a dead-letter replay.
RUN_ORIGINS = ("manual", "schedule", "webhook", "replay")

# ----------------------------------------------------------------------------------------------- dataclasses
# The rows made once per record (PlannedRow, Written, JournalEntry) are not frozen: a frozen dataclass's
# __init__ sets each field through object.__setattr__, ~1 us more per record on the per-record path.


@dataclass(slots=True)
class RunRow:
    id: int
    pipeline: str
    started_at: str
    finished_at: str | None
    status: str
    stats: dict[str, Any]
    error: str | None
    progress_at: str | None = None
    pid: int | None = None  # the process that ran it, on host
    host: str | None = None
    origin: str = "manual"  # one of RUN_ORIGINS


@dataclass(slots=True)  # not frozen: one is built per record read, and a frozen __init__ costs 7x as much
class StagedRow:
    """A raw source record to stage: its identity, as its source gives it, and its bytes (JSON)."""

    key: str
    version: str
    payload: bytes


@dataclass(slots=True)
class StagedRecord:
    seq: int
    stream: str
    key: str
    version: str
    payload: bytes


@dataclass(slots=True)
class PlannedRow:
    """A mapped, validated record to queue for the target. ``source`` is the seq of the staged record it was
    mapped from (the raw record stays in staging, once), or the raw payload itself, or None."""

    key: str
    version: str
    payload: dict[str, Any]
    source: int | bytes | None = None
    stream: str | None = None  # the source stream and record id the payload was mapped from
    source_key: str | None = None


@dataclass(slots=True)
class OutboxRow:
    key: str
    version: str
    payload: dict[str, Any]
    source_payload: bytes | None
    attempts: int
    # One entry per failed attempt: {"attempt", "at", "errors": [{code, message, fields}]}.
    history: list[dict[str, Any]] = field(default_factory=list)
    stream: str | None = None
    source_key: str | None = None


@dataclass(slots=True)
class Written:
    """A record the target holds now, at ``version``, under its own id (None when the target did not say)."""

    key: str
    version: str
    target_id: str | None = None


@dataclass(slots=True)
class FailedAttempt:
    """A transient failure of one queued record: counted, with what the target said; it goes out again."""

    key: str
    errors: list[dict[str, Any]]


@dataclass(slots=True)
class JournalEntry:
    """One record a remote job carries: ferry's key and version, and the key the target answers it by."""

    key: str
    version: str
    external_key: str = ""


@dataclass(slots=True)
class RemoteJob:
    object: str
    job_id: str
    entries: list[tuple[str, str]]  # (key, version) of every record the job carries
    created_at: str


@dataclass(slots=True)
class DeadLetter:
    id: int
    pipeline: str
    run_id: int | None
    object: str
    record_key: str
    version: str | None
    error_code: str
    message: str
    fields: list[str]
    errors: list[dict[str, Any]]
    source_payload: Any
    mapped_payload: Any
    attempts: int
    first_seen: str
    last_seen: str
    status: str
    stream: str | None = None
    source_key: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    resolved_at: str | None = None
    resolution: str | None = None


@dataclass(slots=True)
class NewDeadLetter:
    object: str
    record_key: str
    version: str | None
    errors: list[dict[str, Any]]
    source_payload: bytes | None
    mapped_payload: dict[str, Any] | None
    # Which source record this came from (stream and its id), so a replay can read it again.
    stream: str | None = None
    source_key: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class LetterFilter:
    """Which dead letters a list, replay or discard applies to; every given criterion must match."""

    pipeline: str | None = None
    object: str | None = None
    code: str | None = None
    since: str | None = None  # last seen at or after this UTC timestamp
    status: str | None = "open"  # None: any status
    ids: Sequence[int] = ()


# ----------------------------------------------------------------------------------------------- ports


class RunLog(Protocol):
    def start_run(
        self, pipeline: str, *, pid: int | None = None, host: str | None = None, origin: str = "manual"
    ) -> int: ...
    def close_abandoned_runs(self, pipeline: str) -> list[RunRow]: ...
    def pipelines(self) -> set[str]: ...
    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], error: str | None = None) -> None: ...
    def mark_progress(self, run_id: int) -> None: ...
    def note_run_paused(self, run_id: int, reason: str) -> None:
        """A process helping a running run (a ``ferry worker``) found the API budget spent: say so on the run's row
        (its error, while it still runs), for the run's own process to pause on."""
        ...
    def add_run_calls(self, run_id: int, calls: Mapping[str, int]) -> None:
        """Add API calls a process helping the run (a ``ferry worker``) sent for it, by part: ``source``,
        ``setup`` (sign-in, describe) or ``object:<name>`` (its writes); summed over every process."""
        ...
    def run_calls(self, run_id: int) -> dict[str, int]:
        """The calls ``add_run_calls`` added for the run, by part (empty when no helper added any)."""
        ...
    def runs_calls(self, run_ids: Collection[int]) -> dict[int, dict[str, int]]:
        """``run_calls`` of many runs in one read (the runs a listing shows); runs without any are left out."""
        ...
    def list_runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRow]: ...
    def get_run(self, run_id: int) -> RunRow | None: ...


class ReadCheckpoints(Protocol):
    """Where each stream's read stands: the source's opaque state, saved with every staged page."""

    def read_state(self, pipeline: str, stream: str) -> dict[str, Any] | None: ...


class Staging(Protocol):
    def stage(
        self, pipeline: str, stream: str, run_id: int, rows: Sequence[StagedRow], state: dict[str, Any] | None
    ) -> int:
        """Stage the rows and save ``state`` as the stream's read state, in one transaction; returns rows added
        (a (key, version) already staged is kept once). Fenced by run: when a later run (a higher ``run_id``) has
        saved the stream's state, a save of an earlier run raises ``ReadSuperseded`` and stages nothing; run 0
        (staged by no run: webhook deliveries, change feeds) is never refused and leaves the fence as it is."""
        ...

    def staged(
        self, pipeline: str, streams: Collection[str], chunk: int = 2000, after: int = 0
    ) -> Iterator[list[StagedRecord]]: ...
    def staged_count(self, pipeline: str, after: int = 0) -> int: ...
    def max_staged_seq(self, pipeline: str) -> int: ...
    def clear_staging(self, pipeline: str, up_to_seq: int) -> None: ...
    def get_mark(self, pipeline: str, name: str) -> int: ...


class Outbox(Protocol):
    def commit_planned(
        self,
        pipeline: str,
        run_id: int | None,
        planned: Mapping[str, Sequence[PlannedRow]],
        letters: Sequence[NewDeadLetter],
        mark: tuple[str, int],
    ) -> None:
        """A chunk's queued rows (per object) and dead letters, and the mark past the chunk, atomically."""
        ...

    def put_outbox(self, pipeline: str, obj: str, rows: Sequence[PlannedRow]) -> None: ...
    def outbox_count(self, pipeline: str, obj: str | None = None) -> int: ...
    def outbox(
        self, pipeline: str, obj: str, chunk: int = 5000, *, with_source: bool = True
    ) -> Iterator[list[OutboxRow]]: ...
    def outbox_rows(
        self, pipeline: str, obj: str, keys: Sequence[str], *, with_source: bool = True
    ) -> list[OutboxRow]: ...
    def source_payloads(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, bytes | None]: ...
    def record_results(
        self,
        pipeline: str,
        obj: str,
        run_id: int | None,
        written: Sequence[Written],
        letters: Sequence[NewDeadLetter],
        done: Sequence[tuple[str, str]],
        jobs: Sequence[str] = (),
        retry: Sequence[FailedAttempt] = (),
    ) -> None:
        """A batch's answers in one transaction: versions, dead letters, (key, version) rows done, attempts
        counted, and the remote jobs that carried it forgotten. Never half."""
        ...


class VersionMap(Protocol):
    """The newest version each key has in the target, and the target's own id for it (the id map)."""

    def versions_for(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]: ...
    def record_written(
        self, pipeline: str, obj: str, rows: Sequence[Written], resolution: str = "written"
    ) -> None: ...
    def target_ids(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]: ...
    def keys_for_targets(self, pipeline: str, obj: str, target_ids: Sequence[str]) -> dict[str, str]:
        """The id map read backwards: each of ``target_ids`` the map holds -> the key written there (a two-way
        sync's other direction finds the record this one wrote)."""
        ...

    def any_target_id(self, pipeline: str, obj: str, prefix: str) -> str | None:
        """One target id of the object's id map that starts with ``prefix``, or None: the form a target's ids
        take (a two-way sync reads a GraphQL global id's type path from it, ``TwoWay.linked``)."""
        ...


class WrittenDigests(Protocol):
    """A digest of the payload ferry last wrote for each key (echo suppression, ``engine/echo.py``): a record
    whose mapped payload has the digest of what ferry itself last wrote for its key changes nothing in the
    target, so it is not sent (a two-way sync's own write coming back)."""

    def written_digests(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]: ...
    def save_written_digests(self, pipeline: str, obj: str, digests: Mapping[str, str]) -> None: ...


class DeadLetters(Protocol):
    def dead_letter(self, pipeline: str, run_id: int | None, letters: Sequence[NewDeadLetter]) -> None: ...
    def dead_letter_keys(self, pipeline: str, obj: str) -> set[str]: ...
    def find_dead_letters(self, f: LetterFilter, limit: int | None = 100, offset: int = 0) -> list[DeadLetter]: ...
    def count_matching_letters(self, f: LetterFilter) -> int: ...
    def find_dead_letters_lean(self, f: LetterFilter, limit: int = 100) -> list[DeadLetter]:
        """As ``find_dead_letters``, each letter's ``source_payload`` left None (``dead_letter_source_payloads``)."""
        ...

    def dead_letter_source_payloads(self, letter_ids: Sequence[int]) -> dict[int, Any]: ...
    def count_dead_letters(self, pipeline: str | None = None, status: str = "open") -> dict[str, int]: ...
    def get_dead_letter(self, letter_id: int) -> DeadLetter | None: ...
    def dead_letter_for(self, pipeline: str, obj: str, key: str) -> DeadLetter | None: ...
    def discard_dead_letters(self, f: LetterFilter, reason: str) -> int: ...


class RemoteJobJournal(Protocol):
    """Remote jobs (Bulk API 2.0 ingest, Shopify Bulk Operations...) and the records each carries, journaled
    the moment a job exists and before each page is uploaded, so a crashed run resumes the job."""

    def save_remote_job(self, pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]) -> None: ...
    def add_remote_job_records(
        self, pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]
    ) -> None: ...
    def remote_job_entries(
        self, pipeline: str, obj: str, job_ids: Sequence[str], external_keys: Sequence[str]
    ) -> list[JournalEntry]: ...
    def record_job_written(self, pipeline: str, obj: str, job_id: str, failed_external_keys: Collection[str]) -> int:
        """Every journaled record of the job still queued at its version and not among the failures: written."""
        ...

    def remote_jobs(self, pipeline: str, obj: str | None = None) -> list[RemoteJob]: ...
    def forget_remote_job(self, pipeline: str, obj: str, job_id: str) -> None: ...


class ApiLedger(Protocol):
    """API calls counted per minute before they are sent, so a share of a daily allocation holds across runs."""

    def take_api_calls(
        self, pipeline: str, system: str, minute: int, calls: int, *, cap: int | None, since_minute: int
    ) -> tuple[bool, int]: ...
    def api_call_buckets(self, pipeline: str, system: str, since_minute: int) -> list[tuple[int, int]]: ...
    def prune_api_calls(self, before_minute: int) -> int: ...
    def save_api_allocation(self, pipeline: str, system: str, daily_max: int) -> None: ...
    def api_allocation(self, pipeline: str, system: str) -> int | None: ...


class Deliveries(Protocol):
    """Inbound events (webhooks) made durable before they are acknowledged, each remembered by its delivery key
    long enough to drop the sender's retries and duplicates (Shopify retries for 4 hours)."""

    def accept_delivery(
        self,
        pipeline: str,
        delivery_key: str,
        stream: str | None,
        rows: Sequence[StagedRow],
        letters: Sequence[NewDeadLetter] = (),
    ) -> bool:
        """In one transaction: remember ``delivery_key``, stage ``rows`` into ``stream`` (as ``Staging.stage`` with
        run id 0, the read state untouched) and store ``letters`` as dead letters. False, with nothing stored,
        when the key is already remembered (a duplicate delivery)."""
        ...

    def delivery_seen(self, pipeline: str, delivery_key: str) -> bool: ...

    def prune_deliveries(self, before: str) -> int:
        """Forget delivery keys received before the UTC timestamp ``before``; returns how many."""
        ...


class StateStore(RunLog, ReadCheckpoints, Staging, Outbox, VersionMap, DeadLetters, RemoteJobJournal, ApiLedger,
                 Deliveries, WrittenDigests, Protocol):
    """Every port in one backend (what the engine opens)."""

    def reset_pipeline(self, pipeline: str) -> None: ...
    def close(self) -> None: ...
