"""PostgreSQL's work for a distributed run's load, without the sandboxes: the statements a coordinator and its
workers send the state store, at several outbox sizes, and the server's CPU for them. Its own server (free
port, temp dir); the store code is whichever ferry is on PYTHONPATH, so two trees compare on one machine:

    PYTHONPATH=src .venv/bin/python bench/pg_polls.py [--rows 43000,130000] [--in-flight 16]

The outbox is filled as the coordinator plans (chunks of three objects' rows, interleaved on the pages), then
``analyze_outbox``; then every object is drained in its order as workers do (claim a batch of 200 by key, answer
it: the rows leave), with ``in-flight`` batches leased at once, and between two batches one poll of the
coordinator (``outbox_count`` and ``outbox_leased`` of the object: bench/distributed.py makes ~0.85 polls per
batch). Per size: the server's CPU, and the mean milliseconds of each call as the client saw it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # tests.store.postgres_server; ferry itself comes from PYTHONPATH

from tests.store.postgres_server import start_server  # noqa: E402

from ferry.core.ports import PlannedRow, Written  # noqa: E402
from ferry.store.postgres import PostgresStore, migrate  # noqa: E402

# The demo pipeline's outbox after planning 10,000 orders: 43,165 rows (Account, Contact, Product2 and
# PricebookEntry are small; Order and OrderItem most of it).
SHARES = {"Account": 0.05, "Contact": 0.11, "Order": 0.23, "OrderItem": 0.61}
PAYLOAD = {"Quantity": 2, "UnitPrice": 19.5, "Description": "x" * 220, "Order": {"Shopify_Id__c": "1"}}
BATCH = 200
CHUNK = 2000


def fill(store: PostgresStore, rows: int) -> dict[str, int]:
    sizes = {o: int(rows * s) for o, s in SHARES.items()}
    done = dict.fromkeys(sizes, 0)
    while any(done[o] < n for o, n in sizes.items()):
        planned = {}
        for obj, n in sizes.items():
            take = min(n - done[obj], max(1, int(CHUNK * SHARES[obj])))
            planned[obj] = [PlannedRow(f"{obj}-{i:09}", "2026-12-06T00:00:00Z", PAYLOAD, source=i + 1)
                            for i in range(done[obj], done[obj] + take)]
            done[obj] += take
        store.commit_planned("p", None, planned, [], ("planned", sum(done.values())))
    return sizes


def drain(store: PostgresStore, obj: str, in_flight: int, took: dict[str, list[float]]) -> None:
    def timed(name: str, call, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = call(*args, **kwargs)
        took[name].append(time.perf_counter() - t0)
        return out

    batches = [[r.key for r in rows] for rows in store.outbox("p", obj, chunk=BATCH, with_source=False)]
    held: deque = deque()
    for keys in batches:
        held.append(timed("claim_outbox", store.claim_outbox, "p", obj, BATCH, 600, keys=keys))
        if len(held) >= in_flight:
            claim = held.popleft()
            timed("record_results", store.record_results, "p", obj, None,
                  [Written(r.key, r.version, f"id-{r.key}") for r in claim.rows], [],
                  [(r.key, r.version) for r in claim.rows])
        timed("outbox_count", store.outbox_count, "p", obj)
        timed("outbox_leased", store.outbox_leased, "p", obj)
    while held:
        claim = held.popleft()
        store.record_results("p", obj, None, [Written(r.key, r.version, f"id-{r.key}") for r in claim.rows], [],
                             [(r.key, r.version) for r in claim.rows])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="43000,130000")
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    import ferry

    print(f"ferry from {Path(ferry.__file__).parents[1]}; batch {BATCH}, {args.in_flight} batches in flight")
    pg = start_server()
    try:
        for rows in [int(r) for r in args.rows.split(",")]:
            url = pg.fresh_database()
            migrate(url)
            store = PostgresStore(url, max_size=8)
            sizes = fill(store, rows)
            cpu0, t0 = pg.cpu_seconds(), time.perf_counter()
            store.analyze_outbox()
            took: dict[str, list[float]] = defaultdict(list)
            for obj in sizes:
                drain(store, obj, args.in_flight, took)
            cpu, wall = pg.cpu_seconds() - cpu0, time.perf_counter() - t0
            assert store.outbox_count("p") == 0
            means = "  ".join(f"{name} {1000 * sum(v) / len(v):6.2f} ms x{len(v)}" for name, v in sorted(took.items()))
            print(f"{sum(sizes.values()):>8} rows  pg CPU {cpu:6.1f} s  wall {wall:6.1f} s  {means}  "
                  f"load avg {os.getloadavg()[0]:.1f}", flush=True)
            store.close()
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
