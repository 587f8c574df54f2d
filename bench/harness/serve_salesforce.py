"""Serve the Salesforce sandbox for a benchmark with a latency profile.

Run as ``python bench/harness/serve_salesforce.py --latency real|off --state-dir DIR``; prints one JSON
line like ``ferry sandbox serve salesforce --json``. (That command accepts ``--latency`` but, in this
revision, does not pass it on to the sandbox, so the benchmark builds the sandbox itself.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ferry.cli.serve import serve_sandbox


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--latency", choices=("real", "off"), default="off")
    ap.add_argument("--state-dir", type=Path, required=True)
    args = ap.parse_args()
    serve_sandbox("salesforce", port=0, seed=args.seed, customers=0, products=0, orders=0, state_dir=args.state_dir,
                  as_json=True, console=Console(stderr=True), latency=args.latency)


if __name__ == "__main__":
    main()
