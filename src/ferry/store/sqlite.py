"""State store on SQLite (WAL): runs, read states, staged source records, outbox, version/id map, dead letters.

One file holds everything a pipeline needs to resume: what was read (staging),
what is about to be written (outbox), what the target holds (versions, with the
target id), and what could not be written (dlq). Writes are grouped in
transactions so that a checkpoint only ever covers what is already on disk.

``Store`` implements the ports of ``ferry.core.ports`` (see docs/store.md): dataclasses in and out, no
sqlite3 type in a public signature. Its transactions are its own business (``_transaction``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ferry.core.ports import (
    DLQ_STATUSES,
    RUN_ORIGINS,
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
    Written,
)
from ferry.errors import ReadSuperseded, StateError

if TYPE_CHECKING:
    from ferry.core.ports import StateStore

__all__ = ["DLQ_STATUSES", "SqliteStore", "Store", "utc_now"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    stats TEXT,
    error TEXT
);
-- Where each stream's read stands: the source's own state (JSON, opaque here), saved in the same transaction
-- as each staged page, so a restarted run continues after the last staged page and a finished read's cursor
-- moves with its last page.
CREATE TABLE IF NOT EXISTS read_states (
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    state TEXT NOT NULL,  -- JSON text: readable with SQLite's json_extract when a read needs looking into
    updated_at TEXT NOT NULL,
    run_id INTEGER NOT NULL DEFAULT 0,  -- the run that saved it last: an earlier run's save is refused (stage)
    PRIMARY KEY (pipeline, stream)
);
-- Raw source records, durable before the read state that covers them moves.
CREATE TABLE IF NOT EXISTS staging (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    payload BLOB NOT NULL,
    run_id INTEGER NOT NULL,
    UNIQUE (pipeline, stream, key, version)
);
-- In seq order per pipeline: the planner reads staged records in arrival order across its streams, a page at
-- a time. (An index led by stream made SQLite sort every remaining row, payloads and all, for each page.)
CREATE INDEX IF NOT EXISTS staging_by_seq ON staging (pipeline, seq);
-- Mapped, validated payloads waiting to be written, newest version per key. The raw source record stays in
-- staging (``source_seq``), once per source record, however many target rows it maps to. ``source_payload``
-- holds it only for rows queued without a staged record (and for rows an older ferry queued).
CREATE TABLE IF NOT EXISTS outbox (
    pipeline TEXT NOT NULL,
    object TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    payload BLOB NOT NULL,
    source_payload BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline, object, key)
);
-- What the target holds: newest source version written per key, and the target's id.
CREATE TABLE IF NOT EXISTS versions (
    pipeline TEXT NOT NULL,
    object TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    target_id TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, object, key)
);
-- The id map read backwards (keys_for_targets): a two-way sync finds the record the other direction wrote.
CREATE INDEX IF NOT EXISTS versions_by_target ON versions (pipeline, object, target_id);
-- What ferry last wrote per key, as a digest of the mapped payload: its own writes coming back are echoes.
CREATE TABLE IF NOT EXISTS written_digests (
    pipeline TEXT NOT NULL,
    object TEXT NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (pipeline, object, key)
);
CREATE TABLE IF NOT EXISTS dlq (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    run_id INTEGER,
    object TEXT NOT NULL,
    record_key TEXT NOT NULL,
    version TEXT,
    error_code TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT NOT NULL,
    errors TEXT NOT NULL,
    mapped_payload BLOB,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    UNIQUE (pipeline, object, record_key)
);
CREATE INDEX IF NOT EXISTS dlq_open ON dlq (pipeline, status, object);
-- A letter's source record as it was read (a whole order for each of its lines: ~12 KB), kept apart from the
-- letter's row: SQLite rewrites a row whole, overflow pages included, on any UPDATE, and reads through them to
-- reach a column stored after the blob. Resolving, reopening or listing letters touches only the narrow row.
CREATE TABLE IF NOT EXISTS dlq_sources (
    letter_id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
);
-- Named high-water marks (e.g. the last staged seq already mapped into the outbox or the DLQ).
CREATE TABLE IF NOT EXISTS marks (
    pipeline TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (pipeline, name)
);
-- Bulk jobs created but whose results are not recorded yet: (key, version) of every record they carry.
CREATE TABLE IF NOT EXISTS bulk_jobs (
    pipeline TEXT NOT NULL,
    object TEXT NOT NULL,
    job_id TEXT NOT NULL,
    entries BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, object, job_id)
);
-- What a Bulk job carries, written page by page as its CSV is generated (a job can hold millions of rows:
-- never one list in memory). ``ext`` is the external id as the job's results report it.
CREATE TABLE IF NOT EXISTS bulk_job_records (
    pipeline TEXT NOT NULL,
    object TEXT NOT NULL,
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    ext TEXT NOT NULL,
    PRIMARY KEY (pipeline, object, job_id, key)
);
CREATE INDEX IF NOT EXISTS bulk_job_records_by_ext ON bulk_job_records (pipeline, object, job_id, ext);
-- ---- API call ledger (budget guard, connectors/salesforce/budget.py) ---------------------------------
-- The calls each pipeline sent to a system whose daily allocation it shares, per minute (unix time // 60),
-- counted BEFORE each call is sent (rows older than the rolling window are pruned).
CREATE TABLE IF NOT EXISTS api_calls (
    pipeline TEXT NOT NULL,
    system TEXT NOT NULL,
    minute INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (pipeline, system, minute)
) WITHOUT ROWID;
-- The system's whole daily allocation as last reported (Salesforce: api-usage=used/MAX), so that a share
-- given as a percentage is known before the first call of a run.
CREATE TABLE IF NOT EXISTS api_allocations (
    pipeline TEXT NOT NULL,
    system TEXT NOT NULL,
    daily_max INTEGER NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, system)
);
-- API calls sent for a run by processes helping it, per part (``source``, ``setup``, ``object:<name>``):
-- the PostgreSQL store's ``run_calls`` (ferry workers), kept here too so both stores speak the same ports.
CREATE TABLE IF NOT EXISTS run_calls (
    run_id INTEGER NOT NULL,
    part TEXT NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (run_id, part)
) WITHOUT ROWID;
-- ---- end of the API call ledger ----------------------------------------------------------------------
-- Inbound deliveries (webhooks) already made durable, by the key the receiver derives from the sender's
-- delivery id: a retry or duplicate of one is acknowledged and dropped. Pruned after the retention
-- (`ferry serve --dedup-hours`, default 24 h: Shopify retries for 4 h).
CREATE TABLE IF NOT EXISTS deliveries (
    pipeline TEXT NOT NULL,
    delivery_key TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, delivery_key)
);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (received_at);
"""

