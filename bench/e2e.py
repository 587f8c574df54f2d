"""End-to-end benchmark: ferry against the scripts users write today, on the same sandboxes and data.

Run: .venv/bin/python bench/e2e.py --orders 10000 --latency real [--contenders ferry,script_bulk2] [--sample 1000]

Per (size, latency, contender): a fresh Shopify sandbox holding a generated store of N orders (N/2
customers, N/10 products, their variants and line items) and a fresh, empty Salesforce org, both child
processes on 127.0.0.1 over HTTPS; the contender runs as a third process. Measured: wall time, CPU of
each process, API calls from each sandbox's admin stats, the contender's peak RSS. Then every valid
source record is looked for in the org (bench/harness/reconcile.py): a fast wrong answer does not count.

`--latency real`: the Salesforce sandbox's real latency profile and Shopify's Standard REST bucket
(40 calls, 2/s). `--latency off`: neither. The per-record script is run on a sample (--sample orders,
1,000 by default) and scaled linearly, since running it in full would take hours; such rows say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

from harness import reconcile
from harness.contenders import CONTENDERS, Contender
from harness.procs import both_sandboxes, contender_env, run_measured
from harness.serve_shopify import store_sizes
from harness.table import Row, render

from ferry.sandbox.shopify.generator import generate_store

SEED = 7
TIMEOUT = 3 * 3600.0
SHOPIFY_API = ["graphql"]  # the API ferry's pipeline reads Shopify through (--shopify-api)
_expected: dict[int, reconcile.Expected] = {}


def expected_for(orders: int) -> reconcile.Expected:
    """What the org must hold for a store of ``orders`` orders (the generator is deterministic per seed)."""
    if orders not in _expected:
        store = generate_store(seed=SEED, **store_sizes(orders))
        _expected[orders] = reconcile.derive(store.customers, store.products, store.orders)
        del store
        gc.collect()
    return _expected[orders]


def valid_records(orders: int) -> int:
    exp = expected_for(orders)
    return sum(len(exp.valid(o)) for o in reconcile.OBJECTS)


def parse_scaled(text: str, default: int) -> dict[str, int]:
    """``script_per_record=1000,script_bulk2`` -> {contender: sample orders} (``default`` when not given)."""
    out = {}
    for item in filter(None, text.split(",")):
        name, _, size = item.partition("=")
        out[name] = int(size) if size else default
    return out


def ferry_calls(report: str) -> str:
    """API calls per object from ``ferry run --json``'s report, as the sandboxes' totals do not split them."""
    stats = json.loads(report)
    objects = ", ".join(f"{name} {o['api_calls']} ({o['strategy']})" for name, o in stats["objects"].items())
    phases = ", ".join(f"{k} {v:.1f}" for k, v in (stats.get("wall_seconds") or {}).items())
    return (f"Shopify {stats['source_api_calls']}; Salesforce set-up {stats['setup_api_calls']}, {objects}"
            + (f"\n  wall s per phase: {phases}" if phases else ""))


def needs_sample(contender: str, orders: int, sampled: dict[str, int]) -> bool:
    """The per-record script makes one call per record (~4.7 calls an order): 40 minutes for 10,000 orders
    even with latency off on this machine, hours with real latency; it runs on the sample and is scaled."""
    return contender in sampled and orders > sampled[contender]


def run_one(contender: Contender, orders: int, latency: str) -> Row:
    exp = expected_for(orders)
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        work = Path(tmp)
        with both_sandboxes(work, orders, latency, SEED) as (shop, org):
            shop_calls0 = shop.admin("stats")["api_calls"]
            org_calls0 = org.admin("stats")["api_calls"]
            env = {**contender_env(shop, org), "FERRY_HOME": str(work / "home"), "FERRY_BENCH_TMP": tmp,
                   "SHOPIFY_API": SHOPIFY_API[0]}
            m = run_measured(contender.command(), env, [shop, org], TIMEOUT)
            # ferry run's finished codes (docs/cli.md): 3 and 4 = finished with dead letters; the scripts exit 0
            if m.returncode not in ((0, 3, 4) if contender.name == "ferry" else (0,)):
                raise RuntimeError(f"{contender.name} failed ({m.returncode}): {m.stderr}")
            shop_calls = shop.admin("stats")["api_calls"] - shop_calls0
            org_calls = org.admin("stats")["api_calls"] - org_calls0
            records = {obj: org.admin(f"records/{obj}") for obj in reconcile.OBJECTS}
    if contender.name == "ferry":
        print(f"  ferry {orders:,} orders latency {latency}: {ferry_calls(m.stdout)}", flush=True)
    check = reconcile.reconcile(exp, records)
    if not check.correct:
        for name, c in check.objects.items():
            if c.examples:
                print(f"  {contender.name} {name}: {c.examples}", file=sys.stderr)
    return Row(contender.name, orders, latency, m.wall, m.cpu, m.sandbox_cpu["shopify"], m.sandbox_cpu["salesforce"],
               shop_calls, org_calls, m.peak_rss / 2**20, check.valid_records, check.summary())


def run_case(name: str, orders: int, latency: str, sampled: dict[str, int],
             saved: dict[tuple[str, int, str], Row]) -> list[Row]:
    """The measured row, or the sample's row (reused when already saved) and the row scaled from it."""
    contender = CONTENDERS[name]
    if not needs_sample(name, orders, sampled):
        return [run_one(contender, orders, latency)]
    sample = sampled[name]
    measured = saved.get((name, sample, latency))
    rows = []
    if measured is None or measured.scaled_from:
        measured = run_one(contender, sample, latency)
        rows.append(measured)
    full = valid_records(orders)
    scaled = measured.scaled(full / measured.records, orders, full, per_record_calls=name == "script_per_record")
    return [*rows, scaled]


