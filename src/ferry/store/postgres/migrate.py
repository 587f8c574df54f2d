"""Numbered SQL migrations for the PostgreSQL state store, and the ``schema_version`` table that records them.

Why not alembic: alembic is built around SQLAlchemy (which ferry does not use) and takes no lock of its own, so
N workers starting on an empty database race each other (docs/store.md). This runner is small: the files
``migrations/NNNN_name.sql`` in number order, each applied in its own transaction together with its row in
``schema_version``, under a session advisory lock so that many workers starting at once apply each file once.
An applied file whose text changed, or a database at a version this ferry does not know, is refused.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from ferry.errors import StateError

# pg_advisory_lock key of the migration runner (any constant; "ferrymig" as 8 bytes).
MIGRATION_LOCK = int.from_bytes(b"ferrymig", "big") & 0x7FFF_FFFF_FFFF_FFFF
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migrations shipped with this ferry, in number order."""
    found = []
    for entry in resources.files("ferry.store.postgres").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StateError(f"migrations are not numbered 1..n: {[m.version for m in found]}")
    return found


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: int  # the newest version applied (0: an empty database)
    latest: int  # the newest version this ferry ships
    pending: list[int]
    problems: list[str]  # changed files, unknown versions: what makes the schema unusable

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.problems


def _applied(conn: psycopg.Connection) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return {int(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM schema_version")}


def schema_status(conn: psycopg.Connection) -> SchemaStatus:
    """Where the database's schema stands against this ferry's migrations (reads only)."""
    shipped = migrations()
    applied = _applied(conn)
    problems = [
        f"migration {m.version:04d}_{m.name}.sql was changed after it was applied (checksum differs)"
        for m in shipped
        if m.version in applied and applied[m.version] != m.checksum
    ]
    known = {m.version for m in shipped}
    problems += [
        f"the database is at schema version {v}, which this ferry does not know (a newer ferry migrated it)"
        for v in sorted(set(applied) - known)
    ]
    return SchemaStatus(
        current=max(applied, default=0),
        latest=max(known, default=0),
        pending=[m.version for m in shipped if m.version not in applied],
        problems=problems,
    )


def migrate(conninfo: str) -> list[int]:
    """Apply every pending migration; returns the versions applied now. Safe to run from many processes at once:
    the advisory lock serialises them, and each sees what the others applied."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(_SCHEMA_VERSION)
            status = schema_status(conn)
            if status.problems:
                raise StateError("; ".join(status.problems))
            applied_now = []
            for m in migrations():
                if m.version not in status.pending:
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode())  # several statements: simple query protocol, no parameters
                    conn.execute(
                        "INSERT INTO schema_version (version, name, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
                applied_now.append(m.version)
            return applied_now
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