# Columns added after the first release: an existing state DB gets them on open (ALTER TABLE ADD COLUMN).
_ADDED_COLUMNS = (
    ("read_states", "run_id", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "progress_at", "TEXT"),
    # Who runs it: a `running` row whose process is gone (its pipeline lock free) is shown as `died`.
    ("runs", "pid", "INTEGER"),
    ("runs", "host", "TEXT"),
    ("outbox", "history", "TEXT"),
    ("outbox", "stream", "TEXT"),
    ("outbox", "source_key", "TEXT"),
    ("dlq", "stream", "TEXT"),
    ("dlq", "source_key", "TEXT"),
    ("dlq", "history", "TEXT"),
    ("dlq", "resolved_at", "TEXT"),
    ("dlq", "resolution", "TEXT"),
    ("outbox", "source_seq", "INTEGER"),
    # What started the run (ferry.core.ports.RUN_ORIGINS); runs of an older ferry were all `ferry run`.
    ("runs", "origin", "TEXT NOT NULL DEFAULT 'manual'"),
)
# Indexes an older ferry created that nothing uses any more (each one is maintained on every write).
_DROPPED_INDEXES = ("staging_by_stream",)
# An older ferry's read tables: a stream's cursor, and its read in progress. Their rows become read states.
_LEGACY_READ_COLUMNS = ("since", "next_url", "newest", "started_at", "phase", "pages")
_V = TypeVar("_V", str, int)
_DLQ_COLUMNS = (
    "id, pipeline, run_id, object, record_key, version, error_code, message, fields, errors, "
    "(SELECT payload FROM dlq_sources WHERE letter_id = dlq.id), "
    "mapped_payload, attempts, first_seen, last_seen, status, stream, source_key, history, resolved_at, resolution"
)
# The same without the source payload (None): what a replay of thousands of letters loads (see ``dlq_sources``).
_DLQ_COLUMNS_LEAN = _DLQ_COLUMNS.replace("(SELECT payload FROM dlq_sources WHERE letter_id = dlq.id)", "NULL")
# An outbox row with its source payload: kept in the row (older rows) or in the staged record it came from.
_OUTBOX_FULL = (
    "SELECT o.key, o.version, o.payload, COALESCE(o.source_payload, s.payload), o.attempts, o.history, o.stream, "
    "o.source_key FROM outbox o LEFT JOIN staging s ON s.seq = o.source_seq"
)
# The send path's read: the source payload is only needed for a dead letter, fetched then by key.
_OUTBOX_LEAN = "SELECT o.key, o.version, o.payload, NULL, o.attempts, o.history, o.stream, o.source_key FROM outbox o"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_IN_LIST_PART = 500  # values bound per IN (...) list: well under SQLite's host-parameter limit


def _in_parts(values: Sequence[_V]) -> Iterator[tuple[Sequence[_V], str]]:
    """Split an IN-list query's values into parts: each part with its ``?,?,...`` placeholders."""
    for i in range(0, len(values), _IN_LIST_PART):
        part = values[i : i + _IN_LIST_PART]
        yield part, ",".join("?" * len(part))


def _letter_where(f: LetterFilter) -> tuple[str, list[Any]]:
    """The filter as an SQL WHERE clause (or nothing) and its arguments."""
    clauses: list[str] = []
    args: list[Any] = []
    for col, val in (
        ("status", f.status),
        ("pipeline", f.pipeline),
        ("object", f.object),
        ("error_code", f.code),
    ):
        if val:
            clauses.append(f"{col} = ?")
            args.append(val)
    if f.since:
        clauses.append("last_seen >= ?")
        args.append(f.since)
    if f.ids:
        clauses.append(f"id IN ({','.join('?' * len(f.ids))})")
        args.extend(int(i) for i in f.ids)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _source_columns(source: int | bytes | None) -> tuple[bytes | None, int | None]:
    """(source_payload, source_seq) of an outbox row: a staged record's seq is stored as the reference."""
    return (None, source) if isinstance(source, int) else (source, None)


# A written version enters the version map only moving forward; a row without a target id keeps the known one.
_VERSION_FORWARD = (
    "ON CONFLICT (pipeline, object, key) DO UPDATE SET version = excluded.version, "
    "target_id = COALESCE(excluded.target_id, versions.target_id), updated_at = excluded.updated_at "
    "WHERE excluded.version >= versions.version"
)

