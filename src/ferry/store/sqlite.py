"""State store on SQLite (WAL): runs, cursors, staged source records, outbox, version/id map, dead letters.

One file holds everything a pipeline needs to resume: what was read (staging),
what is about to be written (outbox), what the target holds (versions, with the
target id), and what could not be written (dlq). Writes are grouped in
transactions so that a checkpoint only ever covers what is already on disk.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

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
CREATE TABLE IF NOT EXISTS cursors (
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, stream)
);
-- Raw source records, durable before the cursor that covers them moves.
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
CREATE INDEX IF NOT EXISTS staging_by_stream ON staging (pipeline, stream, seq);
-- Mapped, validated payloads waiting to be written, newest version per key.
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
    source_payload BLOB,
    mapped_payload BLOB,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    UNIQUE (pipeline, object, record_key)
);
CREATE INDEX IF NOT EXISTS dlq_open ON dlq (pipeline, status, object);
"""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class RunRow:
    id: int
    pipeline: str
    started_at: str
    finished_at: str | None
    status: str
    stats: dict[str, Any]
    error: str | None


@dataclass(slots=True)
class StagedRecord:
    seq: int
    stream: str
    key: str
    version: str
    payload: bytes


@dataclass(slots=True)
class OutboxRow:
    key: str
    version: str
    payload: dict[str, Any]
    source_payload: bytes | None
    attempts: int


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


@dataclass(slots=True)
class NewDeadLetter:
    object: str
    record_key: str
    version: str | None
    errors: list[dict[str, Any]]
    source_payload: bytes | None
    mapped_payload: dict[str, Any] | None


