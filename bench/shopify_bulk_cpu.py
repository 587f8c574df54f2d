"""The Shopify sandbox's own CPU per bulk operation: the lean executor vs graphql-core, same store, same queries.

Run: .venv/bin/python bench/shopify_bulk_cpu.py --orders 2000 [--rounds 2] [--shard-orders N]
     [--without-refunds] [--executors lean]

In one process, no HTTP: a generated store (orders/2 customers, orders/10 products), then ferry's bulk query
of each stream run to completion at the pace 0 (as fast as the CPU allows), alternately with every page
through graphql-core's executor and through ``graphql/lean.py``. Prints per run the process CPU seconds, the
objects written and a digest of the result file: the two executors must write the same bytes.
``--without-refunds``: the orders query in the shape ferry reads for a pipeline that maps no refund (the
example pipeline's, ``ferry demo``'s); ``--executors lean``: the lean executor alone (what a bulk run uses).
With ``--shard-orders`` the store is the compact one (records decoded when read), spilled to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import tempfile
import time
from pathlib import Path

from ferry.connectors.shopify import gql_shape
from ferry.connectors.shopify.gql_reader import bulk_query
from ferry.sandbox.shopify import ShopifySandbox


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-orders", type=int, default=0)
    ap.add_argument("--without-refunds", action="store_true", help="orders as read when no refund is mapped")
    ap.add_argument("--executors", default="graphql-core,lean", help="graphql-core,lean | lean | graphql-core")
    args = ap.parse_args()
    executors = [name == "lean" for name in args.executors.split(",")]
    with tempfile.TemporaryDirectory(prefix="ferry-bulk-cpu-") as tmp:
        shard = {"shard_orders": args.shard_orders, "spill": True} if args.shard_orders else {}
        sandbox = ShopifySandbox(Path(tmp), seed=7, customers=args.orders // 2, products=args.orders // 10,
                                 orders=args.orders, **shard)
        bulk = sandbox.graphql.bulk
        bulk.settings.seconds_per_object = 0.0
        for stream in ("orders", "customers", "products"):
            for _ in range(args.rounds):
                for lean in executors:
                    bulk.settings.lean = lean
                    cpu = time.process_time()
                    node = gql_shape.ORDER_WITHOUT_REFUNDS if stream == "orders" and args.without_refunds else None
                    view, errors = bulk.run_query("bench", bulk_query(stream, None, node=node), group_objects=True,
                                                  base_url="https://bench")
                    assert view is not None, errors
                    op = bulk.ops[int(view["id"].rsplit("/", 1)[1])]
                    assert op.task is not None
                    await op.task
                    digest = hashlib.sha1((bulk.directory / f"{op.key}.jsonl").read_bytes()).hexdigest()[:12]
                    print(json.dumps({"stream": stream, "executor": "lean" if lean else "graphql-core",
                                      "status": op.status, "objects": op.object_count,
                                      "cpu_s": round(time.process_time() - cpu, 2), "file_sha1": digest}),
                          flush=True)


if __name__ == "__main__":
    asyncio.run(main())
