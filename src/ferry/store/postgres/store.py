"""State store on PostgreSQL (psycopg 3, a connection pool): the ports of ``ferry.core.ports``, for many workers.

Same semantics as the SQLite adapter, proved by the same contract suite (tests/store/contract/); what many
processes on many machines need on top (docs/store.md, "What a PostgreSQL backend needs"):

- each port call is one short transaction on a pooled connection (``_tx``), so any thread may call it;
- latest wins by compare-and-set in SQL: an upsert's ``WHERE excluded.version > outbox.version`` (and ``>=`` on
  the version map) is re-checked against the row's newest version after waiting for its lock, so no ordering of
  writers puts an older version over a newer one;
- claims with a lease and a fence (``claim_staged``, ``claim_outbox``, ``claim_remote_jobs``): ``FOR UPDATE
  SKIP LOCKED`` in one short statement, the lease timed by the database's clock, so a dead worker's claims come
  back when the lease runs out and a worker whose lease was taken over cannot commit over the new owner;
- the API ledger's take locks the (pipeline, system) row first, so it sums every take committed before it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ferry.core.ports import (
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
from ferry.errors import PipelineBusy, ReadSuperseded, StateError
from ferry.store.postgres.events import EventClaims
from ferry.store.postgres.lock import PIPELINE_LOCKS, AdvisoryPipelineLock, AdvisoryWorkLock, holder, work_held
from ferry.store.postgres.migrate import schema_status
from ferry.store.sqlite import utc_now
from ferry.store.url import mask_url

if TYPE_CHECKING:
    from ferry.core.ports import StateStore

__all__ = ["OutboxClaim", "PostgresStore", "StagedClaim", "StateUnavailable"]


class StateUnavailable(StateError):
    """The state database cannot be reached (down, restarting, refusing connections): worth trying again."""

    retryable = True


@dataclass(slots=True)
class StagedClaim:
    """Staged records one planner holds under a lease until ``commit_claimed`` (or the lease runs out)."""

    owner: str
    records: list[StagedRecord]
    fences: dict[int, int]  # seq -> the fence this claim holds it at


@dataclass(slots=True)
class OutboxClaim:
    owner: str
    rows: list[OutboxRow]
    fences: dict[str, int]  # key -> the fence this claim holds it at


_DLQ_COLUMNS = (
    "id, pipeline, run_id, object, record_key, version, error_code, message, fields, errors, source_payload, "
    "mapped_payload, attempts, first_seen, last_seen, status, stream, source_key, history, resolved_at, resolution"
)
_RUN_COLUMNS = "id, pipeline, started_at, finished_at, status, stats, error, progress_at, pid, host, origin"
_OUTBOX_FULL = (
    "SELECT o.key, o.version, o.payload, COALESCE(o.source_payload, s.payload), o.attempts, o.history, o.stream, "
    "o.source_key FROM outbox o LEFT JOIN staging s ON s.seq = o.source_seq"
)
_OUTBOX_LEAN = "SELECT o.key, o.version, o.payload, NULL, o.attempts, o.history, o.stream, o.source_key FROM outbox o"
_VERSION_FORWARD = (
    "ON CONFLICT (pipeline, object, key) DO UPDATE SET version = excluded.version, "
    "target_id = COALESCE(excluded.target_id, versions.target_id), updated_at = excluded.updated_at "
    "WHERE excluded.version >= versions.version"
)
# A newer version replaces a queued row and starts afresh: attempts, history and any lease (it goes out next).
_OUTBOX_UPSERT = (
    "ON CONFLICT (pipeline, object, key) DO UPDATE SET "
    "version = excluded.version, payload = excluded.payload, source_payload = excluded.source_payload, "
    "source_seq = excluded.source_seq, attempts = 0, history = NULL, stream = excluded.stream, "
    "source_key = excluded.source_key, owner = NULL, lease_until = NULL "
    "WHERE excluded.version > outbox.version"
)
# The claim of the rows a ``picked`` CTE chose; the lean rows come back with it (one round trip per claim).
_CLAIM_PICKED = (
    "UPDATE outbox o SET owner = %(me)s, fence = o.fence + 1, "
    "lease_until = now() + make_interval(secs => %(lease)s) FROM picked "
    "WHERE o.pipeline = %(p)s AND o.object = %(o)s AND o.key = picked.key RETURNING o.fence, "
    "o.key, o.version, o.payload, NULL, o.attempts, o.history, o.stream, o.source_key"
)
# Asked on every poll of a distributed run's coordinator (tests/store/test_postgres_scale.py checks their plans).
_OUTBOX_COUNT = "SELECT COUNT(*) FROM outbox WHERE pipeline = %s"
_OUTBOX_LEASED = (
    "SELECT COUNT(*) FROM outbox WHERE pipeline = %s AND object = %s AND lease_until IS NOT NULL "
    "AND lease_until >= now()"
)
_TABLES_OF_A_PIPELINE = (
    "read_states",
    "staging",
    "outbox",
    "versions",
    "dlq",
    "marks",
    "bulk_jobs",
    "bulk_job_records",
    "deliveries",
)


def _letter_where(f: LetterFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for col, val in (("status", f.status), ("pipeline", f.pipeline), ("object", f.object), ("error_code", f.code)):
        if val:
            clauses.append(f"{col} = %s")
            args.append(val)
    if f.since:
        clauses.append("last_seen >= %s")
        args.append(f.since)
    if f.ids:
        clauses.append("id = ANY(%s)")
        args.append([int(i) for i in f.ids])
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _source_columns(source: int | bytes | None) -> tuple[bytes | None, int | None]:
    return (None, source) if isinstance(source, int) else (source, None)


def _outbox_in_order(rows: Sequence[PlannedRow]) -> list[PlannedRow]:
    """The rows one statement upserts to the same effect as upserting ``rows`` one by one (one statement cannot
    touch a row twice): per key the first row of its highest version (a newer replaces, an equal one never
    does), in key order (byte order, the columns' collation)."""
    best: dict[str, PlannedRow] = {}
    for r in rows:
        kept = best.get(r.key)
        if kept is None or r.version > kept.version:
            best[r.key] = r
    return [best[k] for k in sorted(best, key=str.encode)]


def _versions_in_order(rows: Sequence[Written]) -> list[Written]:
    """As ``_outbox_in_order`` for the version map, whose rule is ``>=``: per key the last row of its highest
    version, with the last target id any row of that version gave (a write without an id keeps the known one)."""
    best: dict[str, Written] = {}
    for r in rows:
        kept = best.get(r.key)
        if kept is None or r.version > kept.version:
            best[r.key] = Written(r.key, r.version, r.target_id)
        elif r.version == kept.version and r.target_id is not None:
            kept.target_id = r.target_id
    return [best[k] for k in sorted(best, key=str.encode)]


def worker_id() -> str:
    """This process's name as a lease owner: host, pid and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PostgresStore(EventClaims):
    """PostgreSQL-backed state: a pool of connections, one short transaction per port call."""

    def __init__(
        self,
        conninfo: str,
        *,
        lock_dir: Path | None = None,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
        require_current_schema: bool = True,
    ) -> None:
        self.url = conninfo
        self.safe_url = mask_url(conninfo)
        # Local files (the sandbox and demo state live in FERRY_HOME); the pipeline lock is ``pipeline_lock``.
        self.path = (lock_dir or Path(".ferry")) / "postgres"
        self.owner = worker_id()
        # check_connection: a connection the server dropped (restart, idle timeout) is replaced before use.
        self._pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            open=False,
            name="ferry-state",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise StateUnavailable(f"{self.safe_url}: cannot connect to the state database") from None
        if require_current_schema:
            self._check_schema()

    def _check_schema(self) -> None:
        with self._conn() as conn:
            status = schema_status(conn)
        if status.problems:
            raise StateError(f"{self.safe_url}: " + "; ".join(status.problems))
        if status.pending:
            raise StateError(
                f"{self.safe_url}: the state database is at schema version {status.current}, this ferry needs "
                f"{status.latest}: run `ferry migrate`"
            )

    def close(self) -> None:
        self._pool.close()

    def pipeline_lock(self, pipeline: str) -> AdvisoryPipelineLock:
        """One run of ``pipeline`` at a time on every machine sharing this database (the engine's lock)."""
        return AdvisoryPipelineLock(self.url, pipeline)

    def work_lock(self, name: str, label: str) -> AdvisoryWorkLock:
        """A worker's exclusive hold on one piece of work across every machine (engine/distjobs.py)."""
        return AdvisoryWorkLock(self.url, name, label)

    def work_held(self, name: str) -> bool:
        """Whether a live session holds the work lock ``name`` (a worker reading a stream, running a job)."""
        with self._conn() as conn:
            return work_held(conn, name)

    def is_running(self, pipeline: str) -> bool:
        """Whether a live process, on any machine, holds the pipeline's lock."""
        with self._conn() as conn:
            return holder(conn, pipeline) is not None

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # The message can name the host, never the password (it is not in libpq's messages), but be sure.
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StateUnavailable(f"{self.safe_url}: {mask_url(message)}") from None

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on a pooled connection: committed when the block ends, rolled back if it raises."""
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def reset_pipeline(self, pipeline: str) -> None:
        """Forget the pipeline's sync state; refused (``PipelineBusy``) while a run of it holds its lock."""
        with self._tx() as c:
            # The run's own lock, for this transaction only: a run on any machine holds it for its whole length.
            got = c.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (PIPELINE_LOCKS, pipeline)).fetchone()
            if not got or not got[0]:
                raise PipelineBusy(f"pipeline {pipeline} is running; its state cannot be reset now")
            for table in _TABLES_OF_A_PIPELINE:
                c.execute(f"DELETE FROM {table} WHERE pipeline = %s", (pipeline,))

    # -- runs -----------------------------------------------------------------

    def start_run(
        self, pipeline: str, *, pid: int | None = None, host: str | None = None, origin: str = "manual"
    ) -> int:
        if origin not in RUN_ORIGINS:
            raise ValueError(f"unknown run origin {origin!r}: one of {', '.join(RUN_ORIGINS)}")
        with self._tx() as c:
            c.execute(
                "INSERT INTO runs (pipeline, started_at, status, pid, host, origin) "
                "VALUES (%s, %s, 'running', %s, %s, %s) RETURNING id",
                (pipeline, utc_now(), pid, host, origin),
            )
            row = c.fetchone()
            return int(row[0]) if row else 0

    def close_abandoned_runs(self, pipeline: str) -> list[RunRow]:
        with self._tx() as c:
            rows = c.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE pipeline = %s AND status = 'running' ORDER BY id FOR UPDATE",
                (pipeline,),
            ).fetchall()
            c.execute(
                "UPDATE runs SET status = 'died', finished_at = %s WHERE pipeline = %s AND status = 'running'",
                (utc_now(), pipeline),
            )
        return [self._run(r) for r in rows]

    def pipelines(self) -> set[str]:
        with self._conn() as conn:
            rows = conn.execute("SELECT pipeline FROM runs UNION SELECT pipeline FROM dlq").fetchall()
        return {r[0] for r in rows}

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], error: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET finished_at = %s, status = %s, stats = %s, error = %s WHERE id = %s",
                (utc_now(), status, orjson.dumps(stats).decode(), error, run_id),
            )

    def mark_progress(self, run_id: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE runs SET progress_at = %s WHERE id = %s AND progress_at IS NULL", (utc_now(), run_id))

    def note_run_paused(self, run_id: int, reason: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE runs SET error = %s WHERE id = %s AND status = 'running'", (reason, run_id))

    def add_run_calls(self, run_id: int, calls: Mapping[str, int]) -> None:
        added = sorted((part, n) for part, n in calls.items() if n)  # sorted: two workers lock rows in one order
        if not added:
            return
        with self._tx() as c:
            c.executemany(
                "INSERT INTO run_calls (run_id, part, calls) VALUES (%s, %s, %s) "
                "ON CONFLICT (run_id, part) DO UPDATE SET calls = run_calls.calls + excluded.calls",
                [(run_id, part, n) for part, n in added],
            )

    def run_calls(self, run_id: int) -> dict[str, int]:
        return self.runs_calls([run_id]).get(run_id, {})

    def runs_calls(self, run_ids: Collection[int]) -> dict[int, dict[str, int]]:
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT run_id, part, calls FROM run_calls WHERE run_id = ANY(%s)", (ids,)
            ).fetchall()
        out: dict[int, dict[str, int]] = {}
        for run_id, part, n in rows:
            out.setdefault(int(run_id), {})[str(part)] = int(n)
        return out

    def list_runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRow]:
        sql, args = f"SELECT {_RUN_COLUMNS} FROM runs", []
        if pipeline:
            sql += " WHERE pipeline = %s"
            args.append(pipeline)
        with self._conn() as conn:
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT %s", (*args, limit)).fetchall()
        return [self._run(r) for r in rows]

    def get_run(self, run_id: int) -> RunRow | None:
        with self._conn() as conn:
            r = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,)).fetchone()
        return self._run(r) if r else None

    def run_origin(self, run_id: int) -> str | None:
        """How the run was started (manual, schedule, webhook, replay)."""
        with self._conn() as conn:
            r = conn.execute("SELECT origin FROM runs WHERE id = %s", (run_id,)).fetchone()
        return str(r[0]) if r else None

    @staticmethod
    def _run(r: Sequence[Any]) -> RunRow:
        return RunRow(
            int(r[0]), r[1], r[2], r[3], r[4], orjson.loads(r[5]) if r[5] else {}, r[6], r[7], r[8], r[9], r[10]
        )

    # -- read states -----------------------------------------------------------

    def read_state(self, pipeline: str, stream: str) -> dict[str, Any] | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT state FROM read_states WHERE pipeline = %s AND stream = %s", (pipeline, stream)
            ).fetchone()
        state = orjson.loads(row[0]) if row else None
        return state if isinstance(state, dict) else None

    # -- deliveries (inbound events) ------------------------------------------

    def accept_delivery(
        self,
        pipeline: str,
        delivery_key: str,
        stream: str | None,
        rows: Sequence[StagedRow],
        letters: Sequence[NewDeadLetter] = (),
    ) -> bool:
        """Remember the delivery and stage its rows (run id 0) and dead letters in one transaction; False, with
        nothing stored, when the key was taken before (by this process or any other sharing the database)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO deliveries (pipeline, delivery_key, received_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (pipeline, delivery_key, utc_now()),
            )
            if c.rowcount == 0:
                return False
            if stream is not None and rows:
                c.execute(
                    "INSERT INTO staging (pipeline, stream, key, version, payload, run_id) "
                    "SELECT %s, %s, k, v, p, 0 FROM unnest(%s::text[], %s::text[], %b::bytea[]) AS t(k, v, p) "
                    "ON CONFLICT (pipeline, stream, key, version) DO NOTHING",
                    (pipeline, stream, [r.key for r in rows], [r.version for r in rows], [r.payload for r in rows]),
                )
            self._dead_letter(c, pipeline, None, letters)
            return True

    def delivery_seen(self, pipeline: str, delivery_key: str) -> bool:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT 1 FROM deliveries WHERE pipeline = %s AND delivery_key = %s", (pipeline, delivery_key)
            ).fetchone()
        return row is not None

    def prune_deliveries(self, before: str) -> int:
        with self._tx() as c:
            c.execute("DELETE FROM deliveries WHERE received_at < %s", (before,))
            return max(c.rowcount, 0)

    # -- staging --------------------------------------------------------------

    def stage(
        self, pipeline: str, stream: str, run_id: int, rows: Sequence[StagedRow], state: dict[str, Any] | None = None
    ) -> int:
        """Stage the rows (a (key, version) already staged is kept once) and the read state after them, in one
        transaction; one statement over arrays, so a page is one round trip whatever its size."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO staging (pipeline, stream, key, version, payload, run_id) "
                "SELECT %s, %s, k, v, p, %s FROM unnest(%s::text[], %s::text[], %b::bytea[]) AS t(k, v, p) "
                "ON CONFLICT (pipeline, stream, key, version) DO NOTHING",
                (pipeline, stream, run_id, [r.key for r in rows], [r.version for r in rows], [r.payload for r in rows]),
            )
            added = max(c.rowcount, 0)
            if state is not None:
                # Fenced by run: a later run's save (its prepare, its reader) wins over a stale reader's, whose
                # page is rolled back with it (ReadSuperseded). Run 0 (events, feeds) is not a run: never fenced.
                c.execute(
                    "INSERT INTO read_states (pipeline, stream, state, updated_at, run_id) "
                    "VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (pipeline, stream) DO UPDATE SET state = excluded.state, "
                    "updated_at = excluded.updated_at, run_id = GREATEST(read_states.run_id, excluded.run_id) "
                    "WHERE excluded.run_id = 0 OR read_states.run_id <= excluded.run_id",
                    (pipeline, stream, orjson.dumps(state).decode(), utc_now(), run_id),
                )
                if c.rowcount == 0:
                    raise ReadSuperseded(pipeline, stream, run_id)
            return added

    def staged(
        self, pipeline: str, streams: Iterable[str], chunk: int = 2000, after: int = 0
    ) -> Iterator[list[StagedRecord]]:
        names = list(streams)
        last = after
        while True:
            with self._conn() as conn:
                rows = conn.execute(
                    "SELECT seq, stream, key, version, payload FROM staging "
                    "WHERE pipeline = %s AND seq > %s AND stream = ANY(%s) ORDER BY seq LIMIT %s",
                    (pipeline, last, names, chunk),
                    binary=True,  # raw pages as they are stored (in text, hex: 2x the bytes, decoded here)
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [StagedRecord(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def staged_count(self, pipeline: str, after: int = 0) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM staging WHERE pipeline = %s AND seq > %s", (pipeline, after)
            ).fetchone()
        return int(row[0]) if row else 0

    def clear_staging(self, pipeline: str, up_to_seq: int) -> None:
        with self._tx() as c:
            c.execute(
                "DELETE FROM staging s WHERE s.pipeline = %s AND s.seq <= %s AND NOT EXISTS "
                "(SELECT 1 FROM outbox o WHERE o.pipeline = %s AND o.source_seq = s.seq)",
                (pipeline, up_to_seq, pipeline),
            )

    def max_staged_seq(self, pipeline: str) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT MAX(seq) FROM staging WHERE pipeline = %s", (pipeline,)).fetchone()
        return int(row[0] or 0) if row else 0

    def get_mark(self, pipeline: str, name: str) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT value FROM marks WHERE pipeline = %s AND name = %s", (pipeline, name)).fetchone()
        return int(row[0]) if row else 0

    def commit_planned(
        self,
        pipeline: str,
        run_id: int | None,
        planned: Mapping[str, Sequence[PlannedRow]],
        letters: Sequence[NewDeadLetter],
        mark: tuple[str, int],
    ) -> None:
        """A chunk's queued rows and dead letters and the mark past it, atomically (one planner per pipeline:
        several planners use ``claim_staged`` / ``commit_claimed`` instead of the mark)."""
        with self._tx() as c:
            for obj, rows in planned.items():
                self._put_outbox(c, pipeline, obj, rows)
            self._dead_letter(c, pipeline, run_id, letters)
            c.execute(
                "INSERT INTO marks (pipeline, name, value) VALUES (%s, %s, %s) ON CONFLICT (pipeline, name) "
                "DO UPDATE SET value = excluded.value WHERE excluded.value > marks.value",
                (pipeline, *mark),
            )

    # -- claims: many planners / senders on one pipeline -----------------------------------------------------

    def claim_staged(
        self, pipeline: str, streams: Collection[str], limit: int, lease_seconds: float, owner: str | None = None
    ) -> StagedClaim:
        """Claim up to ``limit`` unplanned staged records (seq order) that nobody holds a live lease on; rows
        another claimer is locking right now are skipped, not waited for."""
        me = owner or self.owner
        with self._tx() as c:
            rows = c.execute(
                "WITH picked AS (SELECT seq FROM staging WHERE pipeline = %(p)s AND stream = ANY(%(streams)s) "
                "AND planned_at IS NULL AND (lease_until IS NULL OR lease_until < now()) "
                "ORDER BY seq LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
                "UPDATE staging s SET owner = %(me)s, fence = s.fence + 1, "
                "lease_until = now() + make_interval(secs => %(lease)s) FROM picked WHERE s.seq = picked.seq "
                "RETURNING s.seq, s.fence, s.stream, s.key, s.version, s.payload",
                {"p": pipeline, "streams": list(streams), "n": limit, "me": me, "lease": lease_seconds},
                binary=True,
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        return StagedClaim(
            me,
            [StagedRecord(int(r[0]), r[2], r[3], r[4], bytes(r[5])) for r in rows],
            {int(r[0]): int(r[1]) for r in rows},
        )

    def commit_claimed(
        self,
        pipeline: str,
        run_id: int | None,
        planned: Mapping[str, Sequence[PlannedRow]],
        letters: Sequence[NewDeadLetter],
        claim: StagedClaim,
    ) -> bool:
        """A claimed chunk's rows and letters, and its records marked planned, atomically, only if the claim
        still holds every record (same owner and fence). False (and nothing written): the lease was lost and
        another planner plans these records."""
        seqs = list(claim.fences)
        try:
            self._commit_claimed(pipeline, run_id, planned, letters, claim, seqs)
        except _LeaseLost:
            return False
        return True

    def _commit_claimed(
        self,
        pipeline: str,
        run_id: int | None,
        planned: Mapping[str, Sequence[PlannedRow]],
        letters: Sequence[NewDeadLetter],
        claim: StagedClaim,
        seqs: list[int],
    ) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE staging s SET planned_at = now(), lease_until = NULL FROM unnest(%s::bigint[], %s::bigint[]) "
                "AS f(seq, fence) WHERE s.seq = f.seq AND s.fence = f.fence AND s.owner = %s "
                "AND s.planned_at IS NULL",
                (seqs, [claim.fences[s] for s in seqs], claim.owner),
            )
            if c.rowcount != len(seqs):
                raise _LeaseLost
            for obj, rows in planned.items():
                self._put_outbox(c, pipeline, obj, rows)
            self._dead_letter(c, pipeline, run_id, letters)

    def claim_outbox(
        self,
        pipeline: str,
        obj: str,
        limit: int,
        lease_seconds: float,
        owner: str | None = None,
        *,
        with_source: bool = False,
        keys: Sequence[str] | None = None,
        fill: bool = True,
    ) -> OutboxClaim:
        """Claim up to ``limit`` queued rows of ``obj`` nobody holds a live lease on, for sending: the rows of
        ``keys`` first (primary-key lookups), then, while fewer than ``limit`` are held and ``fill`` is on, the
        first others in key order. Answers are recorded with ``record_results`` as usual: a row leaves only at
        the version sent.

        ``keys``: a work item names its rows. Claimed by key they cost the server an index lookup each (once the
        planner has the outbox's statistics: ``analyze_outbox``); the scan in key order sorts every queued row of
        the object (40-70 ms a claim at 20,000 rows), and a run makes one claim per item."""
        me = owner or self.owner
        args = {"p": pipeline, "o": obj, "me": me, "lease": lease_seconds}
        with self._tx() as c:
            claimed = []
            if keys:
                claimed = c.execute(
                    "WITH picked AS (SELECT key FROM outbox WHERE pipeline = %(p)s AND object = %(o)s "
                    "AND key = ANY(%(keys)s) AND (lease_until IS NULL OR lease_until < now()) "
                    f"LIMIT %(n)s FOR UPDATE SKIP LOCKED) {_CLAIM_PICKED}",
                    {**args, "keys": list(keys), "n": limit},
                ).fetchall()
            if fill and len(claimed) < limit:
                # The rows just claimed are leased now (this transaction sees its own update): not taken twice.
                claimed += c.execute(
                    "WITH picked AS (SELECT key FROM outbox WHERE pipeline = %(p)s AND object = %(o)s "
                    "AND (lease_until IS NULL OR lease_until < now()) ORDER BY key LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
                    f"{_CLAIM_PICKED}",
                    {**args, "n": limit - len(claimed)},
                ).fetchall()
        fences = {r[1]: int(r[0]) for r in claimed}
        if with_source:
            rows = self.outbox_rows(pipeline, obj, sorted(fences), with_source=True)
        else:
            rows = [self._outbox_row(r[1:]) for r in claimed]
        rows.sort(key=lambda r: r.key)
        return OutboxClaim(me, rows, fences)

    def analyze_outbox(self) -> None:
        """Refresh the planner's statistics of the outbox, and its visibility map, once a run has planned into it,
        before workers claim.

        Autovacuum analyzes a table some time after it changed; a run fills the outbox and claims from it within
        seconds. On the statistics of the empty table the planner reads every queued row of the object for each
        claim (a bitmap scan of (pipeline, object), keys filtered afterwards: 24 ms a claim at 20,000 rows, and
        most of the server's CPU in a distributed run); with them, a claim by key is an index lookup (0.4 ms).

        VACUUM, not only ANALYZE: it marks the freshly filled pages all-visible, so that ``outbox_count``, which
        the coordinator asks five times a second per object being loaded, counts the primary key's entries of
        that object (an index-only scan) instead of reading every queued row of every object and its payload
        (a sequential scan, whose cost grew with the outbox: the server's CPU grew with the square of the run).
        TRUNCATE false: giving empty end pages back takes an exclusive lock that would stall the claims of other
        pipelines' workers on the same table."""
        with self._conn() as conn:
            conn.execute("VACUUM (ANALYZE, TRUNCATE false) outbox")

    def release_outbox(self, pipeline: str, obj: str, claim: OutboxClaim) -> int:
        """Give back what a claim still holds (a sender stopping early); returns how many rows."""
        keys = list(claim.fences)
        with self._tx() as c:
            c.execute(
                "UPDATE outbox o SET owner = NULL, lease_until = NULL FROM unnest(%s::text[], %s::bigint[]) "
                "AS f(key, fence) WHERE o.pipeline = %s AND o.object = %s AND o.key = f.key AND o.fence = f.fence "
                "AND o.owner = %s",
                (keys, [claim.fences[k] for k in keys], pipeline, obj, claim.owner),
            )
            return max(c.rowcount, 0)

    def outbox_leased(self, pipeline: str, obj: str) -> int:
        """Queued rows of ``obj`` a sender holds a live lease on (a distributed run waits for them to be answered
        or for the lease of a dead worker to run out). The coordinator asks on every poll: the ``outbox_leased``
        partial index (migration 0005) holds only leased rows, so the count does not grow with the queue."""
        with self._conn() as conn:
            row = conn.execute(_OUTBOX_LEASED, (pipeline, obj)).fetchone()
        return int(row[0]) if row else 0

    def outbox_holders(self, pipeline: str) -> dict[str, int]:
        """Queued rows of the pipeline under a live lease, per lease owner (``worker_id()``: host:pid:random):
        which sender holds work right now (`ferry demo --workers N --kill-worker` picks its victim by it)."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT owner, COUNT(*) FROM outbox WHERE pipeline = %s AND lease_until >= now() "
                "AND owner IS NOT NULL GROUP BY owner",
                (pipeline,),
            ).fetchall()
        return {str(owner): int(count) for owner, count in rows}

    # -- versions / id map ----------------------------------------------------

    def versions_for(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key, version FROM versions WHERE pipeline = %s AND object = %s AND key = ANY(%s)",
                (pipeline, obj, list(keys)),
            ).fetchall()
        return {k: v for k, v in rows}

    def record_written(self, pipeline: str, obj: str, rows: Sequence[Written], resolution: str = "written") -> None:
        with self._tx() as c:
            self._record_written(c, pipeline, obj, rows, resolution)

    @staticmethod
    def _record_written(
        c: psycopg.Cursor[Any], pipeline: str, obj: str, rows: Sequence[Written], resolution: str
    ) -> None:
        if not rows:
            return
        now = utc_now()
        final = _versions_in_order(rows)
        c.execute(
            "INSERT INTO versions (pipeline, object, key, version, target_id, updated_at) "
            "SELECT %s, %s, k, v, t, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(k, v, t) "
            + _VERSION_FORWARD,
            (pipeline, obj, now, [w.key for w in final], [w.version for w in final], [w.target_id for w in final]),
        )
        c.execute(
            "UPDATE dlq SET status = 'resolved', resolved_at = %s, resolution = %s "
            "WHERE pipeline = %s AND object = %s AND status = 'open' AND record_key = ANY(%s)",
            (now, resolution, pipeline, obj, [w.key for w in final]),
        )

    def target_ids(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key, target_id FROM versions WHERE pipeline = %s AND object = %s AND key = ANY(%s) "
                "AND target_id IS NOT NULL",
                (pipeline, obj, list(keys)),
            ).fetchall()
        return {k: t for k, t in rows}

    def keys_for_targets(self, pipeline: str, obj: str, target_ids: Sequence[str]) -> dict[str, str]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT target_id, key FROM versions WHERE pipeline = %s AND object = %s AND target_id = ANY(%s)",
                (pipeline, obj, list(target_ids)),
            ).fetchall()
        return {t: k for t, k in rows}

    def any_target_id(self, pipeline: str, obj: str, prefix: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute(
                # the (pipeline, object) index, stopping at the first match (a peer's ids all take one form)
                "SELECT target_id FROM versions WHERE pipeline = %s AND object = %s "
                "AND starts_with(target_id, %s) LIMIT 1",
                (pipeline, obj, prefix),
            ).fetchone()
        return str(row[0]) if row else None

    def written_digests(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, str]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key, digest FROM written_digests WHERE pipeline = %s AND object = %s AND key = ANY(%s)",
                (pipeline, obj, list(keys)),
            ).fetchall()
        return {k: d for k, d in rows}

    def save_written_digests(self, pipeline: str, obj: str, digests: Mapping[str, str]) -> None:
        with self._tx() as c:
            c.executemany(
                "INSERT INTO written_digests (pipeline, object, key, digest) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (pipeline, object, key) DO UPDATE SET digest = EXCLUDED.digest",
                [(pipeline, obj, k, d) for k, d in sorted(digests.items())],
            )

    # -- outbox ---------------------------------------------------------------

    def put_outbox(self, pipeline: str, obj: str, rows: Sequence[PlannedRow]) -> None:
        with self._tx() as c:
            self._put_outbox(c, pipeline, obj, rows)

    @staticmethod
    def _put_outbox(c: psycopg.Cursor[Any], pipeline: str, obj: str, rows: Sequence[PlannedRow]) -> None:
        if not rows:
            return
        final = _outbox_in_order(rows)
        dumps = orjson.dumps
        sources = [_source_columns(r.source) for r in final]
        # One statement for the whole batch (rows in key order: two writers lock rows in one order, so they wait
        # for each other instead of deadlocking).
        c.execute(
            "INSERT INTO outbox (pipeline, object, key, version, payload, source_payload, source_seq, stream, "
            "source_key) SELECT %s, %s, k, v, p, sp, ss, st, sk FROM unnest(%s::text[], %s::text[], %b::bytea[], "
            "%b::bytea[], %s::bigint[], %s::text[], %s::text[]) AS u(k, v, p, sp, ss, st, sk) " + _OUTBOX_UPSERT,
            (
                pipeline,
                obj,
                [r.key for r in final],
                [r.version for r in final],
                [dumps(r.payload) for r in final],
                [sp for sp, _ in sources],
                [ss for _, ss in sources],
                [r.stream for r in final],
                [r.source_key for r in final],
            ),
        )

    def outbox_count(self, pipeline: str, obj: str | None = None) -> int:
        """Queued rows of the pipeline (of ``obj``). Per object, an index-only scan of the primary key's entries
        once ``analyze_outbox`` has vacuumed the filled outbox: the coordinator of a distributed run asks on every
        poll."""
        sql, args = _OUTBOX_COUNT, [pipeline]
        if obj is not None:
            sql += " AND object = %s"
            args.append(obj)
        with self._conn() as conn:
            row = conn.execute(sql, args).fetchone()
        return int(row[0]) if row else 0

    def outbox(
        self, pipeline: str, obj: str, chunk: int = 5000, *, with_source: bool = True
    ) -> Iterator[list[OutboxRow]]:
        select = _OUTBOX_FULL if with_source else _OUTBOX_LEAN
        last = ""
        while True:
            with self._conn() as conn:
                rows = conn.execute(
                    f"{select} WHERE o.pipeline = %s AND o.object = %s AND o.key > %s ORDER BY o.key LIMIT %s",
                    (pipeline, obj, last, chunk),
                    binary=True,
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [self._outbox_row(r) for r in rows]

    def outbox_rows(self, pipeline: str, obj: str, keys: Sequence[str], *, with_source: bool = True) -> list[OutboxRow]:
        select = _OUTBOX_FULL if with_source else _OUTBOX_LEAN
        with self._conn() as conn:
            rows = conn.execute(
                f"{select} WHERE o.pipeline = %s AND o.object = %s AND o.key = ANY(%s)",
                (pipeline, obj, list(keys)),
                binary=True,
            ).fetchall()
        return [self._outbox_row(r) for r in rows]

    def source_payloads(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, bytes | None]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT o.key, COALESCE(o.source_payload, s.payload) FROM outbox o "
                "LEFT JOIN staging s ON s.seq = o.source_seq WHERE o.pipeline = %s AND o.object = %s "
                "AND o.key = ANY(%s)",
                (pipeline, obj, list(keys)),
                binary=True,
            ).fetchall()
        return {k: bytes(p) if p is not None else None for k, p in rows}

    @staticmethod
    def _outbox_row(r: Sequence[Any]) -> OutboxRow:
        return OutboxRow(
            r[0],
            r[1],
            orjson.loads(r[2]),
            bytes(r[3]) if r[3] is not None else None,
            int(r[4]),
            orjson.loads(r[5]) if r[5] else [],
            r[6],
            r[7],
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
        with self._tx() as c:
            self._record_written(c, pipeline, obj, written, "written")
            self._dead_letter(c, pipeline, run_id, letters)
            if done:
                c.execute(
                    "DELETE FROM outbox o USING unnest(%s::text[], %s::text[]) AS d(key, version) "
                    "WHERE o.pipeline = %s AND o.object = %s AND o.key = d.key AND o.version = d.version",
                    ([k for k, _ in done], [v for _, v in done], pipeline, obj),
                )
            self._bump(c, pipeline, obj, retry)
            self._forget_jobs(c, pipeline, obj, jobs)

    @staticmethod
    def _bump(c: psycopg.Cursor[Any], pipeline: str, obj: str, failed: Sequence[FailedAttempt]) -> None:
        """Count a failed attempt per key with what the target said, and give the row's lease back (it goes out
        again)."""
        now = utc_now()
        for f in failed:
            row = c.execute(
                "SELECT attempts, history FROM outbox WHERE pipeline = %s AND object = %s AND key = %s FOR UPDATE",
                (pipeline, obj, f.key),
            ).fetchone()
            if row is None:
                continue
            history = orjson.loads(row[1]) if row[1] else []
            history.append({"attempt": row[0] + 1, "at": now, "errors": f.errors})
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, history = %s, owner = NULL, lease_until = NULL "
                "WHERE pipeline = %s AND object = %s AND key = %s",
                (orjson.dumps(history).decode(), pipeline, obj, f.key),
            )

    # -- remote jobs --------------------------------------------------------------------------------------------

    def save_remote_job(self, pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]) -> None:
        """Journaled the moment the job exists, owned by this worker (its lease renewed by ``renew_remote_job``)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO bulk_jobs (pipeline, object, job_id, created_at, owner) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (pipeline, object, job_id) DO UPDATE SET created_at = excluded.created_at, "
                "owner = excluded.owner",
                (pipeline, obj, job_id, utc_now(), self.owner),
            )
            self._add_job_records(c, pipeline, obj, job_id, entries)

    def add_remote_job_records(self, pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]) -> None:
        with self._tx() as c:
            self._add_job_records(c, pipeline, obj, job_id, entries)

    @staticmethod
    def _add_job_records(
        c: psycopg.Cursor[Any], pipeline: str, obj: str, job_id: str, entries: Sequence[JournalEntry]
    ) -> None:
        if not entries:
            return
        last = {e.key: e for e in entries}  # a key journaled twice keeps its last entry, as row-by-row upserts
        # Inserted in the order given (``position`` keeps the journal's order).
        final = [e for e in entries if last[e.key] is e]
        c.execute(
            "INSERT INTO bulk_job_records (pipeline, object, job_id, key, version, ext) "
            "SELECT %s, %s, %s, k, v, x FROM unnest(%s::text[], %s::text[], %s::text[]) "
            "WITH ORDINALITY AS u(k, v, x, n) "
            "ORDER BY n ON CONFLICT (pipeline, object, job_id, key) DO UPDATE SET version = excluded.version, "
            "ext = excluded.ext",
            (
                pipeline,
                obj,
                job_id,
                [e.key for e in final],
                [e.version for e in final],
                [e.external_key for e in final],
            ),
        )

    def remote_job_entries(
        self, pipeline: str, obj: str, job_ids: Sequence[str], external_keys: Sequence[str]
    ) -> list[JournalEntry]:
        if not job_ids or not external_keys:
            return []
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key, version, ext FROM bulk_job_records WHERE pipeline = %s AND object = %s "
                "AND job_id = ANY(%s) AND ext = ANY(%s)",
                (pipeline, obj, list(job_ids), list(external_keys)),
            ).fetchall()
        return [JournalEntry(k, v, e) for k, v, e in rows]

    def record_job_written(
        self, pipeline: str, obj: str, job_id: str, failed_external_keys: Collection[str], *, page: int = 10_000
    ) -> int:
        """As on SQLite, one transaction per ``page`` journaled records; each page is one statement of
        data-modifying CTEs (no temporary tables: one per session would bloat the catalog)."""
        failed = list(failed_external_keys)
        written, after = 0, ""
        while True:
            with self._conn() as conn:
                bound = conn.execute(
                    "SELECT key FROM bulk_job_records WHERE pipeline = %s AND object = %s AND job_id = %s "
                    "AND key > %s ORDER BY key LIMIT 1 OFFSET %s",
                    (pipeline, obj, job_id, after, page - 1),
                ).fetchone()
            upper = bound[0] if bound else None
            with self._tx() as c:
                written += self._record_job_range(c, pipeline, obj, job_id, after, upper, failed)
            if upper is None:
                return written
            after = upper

    @staticmethod
    def _record_job_range(
        c: psycopg.Cursor[Any],
        pipeline: str,
        obj: str,
        job_id: str,
        after: str,
        upper: str | None,
        failed: list[str],
    ) -> int:
        # Both sides of each join are bounded to the page's key range, and joined by hash or merge: right after a
        # large load the tables have no statistics yet, and the planner's nested loop over "1 row" estimates
        # compared every journaled record with every queued one (45 s for a 10,000-record job, measured).
        c.execute("SET LOCAL enable_nestloop = off")
        c.execute(
            "WITH w AS (SELECT j.key, j.version FROM bulk_job_records j JOIN outbox o ON o.pipeline = j.pipeline "
            "AND o.object = j.object AND o.key = j.key AND o.version = j.version "
            "WHERE j.pipeline = %(p)s AND j.object = %(o)s AND j.job_id = %(job)s AND j.key > %(after)s "
            "AND (%(upto)s::text IS NULL OR j.key <= %(upto)s) AND NOT (j.ext = ANY(%(failed)s)) "
            "AND o.pipeline = %(p)s AND o.object = %(o)s AND o.key > %(after)s "
            "AND (%(upto)s::text IS NULL OR o.key <= %(upto)s) "
            "FOR UPDATE OF o), "
            "v AS (INSERT INTO versions (pipeline, object, key, version, target_id, updated_at) "
            "SELECT %(p)s, %(o)s, key, version, NULL, %(now)s FROM w " + _VERSION_FORWARD + "), "
            "d AS (UPDATE dlq SET status = 'resolved', resolved_at = %(now)s, resolution = 'written' "
            "WHERE pipeline = %(p)s AND object = %(o)s AND status = 'open' AND record_key IN (SELECT key FROM w)) "
            "DELETE FROM outbox o USING w WHERE o.pipeline = %(p)s AND o.object = %(o)s AND o.key = w.key "
            "AND o.version = w.version AND o.key > %(after)s AND (%(upto)s::text IS NULL OR o.key <= %(upto)s)",
            {
                "p": pipeline,
                "o": obj,
                "job": job_id,
                "after": after,
                "upto": upper,
                "failed": failed,
                "now": utc_now(),
            },
        )
        return max(c.rowcount, 0)

    def remote_jobs(self, pipeline: str, obj: str | None = None) -> list[RemoteJob]:
        sql, args = "SELECT object, job_id, created_at FROM bulk_jobs WHERE pipeline = %s", [pipeline]
        if obj is not None:
            sql += " AND object = %s"
            args.append(obj)
        with self._conn() as conn:
            jobs = []
            for o, job_id, created in conn.execute(sql + " ORDER BY created_at", args).fetchall():
                entries = conn.execute(
                    "SELECT key, version FROM bulk_job_records WHERE pipeline = %s AND object = %s AND job_id = %s "
                    "ORDER BY position",
                    (pipeline, o, job_id),
                ).fetchall()
                jobs.append(RemoteJob(o, job_id, [(k, v) for k, v in entries], created))
        return jobs

    def renew_remote_job(self, pipeline: str, obj: str, job_id: str, lease_seconds: float) -> bool:
        """Extend this worker's lease on a job it polls; False when another worker took the job over."""
        with self._tx() as c:
            c.execute(
                "UPDATE bulk_jobs SET lease_until = now() + make_interval(secs => %s) "
                "WHERE pipeline = %s AND object = %s AND job_id = %s AND owner = %s",
                (lease_seconds, pipeline, obj, job_id, self.owner),
            )
            return c.rowcount == 1

    def claim_remote_jobs(self, pipeline: str, lease_seconds: float, obj: str | None = None) -> list[RemoteJob]:
        """The jobs this worker may resume: its own, and those whose owner's lease ran out (a worker died), taken
        over in one statement with ``SKIP LOCKED``, so two workers never resume one job."""
        with self._tx() as c:
            taken = c.execute(
                "WITH picked AS (SELECT pipeline, object, job_id FROM bulk_jobs WHERE pipeline = %(p)s "
                "AND (%(o)s::text IS NULL OR object = %(o)s) AND (owner = %(me)s OR lease_until IS NULL "
                "OR lease_until < now()) FOR UPDATE SKIP LOCKED) "
                "UPDATE bulk_jobs b SET owner = %(me)s, fence = b.fence + 1, "
                "lease_until = now() + make_interval(secs => %(lease)s) FROM picked "
                "WHERE (b.pipeline, b.object, b.job_id) = (picked.pipeline, picked.object, picked.job_id) "
                "RETURNING b.object, b.job_id",
                {"p": pipeline, "o": obj, "me": self.owner, "lease": lease_seconds},
            ).fetchall()
        mine = {(o, j) for o, j in taken}
        return [job for job in self.remote_jobs(pipeline, obj) if (job.object, job.job_id) in mine]

    def forget_remote_job(self, pipeline: str, obj: str, job_id: str) -> None:
        with self._tx() as c:
            self._forget_jobs(c, pipeline, obj, [job_id])

    @staticmethod
    def _forget_jobs(c: psycopg.Cursor[Any], pipeline: str, obj: str, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        ids = list(job_ids)
        c.execute(
            "DELETE FROM bulk_jobs WHERE pipeline = %s AND object = %s AND job_id = ANY(%s)", (pipeline, obj, ids)
        )
        c.execute(
            "DELETE FROM bulk_job_records WHERE pipeline = %s AND object = %s AND job_id = ANY(%s)",
            (pipeline, obj, ids),
        )

    # -- dead letters ---------------------------------------------------------

    def dead_letter(self, pipeline: str, run_id: int | None, letters: Sequence[NewDeadLetter]) -> None:
        if not letters:
            return
        with self._tx() as c:
            self._dead_letter(c, pipeline, run_id, letters)

    @staticmethod
    def _dead_letter(
        c: psycopg.Cursor[Any], pipeline: str, run_id: int | None, letters: Sequence[NewDeadLetter]
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
                    d.source_payload,
                    orjson.dumps(d.mapped_payload) if d.mapped_payload is not None else None,
                    max(1, len(d.history)),
                    now,
                    now,
                    d.stream,
                    d.source_key,
                    orjson.dumps(d.history).decode() if d.history else None,
                )
            )
        same_discarded = "dlq.status = 'discarded' AND dlq.version IS NOT DISTINCT FROM excluded.version"
        c.executemany(
            "INSERT INTO dlq (pipeline, run_id, object, record_key, version, error_code, message, fields, errors, "
            "source_payload, mapped_payload, attempts, first_seen, last_seen, stream, source_key, history) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (pipeline, object, record_key) DO UPDATE SET run_id = excluded.run_id, "
            "version = excluded.version, error_code = excluded.error_code, message = excluded.message, "
            "fields = excluded.fields, errors = excluded.errors, "
            "source_payload = COALESCE(excluded.source_payload, dlq.source_payload), "
            "mapped_payload = excluded.mapped_payload, attempts = dlq.attempts + excluded.attempts, "
            "last_seen = excluded.last_seen, "
            f"status = CASE WHEN {same_discarded} THEN 'discarded' ELSE 'open' END, "
            f"resolved_at = CASE WHEN {same_discarded} THEN dlq.resolved_at END, "
            f"resolution = CASE WHEN {same_discarded} THEN dlq.resolution END, "
            "stream = COALESCE(excluded.stream, dlq.stream), "
            "source_key = COALESCE(excluded.source_key, dlq.source_key), "
            "history = COALESCE(excluded.history, dlq.history)",
            rows,
        )

    def dead_letter_keys(self, pipeline: str, obj: str) -> set[str]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT record_key FROM dlq WHERE pipeline = %s AND object = %s AND status = 'open'", (pipeline, obj)
            ).fetchall()
        return {r[0] for r in rows}

    def find_dead_letters(self, f: LetterFilter, limit: int | None = 100, offset: int = 0) -> list[DeadLetter]:
        where, args = _letter_where(f)
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_DLQ_COLUMNS} FROM dlq{where} ORDER BY id LIMIT %s OFFSET %s", (*args, limit, offset)
            ).fetchall()
        return [self._letter(r) for r in rows]

    def count_matching_letters(self, f: LetterFilter) -> int:
        where, args = _letter_where(f)
        with self._conn() as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM dlq{where}", args).fetchone()
        return int(row[0]) if row else 0

    def find_dead_letters_lean(self, f: LetterFilter, limit: int = 100) -> list[DeadLetter]:
        where, args = _letter_where(f)
        columns = _DLQ_COLUMNS.replace(" source_payload,", " NULL,")
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {columns} FROM dlq{where} ORDER BY id LIMIT %s", (*args, limit)).fetchall()
        return [self._letter(r) for r in rows]

    def dead_letter_source_payloads(self, letter_ids: Sequence[int]) -> dict[int, Any]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, source_payload FROM dlq WHERE id = ANY(%s) AND source_payload IS NOT NULL",
                ([int(i) for i in letter_ids],),
            ).fetchall()
        return {int(i): orjson.loads(p) for i, p in rows}

    def count_dead_letters(self, pipeline: str | None = None, status: str = "open") -> dict[str, int]:
        sql, args = "SELECT object, COUNT(*) FROM dlq WHERE status = %s", [status]
        if pipeline:
            sql += " AND pipeline = %s"
            args.append(pipeline)
        with self._conn() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(sql + " GROUP BY object", args).fetchall()}

    def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        with self._conn() as conn:
            r = conn.execute(f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE id = %s", (letter_id,)).fetchone()
        return self._letter(r) if r else None

    def dead_letter_for(self, pipeline: str, obj: str, key: str) -> DeadLetter | None:
        with self._conn() as conn:
            r = conn.execute(
                f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE pipeline = %s AND object = %s AND record_key = %s",
                (pipeline, obj, key),
            ).fetchone()
        return self._letter(r) if r else None

    def discard_dead_letters(self, f: LetterFilter, reason: str) -> int:
        where, args = _letter_where(replace(f, status="open"))
        with self._tx() as c:
            c.execute(
                f"UPDATE dlq SET status = 'discarded', resolved_at = %s, resolution = %s{where}",
                (utc_now(), f"discarded: {reason}", *args),
            )
            return max(c.rowcount, 0)

    @staticmethod
    def _letter(r: Sequence[Any]) -> DeadLetter:
        return DeadLetter(
            id=int(r[0]),
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
            attempts=int(r[12]),
            first_seen=r[13],
            last_seen=r[14],
            status=r[15],
            stream=r[16],
            source_key=r[17],
            history=orjson.loads(r[18]) if r[18] else [],
            resolved_at=r[19],
            resolution=r[20],
        )

    # -- API call ledger ------------------------------------------------------------------------------------------

    def take_api_calls(
        self, pipeline: str, system: str, minute: int, calls: int, *, cap: int | None, since_minute: int
    ) -> tuple[bool, int]:
        """Lock the (pipeline, system) ledger row, then sum the window and count the calls, in one transaction:
        a take waiting for the lock reads the window after the take before it committed (docs/store.md)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO api_ledgers (pipeline, system) VALUES (%s, %s) ON CONFLICT DO NOTHING", (pipeline, system)
            )
            c.execute("SELECT 1 FROM api_ledgers WHERE pipeline = %s AND system = %s FOR UPDATE", (pipeline, system))
            row = c.execute(
                "SELECT COALESCE(SUM(calls), 0) FROM api_calls WHERE pipeline = %s AND system = %s AND minute >= %s",
                (pipeline, system, since_minute),
            ).fetchone()
            spent = int(row[0]) if row else 0
            if cap is not None and spent + calls > cap:
                return False, spent
            c.execute(
                "INSERT INTO api_calls (pipeline, system, minute, calls) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (pipeline, system, minute) DO UPDATE SET calls = api_calls.calls + excluded.calls",
                (pipeline, system, minute, calls),
            )
            return True, spent + calls

    def api_call_buckets(self, pipeline: str, system: str, since_minute: int) -> list[tuple[int, int]]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT minute, calls FROM api_calls WHERE pipeline = %s AND system = %s AND minute >= %s "
                "ORDER BY minute",
                (pipeline, system, since_minute),
            ).fetchall()
        return [(int(m), int(n)) for m, n in rows]

    def prune_api_calls(self, before_minute: int) -> int:
        with self._tx() as c:
            c.execute("DELETE FROM api_calls WHERE minute < %s", (before_minute,))
            return max(c.rowcount, 0)

    def save_api_allocation(self, pipeline: str, system: str, daily_max: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO api_allocations (pipeline, system, daily_max, seen_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (pipeline, system) DO UPDATE SET daily_max = excluded.daily_max, "
                "seen_at = excluded.seen_at",
                (pipeline, system, daily_max, utc_now()),
            )

    def api_allocation(self, pipeline: str, system: str) -> int | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT daily_max FROM api_allocations WHERE pipeline = %s AND system = %s", (pipeline, system)
            ).fetchone()
        return int(row[0]) if row else None


class _LeaseLost(StateError):
    """Raised inside ``commit_claimed``'s transaction to roll it back; turned into False."""


if TYPE_CHECKING:

    def _implements_the_ports(store: PostgresStore) -> StateStore:
        """mypy proves here that the adapter conforms to every port."""
        return store
