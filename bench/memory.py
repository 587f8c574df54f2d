"""Memory of a backfill: ferry's peak RSS at several store sizes (the target: flat from 100,000 to 1,000,000).

Run: .venv/bin/python bench/memory.py [--orders 10000,30000,100000] [--trace]

Each size: fresh sandboxes (latency off), one `ferry run` of the example pipeline, its peak RSS
(kernel accounting, wait4) and an RSS timeline; the result is reconciled like bench/e2e.py's. The
target is the largest size's peak within 20% of the smallest's (nothing proportional to the run held).
`--trace` runs ferry under tracemalloc instead and prints what holds memory at the peak (slow: use a
small size such as 10000).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import reconcile
from harness.contenders import PIPELINE
from harness.procs import contender_env, run_measured, start_salesforce, start_shopify
from harness.serve_shopify import store_sizes

from ferry.sandbox.shopify.generator import generate_store

HERE = Path(__file__).resolve().parent


def run(orders: int, trace: bool) -> tuple[float, float, str, list[tuple[float, int]], str]:
    with tempfile.TemporaryDirectory(prefix="ferry-mem-") as tmp:
        work = Path(tmp)
        shop = start_shopify(work / "shopify", orders, "off", 7)
        org = start_salesforce(work / "salesforce", "off", 7)
        try:
            env = {**contender_env(shop, org), "FERRY_HOME": str(work / "home"), "FERRY_BENCH_TMP": tmp}
            cmd = [sys.executable, str(HERE / "harness" / "trace_ferry.py"), str(PIPELINE)] if trace else \
                [sys.executable, "-m", "ferry", "run", str(PIPELINE), "--json"]
            m = run_measured(cmd, env, [shop, org], 3 * 3600)
            records = {obj: org.admin(f"records/{obj}") for obj in reconcile.OBJECTS}
        finally:
            org.stop()
            shop.stop()
    if m.returncode != 0:
        raise RuntimeError(m.stderr)
    store = generate_store(seed=7, **store_sizes(orders))
    check = reconcile.reconcile(reconcile.derive(store.customers, store.products, store.orders), records)
    return m.peak_rss / 2**20, m.wall, check.summary(), m.rss_samples, m.stderr if trace else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", default="10000,30000,100000")
    ap.add_argument("--trace", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.orders.split(",")]
    peaks = {}
    for n in sizes:
        peak, wall, result, samples, traced = run(n, args.trace)
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
