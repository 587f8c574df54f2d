"""`make bench`: the standard set, then this issue's section of bench/RESULTS.md rewritten.

Run: .venv/bin/python bench/run_all.py [--sizes 10000,100000] [--memory 10000,30000,100000] [--compose-only]

1. bench/hot_path.py (micro-benchmark against the orjson + CSV floor);
2. bench/e2e.py for every size, both latency profiles, all three contenders;
3. bench/memory.py (ferry's peak RSS at the smallest and largest --memory size).
Each part's output is kept in bench/results/; --compose-only rewrites RESULTS.md from what is there
(e.g. after running parts by hand). Every other section of RESULTS.md is left as it is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from harness.results_md import machine, write_section
from harness.table import Row, render

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
E2E_JSON = HERE / "e2e-results.json"


def run_part(name: str, args: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args]
    print("$", " ".join(["python", f"bench/{name}.py", *args]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-3000:])
    if done.returncode != 0:
        sys.exit(f"bench/{name}.py failed")
    (OUT / f"{name}.txt").write_text(f"$ python bench/{name}.py {' '.join(args)}\n{done.stdout}")
    print(done.stdout)


def verdicts(rows: list[Row]) -> list[str]:
    """The issue's end-to-end targets, per size, from the rows with real latency."""
    out = []
    by = {(r.contender, r.orders, r.latency): r for r in rows}
    for orders in sorted({r.orders for r in rows}):
        ferry = by.get(("ferry", orders, "real"))
        if ferry is None:
            continue
        per_record, bulk2 = by.get(("script_per_record", orders, "real")), by.get(("script_bulk2", orders, "real"))
        line = [f"{orders:,} orders, latency real:"]
        if per_record:
            x = per_record.wall / ferry.wall
            line.append(f"ferry {x:.1f}x faster than (b){' (scaled)' if per_record.scaled_from else ''} "
                        f"(target 20x: {'met' if x >= 20 else 'MISSED'})")
        if bulk2:
            x = bulk2.wall / ferry.wall
            calls, theirs = ferry.shopify_calls + ferry.salesforce_calls, bulk2.shopify_calls + bulk2.salesforce_calls
            line.append(f"{x:.1f}x faster than (c){' (scaled)' if bulk2.scaled_from else ''} "
                        f"(target 2x: {'met' if x >= 2 else 'MISSED'})")
            line.append(f"API calls {calls:,} vs {theirs:,} (target fewer: {'met' if calls < theirs else 'MISSED'})")
        line.append(f"ferry's own share of the run's CPU {ferry.cpu_share:.0%} "
                    f"(target <= 33%: {'met' if ferry.cpu_share <= 1 / 3 else 'MISSED'})")
        out.append(" ".join(line[:1]) + " " + "; ".join(line[1:]) + ".")
    return out


def compose(notes: Path | None) -> str:
    rows = [Row(**r) for r in __import__("json").loads(E2E_JSON.read_text())] if E2E_JSON.exists() else []
    parts = ["## Fast and lean: throughput, memory, end-to-end against users' scripts (issue 5)", "",
             f"Machine: {machine()}.", "",
             "Regenerate everything with `make bench` (= `.venv/bin/python bench/run_all.py`); each part can be run "
             "alone with the command shown above its output.", ""]
    if rows:
        parts += ["### End to end", "", "Command: `.venv/bin/python bench/e2e.py --orders 10000,100000 "
                  "--latency real,off --scaled script_per_record=1000,script_bulk2=10000` (rows are merged into "
                  "bench/e2e-results.json).", "",
                  render(rows), "", *[f"- {v}" for v in verdicts(rows)], ""]
    for name, title in (("hot_path", "Per-record path (one core)"), ("memory", "Memory of a backfill")):
        path = OUT / f"{name}.txt"
        if path.exists():
            parts += [f"### {title}", "", "```", path.read_text().rstrip(), "```", ""]
    if notes is not None and notes.exists():
        parts += [notes.read_text().rstrip(), ""]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    # 300,000 orders would need ~10 GiB for ferry and 3.6 GiB for the Shopify sandbox (see RESULTS.md).
    ap.add_argument("--memory", default="10000,30000,100000")
    ap.add_argument("--compose-only", action="store_true")
    ap.add_argument("--notes", type=Path, default=HERE / "results" / "notes.md",
                    help="hand-written analysis appended to the section")
    args = ap.parse_args()
    if not args.compose_only:
        run_part("hot_path", ["--orders", "20000", "--repeat", "5"])
        run_part("e2e", ["--orders", args.sizes, "--latency", "real,off",
                         "--scaled", "script_per_record=1000,script_bulk2=10000"])
        run_part("memory", ["--orders", args.memory])
    write_section(HERE / "RESULTS.md", compose(args.notes))
    print("bench/RESULTS.md: issue-5 section rewritten")


if __name__ == "__main__":
    main()
