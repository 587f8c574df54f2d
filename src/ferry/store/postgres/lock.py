"""One run per pipeline across every machine sharing a PostgreSQL state: a session advisory lock.

The file lock of ``ferry.store.lease`` guards one machine; with the state in PostgreSQL two machines could run
one pipeline at once. The lock is held by a connection of its own for the whole run: when the process ends,
however it ends, its connection closes and the server drops the lock (TCP keepalives notice a machine that
vanished), so, as with the file lock, a `running` row whose lock is free belongs to a process that is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket

import psycopg

from ferry.errors import PipelineBusy
from ferry.store.url import mask_url

# Advisory locks' two-key form: (this class, hashtext(pipeline)); the migration runner uses the one-key form.
PIPELINE_LOCKS = 0x46525931  # "FRY1"


def _session(conninfo: str, holder: str) -> psycopg.Connection:
    """A session of a lock's own, named after its holder (pid and host: seen in pg_stat_activity)."""
    me = f"{holder}: pid {os.getpid()} on {socket.gethostname()}"
    return psycopg.connect(
        conninfo,
        autocommit=True,
        application_name=me[:63],
        connect_timeout=10,
        # A machine that vanished (no FIN sent) is noticed in ~25 s and its lock dropped.
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )


def _unavailable(conninfo: str, exc: psycopg.OperationalError) -> Exception:
    from ferry.store.postgres.store import StateUnavailable

    return StateUnavailable(f"{mask_url(conninfo)}: {mask_url(str(exc).strip())}")


class AdvisoryPipelineLock:
    """``with AdvisoryPipelineLock(url, "shop"):``; a second holder, on any machine, gets ``PipelineBusy``."""

    def __init__(self, conninfo: str, pipeline: str) -> None:
        self.conninfo = conninfo
        self.pipeline = pipeline
        self._conn: psycopg.Connection | None = None

    def acquire(self) -> None:
        try:
            conn = _session(self.conninfo, f"ferry run {self.pipeline}")
        except psycopg.OperationalError as exc:
            raise _unavailable(self.conninfo, exc) from None
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (PIPELINE_LOCKS, self.pipeline)
        ).fetchone()
        if not row or not row[0]:
            owner = holder(conn, self.pipeline) or "another process"
            conn.close()
            raise PipelineBusy(f"pipeline {self.pipeline} is being run by {owner}; wait for it to finish (or stop it)")
        self._conn = conn

    def keep(self) -> None:
        """Make sure the lock is still held: a server restart ends the session and with it the lock, while the
        run goes on. Taken again on a new session; ``PipelineBusy`` if another run took it meanwhile, and
        ``StateUnavailable`` while the server is still away (retry)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.execute("SELECT 1")
                return
            except psycopg.Error:
                pass  # the session is gone, and its lock with it
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self._conn = None
        self.acquire()

    def release(self) -> None:
        if self._conn is not None:
            # Unlocked before the session ends, so the next holder can take it at once (a closed session's locks
            # go when its backend exits, a moment later); a session already broken has lost them anyway.
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (PIPELINE_LOCKS, self.pipeline))
            self._conn.close()
            self._conn = None

    def __enter__(self) -> AdvisoryPipelineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(conn: psycopg.Connection, pipeline: str) -> str | None:
    """Who holds the pipeline's lock (its application_name: pid and host), or None when nobody does."""
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
        "AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 2",
        (PIPELINE_LOCKS, pipeline),
    ).fetchone()
    return str(row[0]) if row else None


# A worker's hold on one piece of work that must not run twice at once (a stream's read, an object's remote-job
# load): (this class, hashtext(name)). Its session names the holder (application_name), so an operator, or the
# chaos harness, can see which process holds which work (``work_holders``).
WORK_LOCKS = 0x46525932  # "FRY2"


class AdvisoryWorkLock:
    """``try_acquire()`` then ``release()``; held by a session of its own, dropped by the server when the holder's
    process dies however it dies (the next worker then takes the work over from its durable state)."""

    def __init__(self, conninfo: str, name: str, label: str) -> None:
        self.conninfo = conninfo
        self.name = name
        self.label = label  # what the holder does, e.g. "read orders": shown with its pid in pg_stat_activity
        self._conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free (False: another live session holds it); ``StateUnavailable`` if unreachable."""
        try:
            conn = _session(self.conninfo, f"ferry worker {self.label}")
            row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (WORK_LOCKS, self.name)).fetchone()
        except psycopg.OperationalError as exc:
            raise _unavailable(self.conninfo, exc) from None
        if not row or not row[0]:
            conn.close()
            return False
        self._conn = conn
        return True

    def held(self) -> bool:
        """Whether the session (and with it the lock) is still there: a server restart ends both."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (WORK_LOCKS, self.name))
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def work_holders(conn: psycopg.Connection) -> list[str]:
    """The application names of the sessions holding work locks ("ferry worker read orders: pid 123 on host")."""
    rows = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objsubid = 2",
        (WORK_LOCKS,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def work_held(conn: psycopg.Connection, name: str) -> bool:
    """Whether a live session holds the work lock ``name`` (``AdvisoryWorkLock``: two int keys, so objsubid 2)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::oid "
        "AND objid = hashtext(%s)::oid AND objsubid = 2)",
        (WORK_LOCKS, name),
    ).fetchone()
    return bool(row and row[0])
