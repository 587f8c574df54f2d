"""Instruction count of ferry's per-record path (valgrind callgrind): repeatable on a loaded machine.

Run: .venv/bin/python bench/hot_path_ir.py [--orders 2000] [--src DIR ...]

For each source tree (default: this checkout's ``src``), two runs under ``valgrind --tool=callgrind``
in a child process with ``PYTHONPATH=<src>``: one builds the hot_path.py workload only, the other builds
it and runs the Bulk CSV path (loads -> normalize -> map -> validate -> CSV) once. The difference is the
path's instruction count (Ir); divided by the target records it gives instructions per record.
Both runs are deterministic (seeded store, PYTHONHASHSEED=0), so the difference does not drift with load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import sys
sys.path.insert(0, {bench!r})
import hot_path as h
w = h.workload({orders})
if {run}:
    produced, _ = h.ferry_path(w, h.bulk_csv)
    print("records", produced)
"""


def instructions(src: Path, orders: int, run: bool) -> tuple[int, int]:
    """(Ir of the whole child process, target records produced or 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        code = CHILD.format(bench=str(REPO / "bench"), orders=orders, run=run)
        env = dict(os.environ, PYTHONPATH=str(src), PYTHONHASHSEED="0")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", code],
            env=env, capture_output=True, text=True, check=True,
        )
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        assert summary, "no summary line in the callgrind output"
        records = re.search(r"^records (\d+)", proc.stdout, re.MULTILINE)
        return int(summary.group(1)), int(records.group(1)) if records else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--src", type=Path, action="append", help="a ferry src directory (repeatable)")
    args = ap.parse_args()
    for src in args.src or [REPO / "src"]:
        setup, _ = instructions(src, args.orders, run=False)
        total, records = instructions(src, args.orders, run=True)
        path = total - setup
        print(f"{src!s:40} {args.orders:,} orders, {records:,} records: path {path / 1e6:,.1f} M Ir, "
              f"{path / records:,.0f} Ir/record")


if __name__ == "__main__":
    main()
