"""The PostgreSQL state store (distributed mode): ``PostgresStore`` and its migrations. See docs/store.md."""

from ferry.store.postgres.migrate import SchemaStatus, migrate, schema_status
from ferry.store.postgres.store import OutboxClaim, PostgresStore, StagedClaim, StateUnavailable

__all__ = [
    "OutboxClaim",
    "PostgresStore",
    "SchemaStatus",
    "StagedClaim",
    "StateUnavailable",
    "migrate",
    "schema_status",
]
