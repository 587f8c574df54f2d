"""Optional SQLite persistence of an org: `SalesforceSandbox(..., persist=True)` → `state_dir/salesforce/org.db`.

What is kept: every record (live and in the recycle bin), the id and auto-number counters, the OAuth
client id/secret, the DailyApiRequests counter and per-endpoint stats, and Bulk jobs (metadata, the
upload of an Open job, and the result rows). Value indexes (external ids, unique fields, lookups) are
derived data: they are rebuilt from the records on load.

Writes are write-through per request: the store marks the ids it touches, and `flush()` runs at the end
of each API call (and after each Bulk chunk) as one transaction with `executemany`. The database runs in
WAL mode with `synchronous=NORMAL`: a committed request survives a crash or kill of the sandbox process;
an OS crash or power loss may lose the last few commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ferry.sandbox.salesforce import SalesforceSandbox
    from ferry.sandbox.salesforce.bulk import IngestJob, QueryJob

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, object TEXT NOT NULL, deleted INTEGER NOT NULL,
                                    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (kind TEXT NOT NULL, key TEXT NOT NULL, value INTEGER NOT NULL,
                                     PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, info BLOB NOT NULL, data BLOB);
CREATE TABLE IF NOT EXISTS job_rows (job TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL, rows BLOB NOT NULL,
                                     PRIMARY KEY (job, kind, seq));
"""

_UPSERT_JOB = ("INSERT INTO jobs (id, kind, info, data) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (id) DO UPDATE SET info = excluded.info, data = excluded.data")
_RESULT_KINDS = (("s", "successful_rows"), ("f", "failed_rows"), ("u", "unprocessed_rows"))


def db_path(state_dir: Path) -> Path:
    return Path(state_dir) / "salesforce" / "org.db"


class OrgDb:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The server runs every request on one event-loop thread, but the sandbox is built on another
        # thread than the one serving it (start_in_thread); access is never concurrent.
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def is_empty(self) -> bool:
        return self.conn.execute("SELECT 1 FROM records LIMIT 1").fetchone() is None

    # --- load -----------------------------------------------------------------------------------------

    def load_records(self) -> Iterable[tuple[str, bool, dict[str, Any]]]:
        for obj, deleted, data in self.conn.execute("SELECT object, deleted, data FROM records ORDER BY rowid"):
            yield obj, bool(deleted), orjson.loads(data)

    def counters(self, kind: str) -> dict[str, int]:
        return dict(self.conn.execute("SELECT key, value FROM counters WHERE kind = ?", (kind,)).fetchall())

    def meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def put_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, orjson.dumps(value)))

    def load_jobs(self) -> Iterable[tuple[str, dict[str, Any], bytes | None, dict[str, list[list[str]]]]]:
        jobs = self.conn.execute("SELECT id, kind, info, data FROM jobs ORDER BY rowid").fetchall()
        for job_id, kind, info, data in jobs:
            rows: dict[str, list[list[str]]] = {k: [] for k, _ in _RESULT_KINDS}
            # result rows are appended in blocks (one per flush): seq is the index of the block's first row
            for k, block in self.conn.execute("SELECT kind, rows FROM job_rows WHERE job = ? ORDER BY kind, seq",
                                              (job_id,)):
                rows[k].extend(orjson.loads(block))
            yield kind, orjson.loads(info), data, rows

    # --- write ----------------------------------------------------------------------------------------

    def flush(self, sandbox: SalesforceSandbox) -> None:
        """Write everything the last request (or Bulk chunk) changed, in one transaction."""
        state, bulk = sandbox.state, sandbox.bulk
        store = state.store
        dirty = store.dirty
        upserts: list[tuple[str, str, int, bytes]] = []
        deletes: list[tuple[str]] = []
        if dirty:
            for record_id in dirty:
                table = store.table_for_id(record_id)
                if table is None:
                    continue
                record = table.rows.get(record_id)
                deleted = record is None
                if deleted:
                    record = table.deleted.get(record_id)
                if record is None:
                    deletes.append((record_id,))
                else:
                    upserts.append((record_id, table.schema.name, int(deleted), orjson.dumps(record)))
            dirty.clear()
        conn = self.conn
        conn.execute("BEGIN")
        try:
            if upserts:
                # an upsert, not INSERT OR REPLACE: the rowid (creation order, used on load) is kept
                conn.executemany("INSERT INTO records (id, object, deleted, data) VALUES (?, ?, ?, ?) ON CONFLICT (id) "
                                 "DO UPDATE SET deleted = excluded.deleted, data = excluded.data", upserts)
            if deletes:
                conn.executemany("DELETE FROM records WHERE id = ?", deletes)
            counters = [("id", k, v) for k, v in state.ids.counters().items()]
            counters += [("auto", k, v) for k, v in state.org.auto_numbers().items()]
            conn.executemany("INSERT OR REPLACE INTO counters (kind, key, value) VALUES (?, ?, ?)", counters)
            budget = state.budget
            self.put_meta("budget", {"used": budget.used, "by_endpoint": dict(budget.by_endpoint),
                                     "bulk_batches": budget.bulk_batches,
                                     "bulk_query_jobs": budget.bulk_query_jobs})
            if bulk.dirty_jobs:
                self._flush_jobs(bulk.dirty_jobs, bulk.ingest_jobs, bulk.query_jobs)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _flush_jobs(self, dirty: set[str], ingest: dict[str, IngestJob], query: dict[str, QueryJob]) -> None:
        conn = self.conn
        for job_id in dirty:
            job = ingest.get(job_id)
            if job is not None:
                data = job.data if job.state == "Open" else None
                conn.execute(_UPSERT_JOB, (job_id, "ingest", orjson.dumps(job.snapshot()), data))
                for kind, attr in _RESULT_KINDS:
                    rows: list[list[str]] = getattr(job, attr)
                    done = job.persisted_rows.get(kind, 0)
                    if len(rows) > done:
                        conn.execute("INSERT OR REPLACE INTO job_rows (job, kind, seq, rows) VALUES (?, ?, ?, ?)",
                                     (job_id, kind, done, orjson.dumps(rows[done:])))
                        job.persisted_rows[kind] = len(rows)
                continue
            qjob = query.get(job_id)
            if qjob is not None:
                conn.execute(_UPSERT_JOB, (job_id, "query", orjson.dumps(qjob.snapshot()), None))
                continue
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            conn.execute("DELETE FROM job_rows WHERE job = ?", (job_id,))
        dirty.clear()

    def wipe(self) -> None:
        """`POST /__sandbox/reset`: forget everything (the caller re-seeds and flushes)."""
        self.conn.executescript("BEGIN; DELETE FROM records; DELETE FROM counters; DELETE FROM meta; "
                                "DELETE FROM jobs; DELETE FROM job_rows; COMMIT;")
