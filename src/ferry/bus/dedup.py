"""Ferry's own record of processed message ids: dedup past the bus's window (``DedupStore`` implementations).

JetStream forgets a ``Nats-Msg-Id`` after the stream's duplicate window, and after a server restart it forgets the
ids of acked work-queue items at once (their messages are gone, and the window is rebuilt from stored messages).
These stores keep the ids ferry processed for ``retain`` seconds. The PostgreSQL state store backs the same port in
distributed mode; ``SqliteDedup`` serves one machine and the tests, ``MemoryDedup`` one process.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection
from pathlib import Path

DEFAULT_RETAIN = 7 * 86400.0  # a week: longer than any publisher retry or replay of a run's work items


class MemoryDedup:
    """In one process only (tests, a single worker): ids with the time they were recorded."""

    def __init__(self, retain: float = DEFAULT_RETAIN) -> None:
        self.retain = retain
        self._ids: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def seen(self, msg_ids: Collection[str]) -> set[str]:
        cutoff = time.time() - self.retain
        with self._lock:
            return {i for i in msg_ids if self._ids.get(i, -1.0) >= cutoff}

    def remember(self, msg_ids: Collection[str]) -> None:
        now = time.time()
        with self._lock:
            self._ids.update(dict.fromkeys(msg_ids, now))


class SqliteDedup:
    """Ids in an SQLite file (WAL), shared by the processes of one machine; old ids pruned as new ones come."""

    def __init__(self, path: Path | str, retain: float = DEFAULT_RETAIN) -> None:
        self.retain = retain
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: a commit survives a process crash (SIGKILL), and only an OS crash can lose the last few;
        # FULL would fsync every remember() and cap a worker at a few hundred items/s (bench/bus.py).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS bus_dedup (msg_id TEXT PRIMARY KEY, done_at REAL NOT NULL) WITHOUT ROWID"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS bus_dedup_done_at ON bus_dedup (done_at)")
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def seen(self, msg_ids: Collection[str]) -> set[str]:
        ids = list(msg_ids)
        if not ids:
            return set()
        cutoff = time.time() - self.retain
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT msg_id FROM bus_dedup WHERE done_at >= ? AND msg_id IN ({marks})", [cutoff, *part]
                )
                found.update(r[0] for r in rows)
        return found

    def remember(self, msg_ids: Collection[str]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO bus_dedup (msg_id, done_at) VALUES (?, ?) "
                    "ON CONFLICT (msg_id) DO UPDATE SET done_at = excluded.done_at",
                    [(i, now) for i in msg_ids],
                )
                if now >= self._next_prune:  # pruning is a range scan: once a minute, not per item
                    self._db.execute("DELETE FROM bus_dedup WHERE done_at < ?", (now - self.retain,))
                    self._next_prune = now + 60
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()
