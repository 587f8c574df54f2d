"""Claims for events (``ferry serve`` in distributed mode): workers plan and send the staged events their bus items
name, by (stream, key, version), and no two workers hold the same staged record or outbox row at once.

The staged record is the event's durable copy until every target row it mapped to is written or dead-lettered:
a worker claims it (a lease, ``FOR UPDATE SKIP LOCKED``), plans it into the outbox, sends the outbox rows of the
keys it planned (claimed by key, so a child never goes out before the parent of its own batch), and only then
deletes it (``finish_events``). A worker killed anywhere in between leaves the record staged: its lease runs out
and the redelivered item (or the serve process's sweep) has it planned and sent again, idempotently (the outbox
keeps the newest version per key, the version map moves forward only, writes are upserts by external id).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg

from ferry.core.ports import NewDeadLetter, OutboxRow, PlannedRow

if TYPE_CHECKING:
    from ferry.store.postgres.store import OutboxClaim, StagedClaim

EVENT_RUN_ID = 0  # what deliveries and change feeds stage with (no run read them)

# ferry.core.bus.key_partition in SQL: the first 32 bits of the key's MD5, modulo the partitions.
PARTITION_SQL = "((('x' || substr(md5(s.key), 1, 8))::bit(32)::bigint) %% %(of)s)"

# (stream, key, version): what an event item names of a staged record.
EventRef = tuple[str, str, str]


class EventClaims:
    """Mixed into ``PostgresStore``."""

    if TYPE_CHECKING:
        owner: str

        def _tx(self) -> AbstractContextManager[psycopg.Cursor[Any]]: ...
        def _conn(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...
        @staticmethod
        def _put_outbox(c: psycopg.Cursor[Any], pipeline: str, obj: str, rows: Sequence[PlannedRow]) -> None: ...
        @staticmethod
        def _dead_letter(
            c: psycopg.Cursor[Any], pipeline: str, run_id: int | None, letters: Sequence[NewDeadLetter]
        ) -> None: ...
        def outbox_rows(
            self, pipeline: str, obj: str, keys: Sequence[str], *, with_source: bool = True
        ) -> list[OutboxRow]: ...

    def claim_events(
        self, pipeline: str, refs: Sequence[EventRef], lease_seconds: float, owner: str | None = None, *,
        partitions: Collection[int] = (), of: int = 0, limit: int = 2000,
    ) -> StagedClaim:
        """Claim the staged records ``refs`` names, and every staged event whose key falls in ``partitions`` (of
        ``of``; ``ferry.core.bus.key_partition``), that no live lease holds, oldest first, at most ``limit``.
        Planned or not: a record stays staged until its rows are sent, so a redelivered item plans it again.
        Records gone (done) or held by another worker right now are left out.

        The partitions' backlog: the worker holding a partition's item is the only one taking that partition's
        items (the bus keeps one unacknowledged per partition), so it takes the events later items of the
        partition name as well, in one micro-batch, instead of one item after the other; those items then find
        their records gone."""
        from ferry.core.ports import StagedRecord
        from ferry.store.postgres.store import StagedClaim

        me = owner or self.owner
        if not refs and not partitions:
            return StagedClaim(me, [], {})
        with self._tx() as c:
            rows = c.execute(
                "WITH named AS (SELECT s.seq FROM staging s JOIN unnest(%(st)s::text[], %(k)s::text[], "
                "%(v)s::text[]) AS r(st, k, v) ON s.stream = r.st AND s.key = r.k AND s.version = r.v "
                "WHERE s.pipeline = %(p)s), "
                "backlog AS (SELECT s.seq FROM staging s WHERE s.pipeline = %(p)s AND s.run_id = %(ev)s "
                f"AND {PARTITION_SQL} = ANY(%(parts)s)), "
                "picked AS (SELECT s.seq FROM staging s WHERE s.seq IN (SELECT seq FROM named UNION "
                "SELECT seq FROM backlog) AND (s.lease_until IS NULL OR s.lease_until < now()) "
                "ORDER BY s.seq LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
                "UPDATE staging s SET owner = %(me)s, fence = s.fence + 1, "
                "lease_until = now() + make_interval(secs => %(lease)s) FROM picked WHERE s.seq = picked.seq "
                "RETURNING s.seq, s.fence, s.stream, s.key, s.version, s.payload",
                {"p": pipeline, "st": [r[0] for r in refs], "k": [r[1] for r in refs], "v": [r[2] for r in refs],
                 "ev": EVENT_RUN_ID, "parts": list(partitions), "of": max(1, of), "n": limit, "me": me,
                 "lease": lease_seconds},
                binary=True,
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        records = [StagedRecord(int(r[0]), r[2], r[3], r[4], bytes(r[5])) for r in rows]
        return StagedClaim(me, records, {int(r[0]): int(r[1]) for r in rows})

    def queue_planned(
        self, pipeline: str, run_id: int | None, planned: Mapping[str, Sequence[PlannedRow]],
        letters: Sequence[NewDeadLetter],
    ) -> None:
        """Planned events' outbox rows (per object) and dead letters in one transaction; no planning mark moves
        (events are planned by claim, not by staging order)."""
        with self._tx() as c:
            for obj in sorted(planned):  # one order for every writer: two workers wait, never deadlock
                self._put_outbox(c, pipeline, obj, planned[obj])
            self._dead_letter(c, pipeline, run_id, letters)

    def claim_outbox_keys(
        self, pipeline: str, obj: str, keys: Sequence[str], lease_seconds: float, owner: str | None = None
    ) -> OutboxClaim:
        """Claim the queued rows of ``obj`` among ``keys`` that no live lease holds."""
        from ferry.store.postgres.store import OutboxClaim

        me = owner or self.owner
        with self._tx() as c:
            claimed = c.execute(
                "WITH picked AS (SELECT key FROM outbox WHERE pipeline = %(p)s AND object = %(o)s "
                "AND key = ANY(%(keys)s) AND (lease_until IS NULL OR lease_until < now()) "
                "ORDER BY key FOR UPDATE SKIP LOCKED) "
                "UPDATE outbox o SET owner = %(me)s, fence = o.fence + 1, "
                "lease_until = now() + make_interval(secs => %(lease)s) FROM picked "
                "WHERE o.pipeline = %(p)s AND o.object = %(o)s AND o.key = picked.key RETURNING o.key, o.fence",
                {"p": pipeline, "o": obj, "keys": list(keys), "me": me, "lease": lease_seconds},
            ).fetchall()
        fences = {r[0]: int(r[1]) for r in claimed}
        rows = self.outbox_rows(pipeline, obj, sorted(fences), with_source=False) if fences else []
        rows.sort(key=lambda r: r.key)
        return OutboxClaim(me, rows, fences)

    def queued_keys(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, bool]:
        """Which of ``keys`` still have a queued row of ``obj``: key -> whether a live lease holds it."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key, COALESCE(lease_until >= now(), false) FROM outbox "
                "WHERE pipeline = %s AND object = %s AND key = ANY(%s)",
                (pipeline, obj, list(keys)),
            ).fetchall()
        return {r[0]: bool(r[1]) for r in rows}

    def finish_events(self, pipeline: str, claim: StagedClaim) -> int:
        """Delete the claimed records no queued outbox row still points at (every row they mapped to is written,
        dead-lettered or superseded); release the others. Only while the claim holds (same owner and fence).
        Returns how many were deleted."""
        seqs = list(claim.fences)
        if not seqs:
            return 0
        fences = [claim.fences[s] for s in seqs]
        with self._tx() as c:
            c.execute(
                "DELETE FROM staging s USING unnest(%s::bigint[], %s::bigint[]) AS f(seq, fence) "
                "WHERE s.seq = f.seq AND s.fence = f.fence AND s.owner = %s AND NOT EXISTS "
                "(SELECT 1 FROM outbox o WHERE o.pipeline = %s AND o.source_seq = s.seq)",
                (seqs, fences, claim.owner, pipeline),
            )
            deleted = max(c.rowcount, 0)
            c.execute(
                "UPDATE staging s SET owner = NULL, lease_until = NULL FROM unnest(%s::bigint[], %s::bigint[]) "
                "AS f(seq, fence) WHERE s.seq = f.seq AND s.fence = f.fence AND s.owner = %s",
                (seqs, fences, claim.owner),
            )
        return deleted

    def unclaimed_events(self, pipeline: str, after_seq: int, up_to_seq: int, limit: int = 5000) -> list[
        tuple[int, EventRef]
    ]:
        """Staged events (not a batch run's pages) with ``after_seq < seq <= up_to_seq`` that no live lease
        holds, in seq order: what a serve process hands (again) to the bus."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT seq, stream, key, version FROM staging WHERE pipeline = %s AND run_id = %s "
                "AND seq > %s AND seq <= %s AND (lease_until IS NULL OR lease_until < now()) ORDER BY seq LIMIT %s",
                (pipeline, EVENT_RUN_ID, after_seq, up_to_seq, limit),
            ).fetchall()
        return [(int(r[0]), (r[1], r[2], r[3])) for r in rows]
