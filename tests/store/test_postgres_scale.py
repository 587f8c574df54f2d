"""What a distributed run's coordinator asks the PostgreSQL store on every poll (five times a second per object
being loaded) must not read the whole outbox: a count whose cost grows with the queue, asked for as long as the
queue takes to drain, made the server's CPU grow with the square of the run (8.9 s at 10,000 orders, 159 s at
100,000). Checked on an outbox of a realistic size and shape: three objects' rows planned in chunks, interleaved
on the pages as a run plans them, one batch of one object claimed by a worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ferry.core.ports import PlannedRow
from ferry.store.postgres import PostgresStore
from ferry.store.postgres.store import _OUTBOX_COUNT, _OUTBOX_LEASED

# Shares of the demo pipeline's objects in the outbox after planning (10,000 orders: ~43,000 rows).
_OBJECTS = {"Contact": 4_000, "Order": 8_000, "OrderItem": 20_000}
_CHUNK = 2_000  # a planned chunk's rows of each object (runner._PLAN_CHUNK)
_CLAIMED = 400  # one batch in flight


@pytest.fixture
def planned_store(pg_url: str, tmp_path: Any) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_url, lock_dir=tmp_path)
    # A mapped Salesforce payload of ~300 bytes, as the demo's OrderItem rows are.
    payload = {"Quantity": 2, "UnitPrice": 19.5, "Description": "x" * 220, "Order": {"Shopify_Id__c": "1"}}
    offsets = dict.fromkeys(_OBJECTS, 0)
    while any(offsets[o] < n for o, n in _OBJECTS.items()):
        planned = {}
        for obj, total in _OBJECTS.items():
            take = min(total - offsets[obj], _CHUNK * total // max(_OBJECTS.values()))
            planned[obj] = [PlannedRow(f"{obj}-{i:08}", "2026-12-06T00:00:00Z", payload, source=i + 1)
                            for i in range(offsets[obj], offsets[obj] + take)]
            offsets[obj] += take
        store.commit_planned("p", None, planned, [], ("planned", sum(offsets.values())))
    store.analyze_outbox()  # what the coordinator does once it has planned, before publishing
    claim = store.claim_outbox("p", "OrderItem", _CLAIMED, lease_seconds=600,
                               keys=[f"OrderItem-{i:08}" for i in range(_CLAIMED)])
    assert len(claim.rows) == _CLAIMED
    yield store
    store.close()


def _plan(store: PostgresStore, sql: str, args: tuple[Any, ...]) -> str:
    with store._conn() as conn:
        return "\n".join(r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", args).fetchall())


def _pages(store: PostgresStore) -> int:
    with store._conn() as conn:
        row = conn.execute("SELECT pg_relation_size('outbox') / current_setting('block_size')::int").fetchone()
    assert row is not None
    return int(row[0])


def test_counting_leased_rows_reads_the_rows_in_flight_not_the_queue(planned_store: PostgresStore) -> None:
    assert planned_store.outbox_leased("p", "OrderItem") == _CLAIMED
    assert planned_store.outbox_leased("p", "Order") == 0
    plan = _plan(planned_store, _OUTBOX_LEASED, ("p", "OrderItem"))
    assert "Seq Scan on outbox" not in plan, plan
    assert "outbox_leased" in plan, plan  # the partial index of leased rows (migration 0005)
    # The pages it touches are those of the 400 leased rows (and the index's), a few percent of the outbox.
    touched = sum(int(part.split("=")[1]) for line in plan.splitlines() if "Buffers: shared" in line
                  for part in line.split() if part.startswith(("hit=", "read=")) and "Planning" not in line)
    assert touched < _pages(planned_store) // 10, (touched, _pages(planned_store), plan)


def test_counting_an_objects_queue_reads_its_index_entries_not_every_row(planned_store: PostgresStore) -> None:
    assert planned_store.outbox_count("p", "OrderItem") == _OBJECTS["OrderItem"]
    assert planned_store.outbox_count("p") == sum(_OBJECTS.values())
    plan = _plan(planned_store, _OUTBOX_COUNT + " AND object = %s", ("p", "Contact"))
    # An index-only scan of the primary key's (pipeline, object) range: the pages analyze_outbox's VACUUM marked
    # all-visible are not read at all; a sequential scan read every object's rows and payloads.
    assert "Seq Scan on outbox" not in plan, plan
    assert "Index Only Scan using outbox_pkey" in plan, plan
