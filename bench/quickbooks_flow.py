"""Shopify -> QuickBooks Online: ``ferry run examples/shopify-to-quickbooks.yml`` vs a python-quickbooks script.

Same run for both: a Shopify sandbox generated from the same seed and sizes, and a new, empty QuickBooks
company (its chart of accounts only) each, with Intuit's throttles on (10 requests a second, 500 a minute per
company: what a real company allows). The contender is ``contenders/shop_to_qbo.py``: python-quickbooks as
its docs show it, one ``save()`` call per object. Both are child processes with the same environment (the
example pipeline's variables). Reported per contender: wall seconds, records in the books (Customers, Items,
Invoices), records a second, QuickBooks calls by endpoint (what the company counted), Shopify calls, and the
duplicates per lookup field (must be 0).

(Not bench/quickbooks.py: that name would shadow python-quickbooks for the contender.)
Usage: PYTHONPATH=src python bench/quickbooks_flow.py [--customers 100 --products 30 --orders 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from ferry.cli.demo import FLOWS
from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.sandbox.shopify import ShopifySandbox

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "examples" / "shopify-to-quickbooks.yml"
SCRIPT = REPO / "bench" / "contenders" / "shop_to_qbo.py"
LOOKUP = {"Customer": "DisplayName", "Item": "Name", "Invoice": "DocNumber"}


def run_one(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    shop = ShopifySandbox(tmp / "shop", seed=args.seed, customers=args.customers, products=args.products,
                          orders=args.orders)
    books = QuickBooksSandbox(tmp / "books", seed=args.seed, customers=0, products=0, orders=0)
    shop_run, books_run = start_in_thread(shop.app, tmp / "shop"), books.start(tmp / "books")
    try:
        shop_info = {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)}
        books_info = {**books.credentials(books_run.url), "ca_file": str(books_run.ca_file),
                      "token_file": str(tmp / "qbo.token")}
        env = {**os.environ, **FLOWS["shopify-to-quickbooks"].env(shop_info, books_info),
               "FERRY_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO / "src")}
        command = ([sys.executable, "-m", "ferry", "run", str(PIPELINE), "--json"] if name == "ferry"
                   else [sys.executable, str(SCRIPT)])
        started = time.monotonic()
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, check=False)
        seconds = time.monotonic() - started
        if proc.returncode not in (0, 3, 4):  # ferry's finished codes (4: finished with dead letters)
            raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        verify = ssl.create_default_context(cafile=str(books_run.ca_file))
        held: dict[str, int] = {}
        duplicates: dict[str, int] = {}
        with httpx.Client(verify=verify, timeout=60) as client:
            for entity, field in LOOKUP.items():
                rows = client.get(f"{books_run.url}/__sandbox/records/{entity}").json()
                held[entity] = len(rows)
                counts = Counter(str(r.get(field)).lower() for r in rows)
                duplicates[entity] = sum(c - 1 for c in counts.values() if c > 1)
        written = sum(held.values())
        return {
            "contender": name,
            "seconds": round(seconds, 1),
            "records_in_books": held,
            "records_per_second": round(written / seconds, 1),
            "quickbooks_calls": books.state.stats.api_calls,
            "quickbooks_calls_by_endpoint": dict(sorted(books.state.stats.by_endpoint.items())),
            "quickbooks_429": books.state.limits.describe().get("throttled", None),
            "calls_per_record": round(books.state.stats.api_calls / max(written, 1), 3),
            "shopify_calls": int(shop.stats.api_calls),
            "duplicates": duplicates,
        }
    finally:
        books_run.stop()
        shop_run.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--products", type=int, default=30)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--only", choices=["ferry", "python-quickbooks"], default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for name in ("ferry", "python-quickbooks"):
        if args.only and args.only != name:
            continue
        with tempfile.TemporaryDirectory(prefix=f"qbo-bench-{name}-") as tmp:
            results.append(run_one(name, args, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{'contender':<18} {'seconds':>8} {'records':>8} {'rec/s':>7} {'QBO calls':>10} {'calls/rec':>10} "
          f"{'duplicates':>10}")
    for r in results:
        print(f"{r['contender']:<18} {r['seconds']:>8} {sum(r['records_in_books'].values()):>8} "
              f"{r['records_per_second']:>7} {r['quickbooks_calls']:>10} {r['calls_per_record']:>10} "
              f"{sum(r['duplicates'].values()):>10}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
