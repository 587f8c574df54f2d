"""Serve the Shopify sandbox for a benchmark: the generated store plus the leaky bucket of a latency profile.

Run as ``python bench/harness/serve_shopify.py --orders N --latency real|off --state-dir DIR``; prints one
JSON line (url, token, CA file) like ``ferry sandbox serve --json`` and serves until terminated.

``real`` keeps Shopify's Standard-plan REST bucket (40 calls, leaking 2/s), so a client that pages
faster than that is throttled as it would be by a real store. ``off`` makes the bucket too large to
matter, so the figures show the code under test and not the limiter.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import sys
from pathlib import Path

from ferry.sandbox.serve import serve_forever
from ferry.sandbox.shopify import ShopifySandbox
from ferry.sandbox.tls import TlsFiles

BUCKETS = {"real": (40, 2.0), "off": (1_000_000, 1_000_000.0)}


def store_sizes(orders: int) -> dict[str, int]:
    """Customers and products for a store of ``orders`` orders (the demo's ratios: 1 : 2 : 10)."""
    return {"customers": max(10, orders // 2), "products": max(10, orders // 10), "orders": orders}


def _return_freed_memory() -> None:
    """Hand the generator's freed shard dicts back to the OS (glibc keeps freed heap otherwise), so the
    sandbox's RSS while serving is what it holds."""
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--latency", choices=sorted(BUCKETS), default="off")
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--shard-orders", type=int, default=0,
                    help="generate in shards of this many orders, records kept compressed (0: the ordinary store)")
    ap.add_argument("--spill", action="store_true", help="with --shard-orders: keep the records in a file")
    args = ap.parse_args()
    size, leak = BUCKETS[args.latency]
    args.state_dir.mkdir(parents=True, exist_ok=True)
    sandbox = ShopifySandbox(args.state_dir, seed=args.seed, bucket_size=size, leak_rate=leak,
                             shard_orders=args.shard_orders or None, spill=args.spill, **store_sizes(args.orders))
    _return_freed_memory()

    def announce(url: str, tls: TlsFiles) -> None:
        info = {"system": "shopify", **sandbox.credentials(url), "ca_file": str(tls.ca_file)}
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    serve_forever(sandbox.app, args.state_dir, 0, announce)


if __name__ == "__main__":
    main()