def load_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    return [Row(**r) for r in json.loads(path.read_text())]


def save_rows(path: Path, new: list[Row]) -> list[Row]:
    """Merge ``new`` into the saved rows (one per contender, size and latency)."""
    keep = {(r.contender, r.orders, r.latency): r for r in load_rows(path)}
    for r in new:
        keep[(r.contender, r.orders, r.latency)] = r
    rows = sorted(keep.values(), key=lambda r: (r.orders, r.latency != "real", list(CONTENDERS).index(r.contender)))
    path.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", default="10000", help="comma-separated store sizes in orders")
    ap.add_argument("--latency", default="real", help="comma-separated: real, off")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--sample", type=int, default=1000, help="orders run when a contender is scaled")
    ap.add_argument("--scaled", default="script_per_record",
                    help="comma-separated contenders run on a sample and scaled linearly: name or name=orders "
                         "(default sample: --sample). The bulk2 script holds the whole store through ShopifyAPI, "
                         "~3.3 GiB per 10,000 orders: give script_bulk2=10000 for 100,000-order runs")
    ap.add_argument("--save", type=Path, default=Path(__file__).with_name("e2e-results.json"),
                    help="JSON file the rows are merged into (the table prints every saved row)")
    ap.add_argument("--shopify-api", choices=("graphql", "rest"), default="graphql",
                    help="the Shopify API ferry reads through (the scripts always use REST)")
    args = ap.parse_args()
    SHOPIFY_API[0] = args.shopify_api
    new: list[Row] = []
    for orders in (int(x) for x in args.orders.split(",")):
        for latency in args.latency.split(","):
            for name in args.contenders.split(","):
                t0 = time.monotonic()
                saved = {(r.contender, r.orders, r.latency): r for r in load_rows(args.save)}
                rows = run_case(name, orders, latency, parse_scaled(args.scaled, args.sample), saved)
                for row in rows:
                    print(f"{name} {row.orders:,} orders latency {latency}: {row.wall:,.1f} s, {row.result} "
                          f"(took {time.monotonic() - t0:,.0f} s)", file=sys.stderr, flush=True)
                new += rows
                save_rows(args.save, new)
    print(render(load_rows(args.save)))


if __name__ == "__main__":
    main()
