"""Dead-letter replay vs the run that produced the letters, in records a second, on the demo's store.

Run: .venv/bin/python bench/replay_rate.py [--repeat N]
Starts a Shopify sandbox (the demo's store: seed 7, 1,000 customers, 200 products, 2,000 orders) and two
Salesforce sandboxes as `ferry sandbox serve` children, then times real `ferry` processes:

1. a clean run of the example pipeline into an empty org (what a run writes a second);
2. a run (`--force`: `ferry plan` sees the mistake) of the same pipeline with a broken Account mapping
   (``NumberOfEmployees: {template: "n{key}"}``,
   text into an int): every Account is dead-lettered, and with it every Contact, Order and OrderItem;
3. ``ferry dlq replay`` with the mapping fixed: every letter read again from Shopify and written.

Wall times include each process's start-up; figures vary with what else the machine runs. The CPU seconds
(the `ferry` process, and the sandboxes serving it, from /proc) vary much less with the machine's load: on a
busy machine they are the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ferry.cli.demo import demo_env, example_pipeline_path
from ferry.cli.sandboxes import start_sandbox

STORE = ["--seed", "7", "--customers", "1000", "--products", "200", "--orders", "2000"]


def _pipelines(work: Path) -> tuple[Path, Path]:
    spec = yaml.safe_load(example_pipeline_path().read_text())
    spec["name"] = "replay-rate"
    fixed = work / "fixed.yml"
    fixed.write_text(yaml.safe_dump(spec, sort_keys=False))
    account = next(o for o in spec["objects"] if o["name"] == "Account")
    account["fields"]["NumberOfEmployees"] = {"template": "n{key}"}  # text into an int: every Account fails
    broken = work / "broken.yml"
    broken.write_text(yaml.safe_dump(spec, sort_keys=False))
    return fixed, broken


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Cpu:
    """CPU seconds spent by `ferry` child processes and by the sandboxes between two readings."""

    def __init__(self, sandboxes: list[Any]) -> None:
        self.pids = [s.process.pid for s in sandboxes]
        self.last = self._now()

    def _now(self) -> tuple[float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return children.ru_utime + children.ru_stime, sum(_cpu_of(pid) for pid in self.pids)

    def lap(self) -> tuple[float, float]:
        now = self._now()
        spent = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now
        return spent


def _ferry(env: dict[str, str], *args: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ferry", *args, "--json"], env=env, capture_output=True, text=True,
                          check=False)
    took = time.monotonic() - started
    if proc.returncode not in (0, 3, 4):  # 3, 4: a run that dead-lettered more / less than its share
        raise SystemExit(f"ferry {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return took, json.loads(proc.stdout)


def measure(work: Path) -> dict[str, float]:
    shop = start_sandbox("shopify", work / "sandbox", STORE)
    org = start_sandbox("salesforce", work / "sandbox", ["--seed", "7"])
    clean_org = start_sandbox("salesforce", work / "sandbox-clean", ["--seed", "7"])
    try:
        fixed, broken = _pipelines(work)
        base = {**os.environ, "FERRY_HOME": str(work / "home")}
        clean_env = {**base, **demo_env(shop.info, clean_org.info), "FERRY_HOME": str(work / "home-clean")}
        env = {**base, **demo_env(shop.info, org.info)}
        cpu = _Cpu([shop, org, clean_org])
        took, clean = _ferry(clean_env, "run", str(fixed))
        written = sum(o["written"] for o in clean["objects"].values())
        (mine, served) = cpu.lap()
        print(f"clean run:  {written:,} records written in {took:.1f} s = {written / took:,.0f} records/s; "
              f"CPU {mine:.2f} s ferry + {served:.2f} s sandboxes = {1000 * (mine + served) / written:.3f} ms a record")
        took, run = _ferry(env, "run", str(broken), "--force")  # `ferry plan` sees the broken mapping
        cpu.lap()
        read = sum(o["read"] for o in run["objects"].values())
        dead = sum(o["dead_lettered"] for o in run["objects"].values())
        print(f"broken run: {read:,} records read, {dead:,} dead-lettered in {took:.1f} s = "
              f"{read / took:,.0f} records/s")
        took, replay = _ferry(env, "dlq", "replay", str(fixed))
        letters, replayed = len(replay["outcomes"]), replay["counts"].get("replayed", 0)
        (mine_r, served_r) = cpu.lap()
        print(f"replay:     {letters:,} letters, {replayed:,} written in {took:.1f} s = "
              f"{letters / took:,.0f} letters/s ({replayed / took:,.0f} records written/s); {replay['counts']}; "
              f"CPU {mine_r:.2f} s ferry + {served_r:.2f} s sandboxes = "
              f"{1000 * (mine_r + served_r) / replayed:.3f} ms a record written")
        return {"clean": written / took, "replay": replayed / took}
    finally:
        for sandbox in (shop, org, clean_org):
            sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="ferry-replay-rate-") as tmp:
            measure(Path(tmp))


if __name__ == "__main__":
    main()
