"""Run `ferry run PIPELINE` in this process under tracemalloc; report the peak and what holds it.

Used by bench/memory.py --trace as ``python bench/harness/trace_ferry.py PIPELINE``. A watcher thread
snapshots the traced heap each time it grows by 5%; the largest snapshot's top allocation sites (with
the runner phase they happened in) go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import tracemalloc
from typing import Any

import ferry.engine.runner as runner_module
from ferry.cli.main import app

_phase = ["start"]


def _track_phases() -> None:
    plan_records = runner_module.Runner._plan_records
    load = runner_module.Runner._load

    def planned(self: Any, *args: Any) -> Any:
        _phase[0] = "map and validate"
        return plan_records(self, *args)

    async def loaded(self: Any, sink: Any, plan: Any, *args: Any) -> Any:
        _phase[0] = f"load {plan.name}"
        return await load(self, sink, plan, *args)

    runner_module.Runner._plan_records = planned  # type: ignore[method-assign]
    runner_module.Runner._load = loaded  # type: ignore[method-assign]


def main() -> None:
    tracemalloc.start(10)
    biggest: list[Any] = [0, None, ""]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.3):
            current, _ = tracemalloc.get_traced_memory()
            if current > biggest[0] * 1.05:
                biggest[:] = [current, tracemalloc.take_snapshot(), _phase[0]]

    threading.Thread(target=watch, daemon=True).start()
    _track_phases()
    sys.argv = ["ferry", "run", sys.argv[1], "--json"]
    with contextlib.suppress(SystemExit):  # typer exits when the command returns
        app()
    stop.set()
    peak = tracemalloc.get_traced_memory()[1]
    err = sys.stderr
    print(f"traced peak {peak / 2**20:.1f} MiB; largest snapshot {biggest[0] / 2**20:.1f} MiB during '{biggest[2]}'",
          file=err)
    if biggest[1] is not None:
        for stat in biggest[1].statistics("traceback")[:5]:
            print(f"{stat.size / 2**20:9.1f} MiB in {stat.count:,} blocks, allocated at:", file=err)
            for line in stat.traceback.format()[-6:]:
                print(f"      {line}", file=err)
    asyncio.set_event_loop(None)


if __name__ == "__main__":
    main()