class Store:
    """SQLite-backed state. Thread-safe through one connection guarded by a lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (only an OS crash can lose the last commit).
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def reset_pipeline(self, pipeline: str) -> None:
        """Forget everything about a pipeline's sync state (cursors, staging, outbox, versions, dead letters)."""
        with self.transaction() as c:
            for table in ("cursors", "staging", "outbox", "versions", "dlq"):
                c.execute(f"DELETE FROM {table} WHERE pipeline = ?", (pipeline,))

    # -- runs -----------------------------------------------------------------

    def start_run(self, pipeline: str) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (pipeline, started_at, status) VALUES (?, ?, 'running')",
                (pipeline, utc_now()),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], error: str | None = None) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET finished_at = ?, status = ?, stats = ?, error = ? WHERE id = ?",
                (utc_now(), status, orjson.dumps(stats).decode(), error, run_id),
            )

    def list_runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRow]:
        sql = "SELECT id, pipeline, started_at, finished_at, status, stats, error FROM runs"
        args: tuple[Any, ...] = ()
        if pipeline:
            sql += " WHERE pipeline = ?"
            args = (pipeline,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [RunRow(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]) if r[5] else {}, r[6]) for r in rows]

    def get_run(self, run_id: int) -> RunRow | None:
        with self._lock:
            r = self._conn.execute(
                "SELECT id, pipeline, started_at, finished_at, status, stats, error FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
        return RunRow(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]) if r[5] else {}, r[6]) if r else None

    # -- cursors --------------------------------------------------------------

    def get_cursor(self, pipeline: str, stream: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM cursors WHERE pipeline = ? AND stream = ?", (pipeline, stream)
            ).fetchone()
        return str(row[0]) if row else None

    def advance_cursor(self, pipeline: str, stream: str, value: str) -> None:
        """Move a cursor forward; an older value never replaces a newer one."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO cursors (pipeline, stream, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pipeline, stream) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at WHERE excluded.value > cursors.value",
                (pipeline, stream, value, utc_now()),
            )

    # -- staging --------------------------------------------------------------

    def stage(self, pipeline: str, stream: str, run_id: int, rows: Sequence[tuple[str, str, bytes]]) -> int:
        """Durably stage (key, version, payload) rows; a (key, version) already staged is kept once."""
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO staging (pipeline, stream, key, version, payload, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(pipeline, stream, k, v, p, run_id) for k, v, p in rows],
            )
            return c.total_changes - before

    def staged(self, pipeline: str, streams: Iterable[str], chunk: int = 2000) -> Iterator[list[StagedRecord]]:
        """Iterate staged records of ``streams`` in chunks, in arrival order, without holding them all."""
        names = list(streams)
        marks = ",".join("?" * len(names))
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT seq, stream, key, version, payload FROM staging "
                    f"WHERE pipeline = ? AND stream IN ({marks}) AND seq > ? ORDER BY seq LIMIT ?",
                    (pipeline, *names, last, chunk),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [StagedRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def staged_count(self, pipeline: str) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM staging WHERE pipeline = ?", (pipeline,)).fetchone()[0])

    def clear_staging(self, pipeline: str, up_to_seq: int) -> None:
        """Drop staged records once every object that reads them has been loaded."""
        with self.transaction() as c:
            c.execute("DELETE FROM staging WHERE pipeline = ? AND seq <= ?", (pipeline, up_to_seq))

    def max_staged_seq(self, pipeline: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT MAX(seq) FROM staging WHERE pipeline = ?", (pipeline,)).fetchone()
        return int(row[0] or 0)

    # -- versions / id map ----------------------------------------------------

    def versions_for(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]:
        """Newest version already written to the target, per key."""
        out: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                marks = ",".join("?" * len(part))
                for k, v in self._conn.execute(
                    f"SELECT key, version FROM versions WHERE pipeline = ? AND object = ? AND key IN ({marks})",
                    (pipeline, obj, *part),
                ):
                    out[k] = v
        return out

    def record_written(self, pipeline: str, obj: str, rows: Sequence[tuple[str, str, str | None]]) -> None:
        """Remember (key, version, target_id) as written; only ever moves a key's version forward."""
        now = utc_now()
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO versions (pipeline, object, key, version, target_id, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (pipeline, object, key) DO UPDATE SET "
                "version = excluded.version, target_id = COALESCE(excluded.target_id, versions.target_id), "
                "updated_at = excluded.updated_at WHERE excluded.version >= versions.version",
                [(pipeline, obj, k, v, tid, now) for k, v, tid in rows],
            )
            # A record that lands after having been dead-lettered is no longer a dead letter.
            c.executemany(
                "UPDATE dlq SET status = 'resolved', last_seen = ? "
                "WHERE pipeline = ? AND object = ? AND record_key = ? AND status = 'open'",
                [(now, pipeline, obj, k) for k, _, _ in rows],
            )

    def target_id(self, pipeline: str, obj: str, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT target_id FROM versions WHERE pipeline = ? AND object = ? AND key = ?", (pipeline, obj, key)
            ).fetchone()
        return row[0] if row else None

    # -- outbox ---------------------------------------------------------------

    def put_outbox(
        self, pipeline: str, obj: str, rows: Sequence[tuple[str, str, dict[str, Any], bytes | None]]
    ) -> None:
        """Queue (key, version, mapped payload, source payload); a newer version replaces an older one."""
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO outbox (pipeline, object, key, version, payload, source_payload) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (pipeline, object, key) DO UPDATE SET "
                "version = excluded.version, payload = excluded.payload, "
                "source_payload = excluded.source_payload, attempts = 0 "
                "WHERE excluded.version > outbox.version",
                [(pipeline, obj, k, v, orjson.dumps(p), s) for k, v, p, s in rows],
            )

    def outbox_count(self, pipeline: str, obj: str) -> int:
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM outbox WHERE pipeline = ? AND object = ?", (pipeline, obj)
                ).fetchone()[0]
            )

    def outbox(self, pipeline: str, obj: str, chunk: int = 5000) -> Iterator[list[OutboxRow]]:
        last = ""
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT key, version, payload, source_payload, attempts FROM outbox "
                    "WHERE pipeline = ? AND object = ? AND key > ? ORDER BY key LIMIT ?",
                    (pipeline, obj, last, chunk),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [OutboxRow(r[0], r[1], orjson.loads(r[2]), r[3], r[4]) for r in rows]

    def remove_outbox(self, pipeline: str, obj: str, keys_versions: Sequence[tuple[str, str]]) -> None:
        """Drop delivered entries, but only at the version delivered: a newer one queued meanwhile stays."""
        with self.transaction() as c:
            c.executemany(
                "DELETE FROM outbox WHERE pipeline = ? AND object = ? AND key = ? AND version = ?",
                [(pipeline, obj, k, v) for k, v in keys_versions],
            )

    def bump_outbox_attempts(self, pipeline: str, obj: str, keys: Sequence[str]) -> None:
        with self.transaction() as c:
            c.executemany(
                "UPDATE outbox SET attempts = attempts + 1 WHERE pipeline = ? AND object = ? AND key = ?",
                [(pipeline, obj, k) for k in keys],
            )

    # -- dead letters ---------------------------------------------------------

    def dead_letter(self, pipeline: str, run_id: int | None, letters: Sequence[NewDeadLetter]) -> None:
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
                    d.source_payload,
                    orjson.dumps(d.mapped_payload) if d.mapped_payload is not None else None,
                    now,
                    now,
                )
            )
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO dlq (pipeline, run_id, object, record_key, version, error_code, message, fields, "
                "errors, source_payload, mapped_payload, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (pipeline, object, record_key) DO UPDATE SET run_id = excluded.run_id, "
                "version = excluded.version, error_code = excluded.error_code, message = excluded.message, "
                "fields = excluded.fields, errors = excluded.errors, source_payload = excluded.source_payload, "
                "mapped_payload = excluded.mapped_payload, attempts = dlq.attempts + 1, "
                "last_seen = excluded.last_seen, status = 'open'",
                rows,
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

    def list_dead_letters(
        self,
        pipeline: str | None = None,
        obj: str | None = None,
        code: str | None = None,
        status: str = "open",
        limit: int = 100,
    ) -> list[DeadLetter]:
        where = ["status = ?"]
        args: list[Any] = [status]
        for col, val in (("pipeline", pipeline), ("object", obj), ("error_code", code)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        sql = f"SELECT * FROM dlq WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [self._dead_letter(r) for r in rows]

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
            r = self._conn.execute("SELECT * FROM dlq WHERE id = ?", (letter_id,)).fetchone()
        return self._dead_letter(r) if r else None

    @staticmethod
    def _dead_letter(r: Sequence[Any]) -> DeadLetter:
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
        )
