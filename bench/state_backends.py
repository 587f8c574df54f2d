"""The same `ferry run` with its state in SQLite (embedded) and in PostgreSQL, on the same data.

Run: .venv/bin/python bench/state_backends.py --orders 10000 --latency off [--latency real]

Per backend: a fresh Shopify sandbox holding the generated store of N orders and a fresh, empty org (child
processes over HTTPS, as bench/e2e.py), then `ferry run examples/shopify-to-salesforce.yml --json` with
FERRY_STATE_URL=sqlite:///... or postgresql://... (a PostgreSQL the bench starts itself: initdb into a temp dir,
fsync and synchronous_commit at their durable defaults). Measured: wall time, ferry's CPU, the PostgreSQL
server's CPU, and the org reconciled against the source (a fast wrong answer does not count).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import reconcile
from harness.procs import both_sandboxes, contender_env, run_measured
from harness.serve_shopify import store_sizes

from ferry.sandbox.shopify.generator import generate_store

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.store.postgres_server import PostgresServer, start_server  # noqa: E402

SEED = 7
EXAMPLE = REPO / "examples" / "shopify-to-salesforce.yml"


def run_backend(backend: str, orders: int, latency: str, pg: PostgresServer, exp: reconcile.Expected) -> str:
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        work = Path(tmp)
        if backend == "postgres":
            url = pg.fresh_database()
            from ferry.store.postgres import migrate

            migrate(url)
        else:
            url = f"sqlite:///{work / 'state.db'}"
        with both_sandboxes(work, orders, latency, SEED) as (shop, org):
            env = {**contender_env(shop, org), "FERRY_HOME": str(work / "home"), "FERRY_BENCH_TMP": tmp,
                   "FERRY_STATE_URL": url}
            pg_cpu0 = pg.cpu_seconds()
            m = run_measured([sys.executable, "-m", "ferry", "run", str(EXAMPLE), "--json"], env, [shop, org], 3600)
            pg_cpu = pg.cpu_seconds() - pg_cpu0 if backend == "postgres" else 0.0
            if m.returncode not in (0, 3, 4):
                raise RuntimeError(f"{backend}: ferry run failed ({m.returncode}): {m.stderr[-2000:]}")
            records = {obj: org.admin(f"records/{obj}") for obj in reconcile.OBJECTS}
    check = reconcile.reconcile(exp, records)
    return (f"| {backend} | {orders:,} | {latency} | {m.wall:.1f} | {m.cpu:.1f} | "
            f"{pg_cpu:.1f} | {m.peak_rss / 2**20:.0f} | {'yes' if check.correct else 'NO'} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--latency", default="off", choices=["off", "real"])
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument(
        "--synchronous-commit",
        default="on",
        choices=["on", "off"],
        help="the server's synchronous_commit: off is SQLite's synchronous=NORMAL guarantee (a process crash loses "
        "nothing committed, an OS crash may lose the last commits)",
    )
    args = ap.parse_args()
    store = generate_store(seed=SEED, **store_sizes(args.orders))
    exp = reconcile.derive(store.customers, store.products, store.orders)
    pg = start_server(durable=True, settings={"synchronous_commit": args.synchronous_commit})
    try:
        print(f"synchronous_commit={args.synchronous_commit}")
        print("| state | orders | latency | wall s | ferry CPU s | PostgreSQL CPU s | ferry RSS MiB | org correct |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for backend in args.backends.split(","):
            print(run_backend(backend, args.orders, args.latency, pg, exp), flush=True)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
