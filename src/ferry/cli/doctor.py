"""`ferry doctor` and `ferry migrate`: is the configured state (and, later, the bus) usable, and what to fix.

Each check is a function returning a ``Check``; ``CHECKS`` is the list `ferry doctor` runs, in order. The bus
check (``FERRY_BUS_URL``, JetStream on) is ``check_bus``, over ``ferry.bus.check``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from ferry.errors import FerryError
from ferry.store.url import STATE_URL_ENV, StateUrl, mask_url


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # what was checked: "state", "state schema", "bus"...
    ok: bool
    detail: str  # what was found (never a secret)
    fix: str = ""  # what to do when not ok

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _state_url() -> StateUrl | Check:
    from ferry.store.factory import configured_state_url

    try:
        return configured_state_url()
    except FerryError as exc:
        return Check("state", False, str(exc), f"set {STATE_URL_ENV} to sqlite:///path or postgresql://host/db")


def check_state() -> list[Check]:
    """The configured state store: reachable, and its schema what this ferry needs."""
    url = _state_url()
    if isinstance(url, Check):
        return [url]
    if url.kind == "sqlite":
        return [_check_sqlite(url)]
    return _check_postgres(url)


def _check_sqlite(url: StateUrl) -> Check:
    from ferry.store.sqlite import Store

    try:
        Store(url.path).close()  # type: ignore[arg-type]  # a sqlite URL always has its path
    except FerryError as exc:
        return Check("state", False, str(exc), "fix FERRY_HOME / FERRY_STATE_URL, or move the file away")
    return Check("state", True, f"SQLite {url.path} (embedded mode)")


def _check_postgres(url: StateUrl) -> list[Check]:
    import psycopg

    from ferry.store.postgres import schema_status

    try:
        with psycopg.connect(url.url, connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            status = schema_status(conn)
    except psycopg.Error as exc:
        reason = mask_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return [
            Check(
                "state",
                False,
                f"{url.safe}: cannot connect: {reason}",
                "start PostgreSQL (README, 'Scale out'), or check the host, port, user and database in "
                f"{STATE_URL_ENV}",
            )
        ]
    reached = Check("state", True, f"PostgreSQL {version[0] if version else '?'} at {url.safe}")
    if status.problems:
        return [reached, Check("state schema", False, "; ".join(status.problems), "use the ferry that migrated it")]
    if status.pending:
        return [
            reached,
            Check(
                "state schema",
                False,
                f"at version {status.current}, this ferry needs {status.latest}",
                "run `ferry migrate`",
            ),
        ]
    return [reached, Check("state schema", True, f"version {status.current} (current)")]


# What `ferry doctor` checks, in order. The bus package appends its check here (FERRY_BUS_URL: reachable,
# JetStream on, streams present).
def check_bus() -> list[Check]:
    """The work bus (``FERRY_BUS_URL``): reachable, JetStream on, ferry's streams present; unset is embedded mode."""
    from ferry.bus.check import check_configured_bus

    return [Check(**c.as_dict()) for c in check_configured_bus()]  # type: ignore[arg-type]


CHECKS: list[Callable[[], list[Check]]] = [check_state, check_bus]


def run_checks() -> list[Check]:
    return [c for check in CHECKS for c in check()]


def migrate_state() -> tuple[StateUrl, list[int]]:
    """Apply the pending migrations of the configured PostgreSQL state (SQLite migrates itself on open)."""
    from ferry.store.factory import configured_state_url

    url = configured_state_url()
    if url.kind != "postgresql":
        return url, []
    import psycopg

    from ferry.store.postgres import StateUnavailable, migrate

    try:
        return url, migrate(url.url)
    except psycopg.Error as exc:
        reason = mask_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise StateUnavailable(f"{url.safe}: {reason}") from None
