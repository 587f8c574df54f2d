"""ferry's own CPU in an end-to-end run, per phase, for one or more source trees side by side.

Run: .venv/bin/python bench/ferry_cpu.py --orders 10000 --latency off --src /work/main/src --src src [--repeat 2]

Per --src (alternating when repeated): fresh sandboxes as in bench/e2e.py, `ferry run` of the example pipeline
with that tree first on PYTHONPATH and bench/harness/phase_hook (a sitecustomize that times the runner's phases:
read, prepare, plan, load, clear_staging; "rest" is start-up and exit), then one line: ferry's CPU (wait4), each
sandbox's CPU, ferry's share of the run's CPU, and the phases. The result is not reconciled here (bench/e2e.py
does that); the run's own exit status and per-object counts are checked.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from harness.contenders import PIPELINE
from harness.procs import both_sandboxes, contender_env, run_measured

HOOK = Path(__file__).resolve().parent / "harness" / "phase_hook"
SEED = 7


def run_once(src: str, orders: int, latency: str) -> str:
    with tempfile.TemporaryDirectory(prefix="ferry-cpu-") as tmp:
        work = Path(tmp)
        with both_sandboxes(work, orders, latency, SEED) as (shop, org):
            env = {**contender_env(shop, org), "FERRY_HOME": str(work / "home"), "FERRY_BENCH_TMP": tmp,
                   "PYTHONPATH": f"{Path(src).resolve()}:{HOOK}"}
            cmd = [sys.executable, "-m", "ferry", "run", str(PIPELINE), "--json"]
            m = run_measured(cmd, env, [shop, org], 3 * 3600.0)
    if m.returncode not in (0, 3, 4):  # ferry run's finished codes (docs/cli.md): 3, 4 = with dead letters
        raise RuntimeError(f"ferry run failed ({m.returncode}): {m.stderr}")
    stats = json.loads(m.stdout)
    written = sum(o["written"] for o in stats["objects"].values())
    phases = next((line[7:] for line in m.stderr.splitlines() if line.startswith("PHASES ")), "")
    sandboxes = sum(m.sandbox_cpu.values())
    share = m.cpu / (m.cpu + sandboxes)
    return (
        f"{src}: ferry CPU {m.cpu:.2f} s, shopify {m.sandbox_cpu['shopify']:.2f} s, salesforce "
        f"{m.sandbox_cpu['salesforce']:.2f} s, ferry's share {share:.0%}, wall {m.wall:.1f} s, "
        f"{written:,} written, status {stats['status']}\n    phases (CPU s): {phases}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=10000)
    ap.add_argument("--latency", default="off", choices=["off", "real"])
    ap.add_argument("--src", action="append", required=True, help="a source tree (its src/ directory); repeatable")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    for _ in range(args.repeat):
        for src in args.src:
            print(run_once(src, args.orders, args.latency), flush=True)


if __name__ == "__main__":
    main()
