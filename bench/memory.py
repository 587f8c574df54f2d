"""Memory of a backfill: ferry's peak RSS at several store sizes (the target: flat from 100,000 to 1,000,000).

Run: .venv/bin/python bench/memory.py [--orders 10000,30000,100000] [--trace]

Each size: fresh sandboxes (latency off), one `ferry run` of the example pipeline, its peak RSS
(kernel accounting, wait4) and an RSS timeline; the result is reconciled like bench/e2e.py's. The
target is the largest size's peak within 20% of the smallest's (nothing proportional to the run held).
`--trace` runs ferry under tracemalloc instead and prints what holds memory at the peak (slow: use a
small size such as 10000).

1,000,000 orders: .venv/bin/python bench/memory.py --orders 1000000 --shard-orders 100000 --spill
`--shard-orders N` has the Shopify sandbox generate the store in shards of N orders and keep it compressed
(`--spill`: in a file), see docs/sandbox/shopify.md; a store of at most N orders is the ordinary one. The check
is then streamed: the org's rows go to SQLite on disk (and the Salesforce sandbox is stopped), and each shard's
source records, read back from the Shopify sandbox, are derived and reconciled against only their own rows;
rows no shard claims count as extra. The bench process holds one shard at a time. The run is stopped if the
machine's available memory falls under 3 GiB or the free disk under 12 GiB (ferry's store needs ~60 GB at 1M).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
from harness import reconcile
from harness.contenders import PIPELINE
from harness.procs import Sandbox, contender_env, run_measured, start_salesforce, start_shopify
from harness.serve_shopify import store_sizes

from ferry.sandbox.shopify.generator import generate_store, shard_sizes

HERE = Path(__file__).resolve().parent
PAGE = 20_000  # source records per admin read while reconciling shard by shard


def run(orders: int, trace: bool, shard_orders: int, spill: bool
        ) -> tuple[float, float, str, list[tuple[float, int]], str]:
    with tempfile.TemporaryDirectory(prefix="ferry-mem-") as tmp:
        work = Path(tmp)
        shop = start_shopify(work / "shopify", orders, "off", 7, shard_orders, spill)
        org = start_salesforce(work / "salesforce", "off", 7)
        guard = MemoryGuard([shop, org], work)
        try:
            env = {**contender_env(shop, org), "FERRY_HOME": str(work / "home"), "FERRY_BENCH_TMP": tmp}
            cmd = [sys.executable, str(HERE / "harness" / "trace_ferry.py"), str(PIPELINE)] if trace else \
                [sys.executable, "-m", "ferry", "run", str(PIPELINE), "--json"]
            m = run_measured(cmd, env, [shop, org], 3 * 3600)
            if m.returncode not in (0, 3, 4):  # ferry run's finished codes (docs/cli.md): 3, 4 = with dead letters
                raise RuntimeError(guard.why() or m.stderr)
            print("           sandbox peak RSS (MiB): "
                  + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in m.sandbox_peak_rss.items())
                  + f"; machine available memory at least {guard.low / 2**30:.1f} GiB", flush=True)
            state = [work / "home" / name for name in ("ferry.db", "ferry.db-wal")]
            print(f"           ferry state DB on disk after the run: "
                  f"{sum(p.stat().st_size for p in state if p.exists()) / 2**30:.2f} GiB", flush=True)
            if shard_orders:
                check = streamed_check(work, shop, org, orders, shard_orders)
            else:
                records = {obj: org.admin(f"records/{obj}") for obj in reconcile.OBJECTS}
        finally:
            guard.stop()
            org.stop()
            shop.stop()
    if not shard_orders:
        store = generate_store(seed=7, **store_sizes(orders))
        check = reconcile.reconcile(reconcile.derive(store.customers, store.products, store.orders), records)
    return m.peak_rss / 2**20, m.wall, check.summary(), m.rss_samples, m.stderr if trace else ""


def streamed_check(work: Path, shop: Sandbox, org: Sandbox, orders: int, shard_orders: int
                   ) -> reconcile.Reconciliation:
    """Reconcile in bounded memory: the org's rows streamed to SQLite on disk (then the org is stopped), the
    source read back from the Shopify sandbox one generator shard at a time."""
    started = time.monotonic()
    dump = reconcile.TargetDump(work / "target.db")
    with org.client() as c:
        for obj in reconcile.OBJECTS:
            with c.stream("GET", f"{org.url}/__sandbox/records/{obj}", params={"ndjson": "true"}) as resp:
                resp.raise_for_status()
                dump.load(obj, (line.encode() for line in resp.iter_lines()))
    dump.index()
    org.stop()
    print(f"           target rows streamed to disk in {time.monotonic() - started:.0f} s", flush=True)
    sizes = shard_sizes(**store_sizes(orders), shard_orders=shard_orders)
    check = reconcile.reconcile_shards(dump, source_shards(shop, sizes))
    print(f"           reconciled {len(sizes)} shard(s) in {time.monotonic() - started:.0f} s", flush=True)
    return check


def source_shards(shop: Sandbox, sizes: list[tuple[int, int, int]]) -> Iterator[tuple[list[Any], ...]]:
    """The raw records of each shard, by position (the compact store keeps shards in order, ids ascending)."""
    pos = [0, 0, 0]
    with shop.client() as c:
        for size in sizes:
            shard = []
            for k, (resource, n) in enumerate(zip(("customers", "products", "orders"), size, strict=True)):
                recs: list[Any] = []
                for start in range(pos[k], pos[k] + n, PAGE):
                    resp = c.get(f"{shop.url}/__sandbox/records/{resource}",
                                 params={"offset": start, "limit": min(PAGE, pos[k] + n - start)})
                    resp.raise_for_status()
                    recs += orjson.loads(resp.content)
                shard.append(recs)
                pos[k] += n
            yield tuple(shard)


class MemoryGuard:
    """Stops the sandboxes (so the run fails) when the machine's available memory drops under FLOOR, or the free
    disk under the run's directory under DISK_FLOOR (ferry's store takes ~60 KB a order: ~60 GB at 1,000,000)."""

    FLOOR = 3 * 2**30
    DISK_FLOOR = 12 * 2**30

    def __init__(self, sandboxes: list[Sandbox], work: Path) -> None:
        self.low = psutil.virtual_memory().available
        self.disk_low = shutil.disk_usage(work).free
        self._work = work
        self.tripped = False
        self._sandboxes = sandboxes
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.low = min(self.low, psutil.virtual_memory().available)
            self.disk_low = min(self.disk_low, shutil.disk_usage(self._work).free)
            if self.low < self.FLOOR or self.disk_low < self.DISK_FLOOR:
                self.tripped = True
                for s in self._sandboxes:
                    s.stop()
                return

    def why(self) -> str:
        if not self.tripped:
            return ""
        return (f"aborted: machine available memory {self.low / 2**30:.1f} GiB, free disk "
                f"{self.disk_low / 2**30:.1f} GiB (floors {self.FLOOR / 2**30:.0f} and {self.DISK_FLOOR / 2**30:.0f})")

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", default="10000,30000,100000")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--shard-orders", type=int, default=0,
                    help="Shopify store generated in shards of N orders, kept compressed; reconcile streamed "
                         "shard by shard (0: the ordinary store, reconciled in memory)")
    ap.add_argument("--spill", action="store_true", help="with --shard-orders: the sandbox keeps records on disk")
    args = ap.parse_args()
    sizes = [int(x) for x in args.orders.split(",")]
    peaks = {}
    for n in sizes:
        peak, wall, result, samples, traced = run(n, args.trace, args.shard_orders, args.spill)
        peaks[n] = peak
        step = max(1, len(samples) // 12)
        timeline = ", ".join(f"{t:.0f}s {rss / 2**20:.0f}" for t, rss in samples[::step])
        print(f"{n:>9,} orders: ferry peak RSS {peak:8.1f} MiB, wall {wall:7.1f} s, result {result}")
        print(f"           RSS timeline (MiB): {timeline}")
        if traced:
            print(traced)
    if len(sizes) > 1:
        lo, hi = peaks[sizes[0]], peaks[sizes[-1]]
        verdict = "met" if hi <= 1.2 * lo else "MISSED"
        print(f"peak at {sizes[-1]:,} / peak at {sizes[0]:,} = {hi / lo:.2f} (target <= 1.20: {verdict})")


if __name__ == "__main__":
    main()