class Store:
    """SQLite-backed state. Thread-safe through one connection guarded by a lock."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{path.parent}: cannot create the state directory: {exc.strerror or exc}") from None
        if path.is_dir():
            raise StateError(f"{path}: a directory, not ferry's state database")
        self.path = path
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._open()
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._conn.close()
            # Nothing was written to it: a file that is not a database (or not readable) is left as it is.
            raise StateError(
                f"{path}: cannot use the state database ({exc}); restore it from a backup, or move it away "
                "to start with empty state (every pipeline then reads from the beginning)"
            ) from None

    def _open(self) -> None:
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (only an OS crash can lose the last commit).
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # Many SQLite builds (Debian's among them) default to secure_delete=ON: every deleted row is overwritten
        # with zeros, so dropping a run's staged records (~12 KB of raw JSON each) writes them all out again.
        # FAST still zeroes what sits on pages written anyway; freed overflow pages are left as they are (the
        # store holds no secrets: invariant 7 keeps them out). 6x less CPU to clear a run's staging.
        self._conn.execute("PRAGMA secure_delete=FAST")
        with self._transaction() as c:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            self._migrate(c)

    @staticmethod
    def _migrate(c: sqlite3.Connection) -> None:
        """Bring a state DB written by an older ferry up to date; never loses data (an older table's rows are
        carried into the table that replaces it, in the same transaction, before it is dropped)."""
        for table, column, decl in _ADDED_COLUMNS:
            have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        for index in _DROPPED_INDEXES:
            c.execute(f"DROP INDEX IF EXISTS {index}")
        Store._migrate_read_tables(c)
        Store._migrate_letter_sources(c)

    @staticmethod
    def _migrate_letter_sources(c: sqlite3.Connection) -> None:
        """An older ferry kept each letter's source payload in its ``dlq`` row: the payloads move to
        ``dlq_sources`` and the column goes (SQLite 3.35+; an older SQLite keeps the column, emptied)."""
        if "source_payload" not in {r[1] for r in c.execute("PRAGMA table_info(dlq)")}:
            return
        c.execute(
            "INSERT OR IGNORE INTO dlq_sources (letter_id, payload) "
            "SELECT id, source_payload FROM dlq WHERE source_payload IS NOT NULL"
        )
        if sqlite3.sqlite_version_info >= (3, 35, 0):
            c.execute("ALTER TABLE dlq DROP COLUMN source_payload")
        else:
            c.execute("UPDATE dlq SET source_payload = NULL WHERE source_payload IS NOT NULL")

    @staticmethod
    def _migrate_read_tables(c: sqlite3.Connection) -> None:
        """An older ferry kept a stream's cursor in ``cursors`` and its read in progress in ``reads`` (the only
        source then was Shopify). Each (pipeline, stream) becomes the read state that source's reader takes:
        ``{"cursor": value, "read": {since, next_url, newest, started_at, phase, pages}}`` ("read" only while
        one was under way), so an upgrade in the middle of a read continues it."""
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        states: dict[tuple[str, str], dict[str, Any]] = {}
        if "cursors" in tables:
            for pipeline, stream, value in c.execute("SELECT pipeline, stream, value FROM cursors"):
                states.setdefault((pipeline, stream), {"cursor": None})["cursor"] = value
        if "reads" in tables:
            columns = ", ".join(_LEGACY_READ_COLUMNS)
            for pipeline, stream, *values in c.execute(f"SELECT pipeline, stream, {columns} FROM reads"):
                states.setdefault((pipeline, stream), {"cursor": None})["read"] = dict(
                    zip(_LEGACY_READ_COLUMNS, values, strict=True)
                )
        now = utc_now()
        c.executemany(
            "INSERT OR IGNORE INTO read_states (pipeline, stream, state, updated_at) VALUES (?, ?, ?, ?)",
            [(pipeline, stream, orjson.dumps(state).decode(), now) for (pipeline, stream), state in states.items()],
        )
        c.execute("DROP TABLE IF EXISTS cursors")
        c.execute("DROP TABLE IF EXISTS reads")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken at once, so two processes on one
        file queue up instead of failing at commit). The adapter's own: no port exposes it."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def reset_pipeline(self, pipeline: str) -> None:
        """Forget everything about a pipeline's sync state (read states, staging, outbox, versions, dead letters)."""
        with self._transaction() as c:
            c.execute("DELETE FROM dlq_sources WHERE letter_id IN (SELECT id FROM dlq WHERE pipeline = ?)", (pipeline,))
            for table in (
                "read_states",
                "staging",
                "outbox",
                "versions",
                "dlq",
                "marks",
                "bulk_jobs",
                "bulk_job_records",
                "deliveries",
            ):
                c.execute(f"DELETE FROM {table} WHERE pipeline = ?", (pipeline,))

    # -- runs -----------------------------------------------------------------

    def start_run(
        self, pipeline: str, *, pid: int | None = None, host: str | None = None, origin: str = "manual"
    ) -> int:
        if origin not in RUN_ORIGINS:
            raise ValueError(f"unknown run origin {origin!r}: one of {', '.join(RUN_ORIGINS)}")
        with self._transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (pipeline, started_at, status, pid, host, origin) VALUES (?, ?, 'running', ?, ?, ?)",
                (pipeline, utc_now(), pid, host, origin),
            )
            return int(cur.lastrowid or 0)

    def close_abandoned_runs(self, pipeline: str) -> list[RunRow]:
        """Runs of the pipeline still `running` though their process is gone (the caller holds the pipeline's
        lock, so none is alive): marked `died`, returned as they were."""
        with self._transaction() as c:
            rows = c.execute(
                f"SELECT {self._RUN_COLUMNS} FROM runs WHERE pipeline = ? AND status = 'running' ORDER BY id",
                (pipeline,),
            ).fetchall()
            c.execute(
                "UPDATE runs SET status = 'died', finished_at = ? WHERE pipeline = ? AND status = 'running'",
                (utc_now(), pipeline),
            )
        return [self._run(r) for r in rows]

    def pipelines(self) -> set[str]:
        """Every pipeline the store knows: one that ran, or has dead letters."""
        with self._lock:
            rows = self._conn.execute("SELECT pipeline FROM runs UNION SELECT pipeline FROM dlq").fetchall()
        return {r[0] for r in rows}

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], error: str | None = None) -> None:
        with self._transaction() as c:
            c.execute(
                "UPDATE runs SET finished_at = ?, status = ?, stats = ?, error = ? WHERE id = ?",
                (utc_now(), status, orjson.dumps(stats).decode(), error, run_id),
            )

    def mark_progress(self, run_id: int) -> None:
        """Stamp the moment a run first made durable progress (once; how long a restart takes to resume)."""
        with self._transaction() as c:
            c.execute("UPDATE runs SET progress_at = ? WHERE id = ? AND progress_at IS NULL", (utc_now(), run_id))

    def note_run_paused(self, run_id: int, reason: str) -> None:
        with self._transaction() as c:
            c.execute("UPDATE runs SET error = ? WHERE id = ? AND status = 'running'", (reason, run_id))

    def add_run_calls(self, run_id: int, calls: Mapping[str, int]) -> None:
        added = [(run_id, part, n) for part, n in sorted(calls.items()) if n]
        if not added:
            return
        with self._transaction() as c:
            c.executemany(
                "INSERT INTO run_calls (run_id, part, calls) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id, part) DO UPDATE SET calls = run_calls.calls + excluded.calls",
                added,
            )

    def run_calls(self, run_id: int) -> dict[str, int]:
        return self.runs_calls([run_id]).get(run_id, {})

    def runs_calls(self, run_ids: Collection[int]) -> dict[int, dict[str, int]]:
        wanted = set(run_ids)
        if not wanted:
            return {}
        # By id range, filtered here: a listing's thousands of ids never meet SQLite's bound on parameters.
        with self._lock:
            rows = self._conn.execute(
                "SELECT run_id, part, calls FROM run_calls WHERE run_id BETWEEN ? AND ?", (min(wanted), max(wanted))
            ).fetchall()
        out: dict[int, dict[str, int]] = {}
        for run_id, part, n in rows:
            if int(run_id) in wanted:
                out.setdefault(int(run_id), {})[str(part)] = int(n)
        return out

    _RUN_COLUMNS = "id, pipeline, started_at, finished_at, status, stats, error, progress_at, pid, host, origin"

    def list_runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRow]:
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs"
        args: tuple[Any, ...] = ()
        if pipeline:
            sql += " WHERE pipeline = ?"
            args = (pipeline,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [self._run(r) for r in rows]

    def get_run(self, run_id: int) -> RunRow | None:
        with self._lock:
            r = self._conn.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._run(r) if r else None

    @staticmethod
    def _run(r: Sequence[Any]) -> RunRow:
        return RunRow(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]) if r[5] else {}, r[6], r[7], r[8], r[9],
                      r[10] or "manual")

    # -- read states -----------------------------------------------------------

    def read_state(self, pipeline: str, stream: str) -> dict[str, Any] | None:
        """The state the stream's source saved with its last staged page; None before its first read."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state FROM read_states WHERE pipeline = ? AND stream = ?", (pipeline, stream)
            ).fetchone()
        state = orjson.loads(row[0]) if row else None
        return state if isinstance(state, dict) else None

    @staticmethod
    def _save_state(c: sqlite3.Connection, pipeline: str, stream: str, state: dict[str, Any], run_id: int) -> None:
        # Fenced by run as on PostgreSQL (one process here, so it never refuses in practice; the ports agree).
        saved = c.execute(
            "INSERT INTO read_states (pipeline, stream, state, updated_at, run_id) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (pipeline, stream) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, "
            "run_id = max(read_states.run_id, excluded.run_id) "
            "WHERE excluded.run_id = 0 OR read_states.run_id <= excluded.run_id",
            (pipeline, stream, orjson.dumps(state).decode(), utc_now(), run_id),
        )
        if saved.rowcount == 0:
            raise ReadSuperseded(pipeline, stream, run_id)

    # -- staging --------------------------------------------------------------

    def stage(
        self,
        pipeline: str,
        stream: str,
        run_id: int,
        rows: Sequence[StagedRow],
        state: dict[str, Any] | None = None,
    ) -> int:
        """Durably stage rows; a (key, version) already staged is kept once. Returns the rows added.

        With ``state``, it becomes the stream's read state in the same transaction, so a crash can never
        leave a page staged without the read's progress past it recorded (or the other way round)."""
        with self._transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO staging (pipeline, stream, key, version, payload, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(pipeline, stream, r.key, r.version, r.payload, run_id) for r in rows],
            )
            added = c.total_changes - before
            if state is not None:
                self._save_state(c, pipeline, stream, state, run_id)
            return added

    def staged(
        self, pipeline: str, streams: Iterable[str], chunk: int = 2000, after: int = 0
    ) -> Iterator[list[StagedRecord]]:
        """Iterate staged records of ``streams`` after seq ``after`` in chunks, in arrival order."""
        names = list(streams)
        marks = ",".join("?" * len(names))
        last = after
        while True:
            with self._lock:
                rows = self._conn.execute(
                    # staging_by_seq walks the pipeline's rows in seq order and stops after ``chunk``:
                    # a page costs its own rows, not every row still ahead of it.
                    f"SELECT seq, stream, key, version, payload FROM staging INDEXED BY staging_by_seq "
                    f"WHERE pipeline = ? AND seq > ? AND stream IN ({marks}) ORDER BY seq LIMIT ?",
                    (pipeline, last, *names, chunk),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [StagedRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def staged_count(self, pipeline: str, after: int = 0) -> int:
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM staging WHERE pipeline = ? AND seq > ?", (pipeline, after)
                ).fetchone()[0]
            )

    def clear_staging(self, pipeline: str, up_to_seq: int) -> None:
        """Drop staged records once every object that reads them has been loaded; a record an outbox row still
        points at (one left for a later attempt) stays, as that row's source payload, until the row leaves."""
        with self._transaction() as c:
            c.execute(
                "DELETE FROM staging WHERE pipeline = ? AND seq <= ? AND seq NOT IN "
                "(SELECT source_seq FROM outbox WHERE pipeline = ? AND source_seq IS NOT NULL)",
                (pipeline, up_to_seq, pipeline),
            )

    def max_staged_seq(self, pipeline: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT MAX(seq) FROM staging WHERE pipeline = ?", (pipeline,)).fetchone()
        return int(row[0] or 0)

    # -- deliveries (inbound events) ----------------------------------------------

    def accept_delivery(
        self,
        pipeline: str,
        delivery_key: str,
        stream: str | None,
        rows: Sequence[StagedRow],
        letters: Sequence[NewDeadLetter] = (),
    ) -> bool:
        """Remember the delivery and stage its rows (run id 0) and dead letters, atomically; False when the
        delivery was seen before (nothing stored)."""
        with self._transaction() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO deliveries (pipeline, delivery_key, received_at) VALUES (?, ?, ?)",
                (pipeline, delivery_key, utc_now()),
            )
            if cur.rowcount == 0:
                return False
            if stream is not None and rows:
                c.executemany(
                    "INSERT OR IGNORE INTO staging (pipeline, stream, key, version, payload, run_id) "
                    "VALUES (?, ?, ?, ?, ?, 0)",
                    [(pipeline, stream, r.key, r.version, r.payload) for r in rows],
                )
            self._dead_letter(c, pipeline, None, letters)
            return True

    def delivery_seen(self, pipeline: str, delivery_key: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM deliveries WHERE pipeline = ? AND delivery_key = ?", (pipeline, delivery_key)
            ).fetchone()
        return row is not None

    def prune_deliveries(self, before: str) -> int:
        with self._transaction() as c:
            return c.execute("DELETE FROM deliveries WHERE received_at < ?", (before,)).rowcount

    # -- marks ------------------------------------------------------------------

    def get_mark(self, pipeline: str, name: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM marks WHERE pipeline = ? AND name = ?", (pipeline, name)
            ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _set_mark(c: sqlite3.Connection, pipeline: str, name: str, value: int) -> None:
        c.execute(
            "INSERT INTO marks (pipeline, name, value) VALUES (?, ?, ?) ON CONFLICT (pipeline, name) "
            "DO UPDATE SET value = excluded.value WHERE excluded.value > marks.value",
            (pipeline, name, value),
        )

    def commit_planned(
        self,
        pipeline: str,
        run_id: int | None,
        planned: Mapping[str, Sequence[PlannedRow]],
        letters: Sequence[NewDeadLetter],
        mark: tuple[str, int],
    ) -> None:
        """Queued rows (per object) and dead letters of a chunk of staged records, and the mark past them,
        atomically.

        A crash therefore leaves each staged record either fully planned (and never planned again) or
        not at all."""
        with self._transaction() as c:
            for obj, rows in planned.items():
                self._put_outbox(c, pipeline, obj, rows)
            self._dead_letter(c, pipeline, run_id, letters)
            self._set_mark(c, pipeline, *mark)

    # -- versions / id map ----------------------------------------------------

    def versions_for(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]:
        """Newest version already written to the target, per key."""
        out: dict[str, str] = {}
        with self._lock:
            for part, marks in _in_parts(keys):
                for k, v in self._conn.execute(
                    f"SELECT key, version FROM versions WHERE pipeline = ? AND object = ? AND key IN ({marks})",
                    (pipeline, obj, *part),
                ):
                    out[k] = v
        return out

    def record_written(
        self, pipeline: str, obj: str, rows: Sequence[Written], resolution: str = "written"
    ) -> None:
        """Remember the rows as written (version, and the target's id when it said); only ever moves a key's
        version forward, and resolves the open dead letters of the keys (saying ``resolution``)."""
        with self._transaction() as c:
            self._record_written(c, pipeline, obj, rows, resolution)

    @staticmethod
    def _record_written(
        c: sqlite3.Connection, pipeline: str, obj: str, rows: Sequence[Written], resolution: str
    ) -> None:
        now = utc_now()
        c.executemany(
            "INSERT INTO versions (pipeline, object, key, version, target_id, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) " + _VERSION_FORWARD,
            [(pipeline, obj, r.key, r.version, r.target_id, now) for r in rows],
        )
        # A record that lands after having been dead-lettered is no longer a dead letter. Most batches have
        # none (one indexed probe says so); else one set-based UPDATE per part of the batch's keys, each key
        # found through the (pipeline, object, record_key) index: no per-key statement, no keys back in Python.
        keys = [r.key for r in rows]
        if not keys or not c.execute(
            "SELECT 1 FROM dlq WHERE pipeline = ? AND status = 'open' AND object = ? LIMIT 1", (pipeline, obj)
        ).fetchone():
            return
        for part, marks in _in_parts(keys):
            c.execute(
                "UPDATE dlq SET status = 'resolved', resolved_at = ?, resolution = ? "
                f"WHERE pipeline = ? AND object = ? AND record_key IN ({marks}) AND status = 'open'",
                (now, resolution, pipeline, obj, *part),
            )

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
        """The target's answers for one batch, in one transaction: version map, dead letters, outbox removal
        (of the (key, version) rows ``done``: a newer version queued meanwhile stays), failed attempts (with
        what the target said), and the remote jobs that carried it forgotten. Never half."""
        with self._transaction() as c:
            self._record_written(c, pipeline, obj, written, "written")
            self._dead_letter(c, pipeline, run_id, letters)
            c.executemany(
                "DELETE FROM outbox WHERE pipeline = ? AND object = ? AND key = ? AND version = ?",
                [(pipeline, obj, k, v) for k, v in done],
            )
            self._bump(c, pipeline, obj, retry)
            self._forget_jobs(c, pipeline, obj, jobs)

    def target_ids(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]:
        """The target's own id of each key it holds (the id map); a key without a known id is left out."""
        out: dict[str, str] = {}
        with self._lock:
            for part, marks in _in_parts(keys):
                for k, tid in self._conn.execute(
                    f"SELECT key, target_id FROM versions WHERE pipeline = ? AND object = ? AND key IN ({marks}) "
                    "AND target_id IS NOT NULL",
                    (pipeline, obj, *part),
                ):
                    out[k] = tid
        return out

    def keys_for_targets(self, pipeline: str, obj: str, target_ids: Sequence[str]) -> dict[str, str]:
        """The id map backwards: each target id it holds -> the key written there."""
        out: dict[str, str] = {}
        with self._lock:
            for part, marks in _in_parts(target_ids):
                for k, tid in self._conn.execute(
                    f"SELECT key, target_id FROM versions WHERE pipeline = ? AND object = ? AND target_id IN ({marks})",
                    (pipeline, obj, *part),
                ):
                    out[tid] = k
        return out

    def any_target_id(self, pipeline: str, obj: str, prefix: str) -> str | None:
        # a literal prefix (GLOB's wildcards escaped): one index range on (pipeline, object, target_id)
        pattern = "".join(f"[{c}]" if c in "*?[" else c for c in prefix) + "*"
        with self._lock:
            row = self._conn.execute(
                "SELECT target_id FROM versions WHERE pipeline = ? AND object = ? AND target_id GLOB ? LIMIT 1",
                (pipeline, obj, pattern),
            ).fetchone()
        return str(row[0]) if row else None

    def written_digests(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            for part, marks in _in_parts(keys):
                out.update(self._conn.execute(
                    f"SELECT key, digest FROM written_digests WHERE pipeline = ? AND object = ? AND key IN ({marks})",
                    (pipeline, obj, *part),
                ).fetchall())
        return out

    def save_written_digests(self, pipeline: str, obj: str, digests: Mapping[str, str]) -> None:
        with self._transaction() as c:
            c.executemany(
                "INSERT INTO written_digests (pipeline, object, key, digest) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pipeline, object, key) DO UPDATE SET digest = excluded.digest",
                [(pipeline, obj, k, d) for k, d in digests.items()],
            )

    # -- outbox ---------------------------------------------------------------

    def put_outbox(self, pipeline: str, obj: str, rows: Sequence[PlannedRow]) -> None:
        """Queue the rows; a newer version of a queued key replaces it, an older or equal one never does. A
        row's source is the staged record's seq (the payload stays in staging, once) or the raw payload."""
        with self._transaction() as c:
            self._put_outbox(c, pipeline, obj, rows)

    @staticmethod
    def _put_outbox(c: sqlite3.Connection, pipeline: str, obj: str, rows: Sequence[PlannedRow]) -> None:
        dumps = orjson.dumps
        c.executemany(
            "INSERT INTO outbox (pipeline, object, key, version, payload, source_payload, source_seq, stream, "
            "source_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pipeline, object, key) DO UPDATE SET "
            "version = excluded.version, payload = excluded.payload, "
            "source_payload = excluded.source_payload, source_seq = excluded.source_seq, attempts = 0, "
            "history = NULL, stream = excluded.stream, source_key = excluded.source_key "
            "WHERE excluded.version > outbox.version",
            [
                (pipeline, obj, r.key, r.version, dumps(r.payload), *_source_columns(r.source), r.stream, r.source_key)
                for r in rows
            ],
        )

    def outbox_count(self, pipeline: str, obj: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM outbox WHERE pipeline = ?", [pipeline]
        if obj is not None:
            sql += " AND object = ?"
            args.append(obj)
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def outbox(
        self, pipeline: str, obj: str, chunk: int = 5000, *, with_source: bool = True
    ) -> Iterator[list[OutboxRow]]:
        """The object's outbox in pages of ``chunk`` rows, by key (rows removed meanwhile do not shift pages).
        ``with_source=False`` leaves ``source_payload`` None (see ``source_payloads``)."""
        select = _OUTBOX_FULL if with_source else _OUTBOX_LEAN
        last = ""
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"{select} WHERE o.pipeline = ? AND o.object = ? AND o.key > ? ORDER BY o.key LIMIT ?",
                    (pipeline, obj, last, chunk),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [self._outbox_row(r) for r in rows]

    def outbox_rows(self, pipeline: str, obj: str, keys: Sequence[str], *, with_source: bool = True) -> list[OutboxRow]:
        select = _OUTBOX_FULL if with_source else _OUTBOX_LEAN
        out: list[OutboxRow] = []
        with self._lock:
            for part, marks in _in_parts(keys):
                out.extend(
                    self._outbox_row(r)
                    for r in self._conn.execute(
                        f"{select} WHERE o.pipeline = ? AND o.object = ? AND o.key IN ({marks})",
                        (pipeline, obj, *part),
                    )
                )
        return out

    def source_payloads(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, bytes | None]:
        """The raw source record of each queued key (for the dead letters of a batch sent lean)."""
        out: dict[str, bytes | None] = {}
        with self._lock:
            for part, marks in _in_parts(keys):
                out.update(
                    self._conn.execute(
                        "SELECT o.key, COALESCE(o.source_payload, s.payload) FROM outbox o "
                        "LEFT JOIN staging s ON s.seq = o.source_seq "
                        f"WHERE o.pipeline = ? AND o.object = ? AND o.key IN ({marks})",
                        (pipeline, obj, *part),
                    ).fetchall()
                )
        return out

    @staticmethod
    def _outbox_row(r: Sequence[Any]) -> OutboxRow:
        return OutboxRow(r[0], r[1], orjson.loads(r[2]), r[3], r[4], orjson.loads(r[5]) if r[5] else [], r[6], r[7])

    @staticmethod
    def _bump(c: sqlite3.Connection, pipeline: str, obj: str, failed: Sequence[FailedAttempt]) -> None:
        """Count a failed attempt per key, and keep what the target said (the record's retry history)."""
        now = utc_now()
        for f in failed:
            key, errs = f.key, f.errors
            row = c.execute(
                "SELECT attempts, history FROM outbox WHERE pipeline = ? AND object = ? AND key = ?",
                (pipeline, obj, key),
            ).fetchone()
            if row is None:
                continue
            history = orjson.loads(row[1]) if row[1] else []
            history.append({"attempt": row[0] + 1, "at": now, "errors": errs})
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, history = ? WHERE pipeline = ? AND object = ? AND key = ?",
                (orjson.dumps(history).decode(), pipeline, obj, key),
            )

    # -- remote jobs (tables bulk_jobs, bulk_job_records: their names from when Bulk API 2.0 was the only one) --

    def save_remote_job(self, pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]) -> None:
        """Called the moment a remote job exists, before any data is uploaded to it; a job's later pages go in
        with ``add_remote_job_records``."""
        with self._transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO bulk_jobs (pipeline, object, job_id, entries, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (pipeline, obj, job_id, b"[]", utc_now()),
            )
            self._add_job_records(c, pipeline, obj, job_id, entries)

    def add_remote_job_records(
        self, pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]
    ) -> None:
        """More records of an open job: called before their rows are uploaded to it."""
        with self._transaction() as c:
            self._add_job_records(c, pipeline, obj, job_id, entries)

    @staticmethod
    def _add_job_records(
        c: sqlite3.Connection, pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]
    ) -> None:
        c.executemany(
            "INSERT OR REPLACE INTO bulk_job_records (pipeline, object, job_id, key, version, ext) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(pipeline, obj, job_id, e.key, e.version, e.external_key) for e in entries],
        )

    def remote_job_entries(
        self, pipeline: str, obj: str, job_ids: Sequence[str], external_keys: Sequence[str]
    ) -> list[JournalEntry]:
        """The journaled records of these jobs whose external key is among ``external_keys``."""
        if not job_ids or not external_keys:
            return []
        jobs = ",".join("?" * len(job_ids))
        out: list[JournalEntry] = []
        with self._lock:
            for part, marks in _in_parts(external_keys):
                out.extend(
                    JournalEntry(key, version, ext)
                    for key, version, ext in self._conn.execute(
                        "SELECT key, version, ext FROM bulk_job_records WHERE pipeline = ? AND object = ? "
                        f"AND job_id IN ({jobs}) AND ext IN ({marks})",
                        (pipeline, obj, *job_ids, *part),
                    )
                )
        return out

    def record_job_written(
        self, pipeline: str, obj: str, job_id: str, failed_external_keys: Collection[str], *, page: int = 10_000
    ) -> int:
        """Record as written every record journaled to a remote job, still queued at the version the job carried,
        whose external key is not in ``failed_external_keys`` (the job's counts proved those rows successes):
        version map, dead letters resolved, outbox rows removed, in one transaction per ``page`` records of the
        journal, in SQL. A record queued at a newer version than the job carried is left alone: that version
        still goes out. Returns how many were recorded."""
        written = 0
        after = ""
        with self._transaction() as c:
            c.execute("CREATE TEMP TABLE IF NOT EXISTS failed_exts (ext TEXT PRIMARY KEY)")
            c.execute("CREATE TEMP TABLE IF NOT EXISTS job_written (key TEXT PRIMARY KEY, version TEXT NOT NULL)")
            c.execute("DELETE FROM failed_exts")
            c.executemany("INSERT OR IGNORE INTO failed_exts (ext) VALUES (?)", [(e,) for e in failed_external_keys])
        while True:
            with self._lock:
                bound = self._conn.execute(
                    "SELECT key FROM bulk_job_records WHERE pipeline = ? AND object = ? AND job_id = ? AND key > ? "
                    "ORDER BY key LIMIT 1 OFFSET ?",
                    (pipeline, obj, job_id, after, page - 1),
                ).fetchone()
            upper = bound[0] if bound else None
            with self._transaction() as c:
                written += self._record_job_range(c, pipeline, obj, job_id, after, upper)
            if upper is None:
                return written
            after = upper

    @staticmethod
    def _record_job_range(
        c: sqlite3.Connection, pipeline: str, obj: str, job_id: str, after: str, upper: str | None
    ) -> int:
        c.execute("DELETE FROM job_written")
        c.execute(
            "INSERT INTO job_written (key, version) SELECT j.key, j.version FROM bulk_job_records j "
            "JOIN outbox o ON o.pipeline = j.pipeline AND o.object = j.object AND o.key = j.key "
            "AND o.version = j.version "
            "WHERE j.pipeline = ? AND j.object = ? AND j.job_id = ? AND j.key > ? AND (? IS NULL OR j.key <= ?) "
            "AND j.ext NOT IN (SELECT ext FROM failed_exts)",
            (pipeline, obj, job_id, after, upper, upper),
        )
        now = utc_now()
        c.execute(
            "INSERT INTO versions (pipeline, object, key, version, target_id, updated_at) "
            "SELECT ?, ?, key, version, NULL, ? FROM job_written WHERE true " + _VERSION_FORWARD,
            (pipeline, obj, now),
        )
        c.execute(
            "UPDATE dlq SET status = 'resolved', resolved_at = ?, resolution = 'written' "
            "WHERE pipeline = ? AND object = ? AND status = 'open' AND record_key IN (SELECT key FROM job_written)",
            (now, pipeline, obj),
        )
        c.execute(
            "DELETE FROM outbox WHERE pipeline = ? AND object = ? AND (key, version) IN "
            "(SELECT key, version FROM job_written)",
            (pipeline, obj),
        )
        return int(c.execute("SELECT COUNT(*) FROM job_written").fetchone()[0])

    def remote_jobs(self, pipeline: str, obj: str | None = None) -> list[RemoteJob]:
        """The jobs journaled and not forgotten yet (a crashed run's), oldest first, with what each carries."""
        sql, args = "SELECT object, job_id, entries, created_at FROM bulk_jobs WHERE pipeline = ?", [pipeline]
        if obj is not None:
            sql += " AND object = ?"
            args.append(obj)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created_at", args).fetchall()
            jobs = []
            for r in rows:
                # A state DB written before bulk_job_records kept the entries as one JSON list: read both.
                entries = [(k, v) for k, v in orjson.loads(r[2])]
                entries += self._conn.execute(
                    "SELECT key, version FROM bulk_job_records WHERE pipeline = ? AND object = ? AND job_id = ? "
                    "ORDER BY rowid",
                    (pipeline, r[0], r[1]),
                ).fetchall()
                jobs.append(RemoteJob(r[0], r[1], entries, r[3]))
        return jobs

    def forget_remote_job(self, pipeline: str, obj: str, job_id: str) -> None:
        with self._transaction() as c:
            self._forget_jobs(c, pipeline, obj, [job_id])

    @staticmethod
    def _forget_jobs(c: sqlite3.Connection, pipeline: str, obj: str, job_ids: Sequence[str]) -> None:
        args = [(pipeline, obj, j) for j in job_ids]
        c.executemany("DELETE FROM bulk_jobs WHERE pipeline = ? AND object = ? AND job_id = ?", args)
        c.executemany("DELETE FROM bulk_job_records WHERE pipeline = ? AND object = ? AND job_id = ?", args)

    # -- dead letters ---------------------------------------------------------

    def dead_letter(self, pipeline: str, run_id: int | None, letters: Sequence[NewDeadLetter]) -> None:
        if not letters:
            return
        with self._transaction() as c:
            self._dead_letter(c, pipeline, run_id, letters)

    @staticmethod
    def _dead_letter(
        c: sqlite3.Connection, pipeline: str, run_id: int | None, letters: Sequence[NewDeadLetter]
    ) -> None:
        if not letters:
            return
        now = utc_now()
        rows = []
        for d in letters:
            first = d.errors[0] if d.errors else {"code": "UNKNOWN", "message": "", "fields": []}
            fields = sorted({f for e in d.errors for f in e.get("fields", [])})
            rows.append(
                (
                    pipeline,
                    run_id,
                    d.object,
                    d.record_key,
                    d.version,
                    first["code"],
                    "; ".join(str(e["message"]) for e in d.errors),
                    orjson.dumps(fields).decode(),
                    orjson.dumps(d.errors).decode(),
                    orjson.dumps(d.mapped_payload) if d.mapped_payload is not None else None,
                    max(1, len(d.history)),
                    now,
                    now,
                    d.stream,
                    d.source_key,
                    orjson.dumps(d.history).decode() if d.history else None,
                )
            )
        c.executemany(
            "INSERT INTO dlq (pipeline, run_id, object, record_key, version, error_code, message, fields, "
            "errors, mapped_payload, attempts, first_seen, last_seen, stream, source_key, history) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (pipeline, object, record_key) DO UPDATE SET run_id = excluded.run_id, "
            "version = excluded.version, error_code = excluded.error_code, message = excluded.message, "
            "fields = excluded.fields, errors = excluded.errors, "
            "mapped_payload = excluded.mapped_payload, attempts = dlq.attempts + excluded.attempts, "
            "last_seen = excluded.last_seen, "
            # A discarded letter stays discarded when the same version is read again (an inclusive cursor
            # re-reads the newest records); a new version that fails again reopens it.
            "status = CASE WHEN dlq.status = 'discarded' AND dlq.version IS excluded.version "
            "THEN 'discarded' ELSE 'open' END, "
            "resolved_at = CASE WHEN dlq.status = 'discarded' AND dlq.version IS excluded.version "
            "THEN dlq.resolved_at END, "
            "resolution = CASE WHEN dlq.status = 'discarded' AND dlq.version IS excluded.version "
            "THEN dlq.resolution END, "
            "stream = COALESCE(excluded.stream, dlq.stream), "
            "source_key = COALESCE(excluded.source_key, dlq.source_key), "
            "history = COALESCE(excluded.history, dlq.history)",
            rows,
        )
        # A letter seen again without its source keeps the one it had.
        c.executemany(
            "INSERT INTO dlq_sources (letter_id, payload) "
            "SELECT id, ? FROM dlq WHERE pipeline = ? AND object = ? AND record_key = ? "
            "ON CONFLICT (letter_id) DO UPDATE SET payload = excluded.payload",
            [(d.source_payload, pipeline, d.object, d.record_key) for d in letters if d.source_payload is not None],
        )

    def dead_letter_keys(self, pipeline: str, obj: str) -> set[str]:
        with self._lock:
            return {
                r[0]
                for r in self._conn.execute(
                    "SELECT record_key FROM dlq WHERE pipeline = ? AND object = ? AND status = 'open'",
                    (pipeline, obj),
                )
            }

    def find_dead_letters(self, f: LetterFilter, limit: int | None = 100, offset: int = 0) -> list[DeadLetter]:
        """Letters matching ``f`` by id; ``limit`` None: all of them."""
        where, args = _letter_where(f)
        sql = f"SELECT {_DLQ_COLUMNS} FROM dlq{where} ORDER BY id LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, -1 if limit is None else limit, offset))
            return [self._letter(r) for r in rows.fetchall()]

    def count_matching_letters(self, f: LetterFilter) -> int:
        where, args = _letter_where(f)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM dlq{where}", args).fetchone()[0])

    def find_dead_letters_lean(self, f: LetterFilter, limit: int = 100) -> list[DeadLetter]:
        """``find_dead_letters`` without the source payloads (None): a replay of thousands of letters reads
        most records again from the source and needs the stored ones only for those it no longer has."""
        where, args = _letter_where(f)
        # The ids are chosen and ordered on the dlq_open index alone; the rows are then read by id, in that
        # order: sorting the whole rows (errors, mapped payload) in a temporary B-tree took twice as long.
        chosen = f"SELECT id FROM dlq{where} ORDER BY id LIMIT ?"
        sql = f"SELECT {_DLQ_COLUMNS_LEAN} FROM dlq WHERE id IN ({chosen}) ORDER BY id"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit))
            return [self._letter(r) for r in rows.fetchall()]

    def dead_letter_source_payloads(self, letter_ids: Sequence[int]) -> dict[int, Any]:
        """The source payload stored with each of these letters (absent: none stored, or no such letter)."""
        out: dict[int, Any] = {}
        with self._lock:
            for part, marks in _in_parts(list(letter_ids)):
                for letter_id, payload in self._conn.execute(
                    f"SELECT letter_id, payload FROM dlq_sources WHERE letter_id IN ({marks})", part
                ):
                    out[letter_id] = orjson.loads(payload)
        return out

    def count_dead_letters(self, pipeline: str | None = None, status: str = "open") -> dict[str, int]:
        sql = "SELECT object, COUNT(*) FROM dlq WHERE status = ?"
        args: list[Any] = [status]
        if pipeline:
            sql += " AND pipeline = ?"
            args.append(pipeline)
        with self._lock:
            return {r[0]: r[1] for r in self._conn.execute(sql + " GROUP BY object", args)}

    def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        with self._lock:
            r = self._conn.execute(f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE id = ?", (letter_id,)).fetchone()
        return self._letter(r) if r else None

    def dead_letter_for(self, pipeline: str, obj: str, key: str) -> DeadLetter | None:
        with self._lock:
            r = self._conn.execute(
                f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE pipeline = ? AND object = ? AND record_key = ?",
                (pipeline, obj, key),
            ).fetchone()
        return self._letter(r) if r else None

    def discard_dead_letters(self, f: LetterFilter, reason: str) -> int:
        """Mark matching open letters discarded, keeping them and saying why; returns how many."""
        where, args = _letter_where(replace(f, status="open"))
        with self._transaction() as c:
            cur = c.execute(
                f"UPDATE dlq SET status = 'discarded', resolved_at = ?, resolution = ?{where}",
                (utc_now(), f"discarded: {reason}", *args),
            )
            return int(cur.rowcount)

    @staticmethod
    def _letter(r: Sequence[Any]) -> DeadLetter:
        return DeadLetter(
            id=r[0],
            pipeline=r[1],
            run_id=r[2],
            object=r[3],
            record_key=r[4],
            version=r[5],
            error_code=r[6],
            message=r[7],
            fields=orjson.loads(r[8]),
            errors=orjson.loads(r[9]),
            source_payload=orjson.loads(r[10]) if r[10] else None,
            mapped_payload=orjson.loads(r[11]) if r[11] else None,
            attempts=r[12],
            first_seen=r[13],
            last_seen=r[14],
            status=r[15],
            stream=r[16],
            source_key=r[17],
            history=orjson.loads(r[18]) if r[18] else [],
            resolved_at=r[19],
            resolution=r[20],
        )

    # -- API call ledger (budget guard) -----------------------------------------------------------------------
    # One block, kept apart: the budget guard's persistence. A pipeline's calls are counted per minute
    # before they are sent, so a share of a daily allocation holds across runs and processes.

    def take_api_calls(
        self, pipeline: str, system: str, minute: int, calls: int, *, cap: int | None, since_minute: int
    ) -> tuple[bool, int]:
        """Count ``calls`` in ``minute`` unless the window (buckets from ``since_minute``) would then pass
        ``cap``. One transaction: two processes of one pipeline can never both take the last call.
        Returns (taken, calls in the window, including these when taken)."""
        with self._transaction() as c:
            (spent,) = c.execute(
                "SELECT COALESCE(SUM(calls), 0) FROM api_calls WHERE pipeline = ? AND system = ? AND minute >= ?",
                (pipeline, system, since_minute),
            ).fetchone()
            if cap is not None and spent + calls > cap:
                return False, int(spent)
            c.execute(
                "INSERT INTO api_calls (pipeline, system, minute, calls) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pipeline, system, minute) DO UPDATE SET calls = calls + excluded.calls",
                (pipeline, system, minute, calls),
            )
            return True, int(spent) + calls

    def api_call_buckets(self, pipeline: str, system: str, since_minute: int) -> list[tuple[int, int]]:
        """(minute, calls) of the pipeline's calls from ``since_minute`` on, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT minute, calls FROM api_calls WHERE pipeline = ? AND system = ? AND minute >= ? ORDER BY minute",
                (pipeline, system, since_minute),
            ).fetchall()
        return [(int(m), int(n)) for m, n in rows]

    def prune_api_calls(self, before_minute: int) -> int:
        """Forget every pipeline's buckets older than ``before_minute`` (out of the window); returns how many."""
        with self._transaction() as c:
            return int(c.execute("DELETE FROM api_calls WHERE minute < ?", (before_minute,)).rowcount)

    def save_api_allocation(self, pipeline: str, system: str, daily_max: int) -> None:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO api_allocations (pipeline, system, daily_max, seen_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pipeline, system) DO UPDATE SET "
                "daily_max = excluded.daily_max, seen_at = excluded.seen_at",
                (pipeline, system, daily_max, utc_now()),
            )

    def api_allocation(self, pipeline: str, system: str) -> int | None:
        """The system's daily allocation as last reported to this pipeline, or None before any answer."""
        with self._lock:
            row = self._conn.execute(
                "SELECT daily_max FROM api_allocations WHERE pipeline = ? AND system = ?", (pipeline, system)
            ).fetchone()
        return int(row[0]) if row else None


SqliteStore = Store


if TYPE_CHECKING:

    def _implements_the_ports(store: Store) -> StateStore:
        """mypy proves here that the adapter conforms to every port."""
        return store
