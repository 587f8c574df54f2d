"""What an end-to-end run's source JSON costs to decode alone: the floor under ferry's CPU in a run.

Run: .venv/bin/python bench/decode_floor.py [--orders 10000] [--repeat 3]

The store is the one bench/e2e.py serves (seed 7, harness.serve_shopify.store_sizes), cut into the pages
the Shopify sandbox sends (250 records, ``{"orders": [...]}``). Printed: the bytes, and the CPU seconds of
``orjson.loads`` of every page (best of --repeat, the cyclic collector frozen as in ``ferry run``), once
and twice (ferry decodes each record when it reads the page, and its staged copy again when it plans).
Compare with ferry's own CPU in bench/e2e.py's table for the same size and with the sandboxes' CPU: the
issue-5 target (ferry at most a third of the run's CPU) needs ferry below half the sandboxes' CPU.
"""

from __future__ import annotations

import argparse
import gc
import time

import orjson
from harness.serve_shopify import store_sizes

from ferry.sandbox.shopify.generator import generate_store

PAGE = 250


def pages_of(store_orders: int) -> list[bytes]:
    store = generate_store(seed=7, **store_sizes(store_orders))
    out: list[bytes] = []
    for name, records in (("customers", store.customers), ("products", store.products), ("orders", store.orders)):
        out.extend(orjson.dumps({name: records[i : i + PAGE]}) for i in range(0, len(records), PAGE))
    return out


def decode_seconds(pages: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for body in pages:
            orjson.loads(body)
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pages = pages_of(args.orders)
    gc.collect()
    gc.freeze()  # as ferry's runner does for what is alive when a run starts
    size = sum(map(len, pages))
    once = decode_seconds(pages, args.repeat)
    print(f"{args.orders:,} orders: {len(pages)} pages, {size / 1e6:.1f} MB of source JSON")
    print(f"orjson.loads of every page: {once:.2f} CPU s ({size / 1e6 / once:.0f} MB/s); "
          f"twice (read + plan, as ferry does): {2 * once:.2f} CPU s")


if __name__ == "__main__":
    main()
