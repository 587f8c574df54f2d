"""Instruction count of ferry's per-record path (valgrind callgrind): repeatable on a loaded machine.

Run: .venv/bin/python bench/hot_path_ir.py [--orders 2000] [--src DIR ...]

For each source tree (default: this checkout's ``src``), a child process with ``PYTHONPATH=<src>`` runs
under ``valgrind --tool=callgrind --instr-atstart=no``: it builds the hot_path.py workload uninstrumented,
then runs, each with instrumentation switched on around it (``callgrind_control``), the Bulk CSV path
once (loads -> normalize -> map -> validate -> CSV) and the floor once (loads + csv.writer of the same
rows), and reports the instructions (Ir) of each. The store is seeded and PYTHONHASHSEED fixed, so
repeated runs of the same code agree to ~0.1% whatever else the machine is doing.
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
import os, subprocess, sys
sys.path.insert(0, {bench!r})
import hot_path as h
w = h.workload({orders})
rows = h.target_rows(w)

def instrumented(fn):
    pid = str(os.getpid())
    for step in (["-z"], ["-i", "on"]):
        subprocess.run(["callgrind_control", *step, pid], check=True, capture_output=True)
    result = fn()
    for step in (["-i", "off"], ["-d"]):  # -d: a dump of this part alone (the counters were zeroed)
        subprocess.run(["callgrind_control", *step, pid], check=True, capture_output=True)
    return result

produced, _ = instrumented(lambda: h.ferry_path(w, h.bulk_csv))
instrumented(lambda: h.floor_path(w, rows))
print("records", produced)
"""


def counts(src: Path, orders: int) -> tuple[int, int, int]:
    """(Ir of the ferry Bulk path, Ir of the floor, target records)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        code = CHILD.format(bench=str(REPO / "bench"), orders=orders)
        env = dict(os.environ, PYTHONPATH=str(src), PYTHONHASHSEED="0")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, "-c", code],
            env=env, capture_output=True, text=True, check=True,
        )
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        irs = []
        for dump in dumps:  # one per instrumented() part, in order
            summary = re.search(r"^totals:\s+(\d+)", dump.read_text(), re.MULTILINE)
            assert summary, dump
            irs.append(int(summary.group(1)))
        records = re.search(r"^records (\d+)", proc.stdout, re.MULTILINE)
        assert len(irs) >= 2 and records, (proc.stdout, proc.stderr[-2000:])
        return irs[0], irs[1], int(records.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--src", type=Path, action="append", help="a ferry src directory (repeatable)")
    args = ap.parse_args()
    print(f"{'src':24}{'records':>9}{'ferry Bulk Ir':>16}{'Ir/record':>11}{'floor Ir':>15}{'Ir/record':>11}"
          f"{'x floor':>9}")
    for src in args.src or [REPO / "src"]:
        path, floor, records = counts(src, args.orders)
        print(f"{src!s:24}{records:9,}{path:16,}{path / records:11,.0f}{floor:15,}{floor / records:11,.0f}"
              f"{path / floor:9.2f}")


if __name__ == "__main__":
    main()
