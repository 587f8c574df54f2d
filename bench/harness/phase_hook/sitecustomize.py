"""Per-phase CPU of a `ferry run`, measured the same way on any revision (bench/ferry_cpu.py puts this
directory on the contender's PYTHONPATH): the runner's phase methods are wrapped with a process-CPU timer
and the totals go to stderr at exit as one ``PHASES name=seconds ...`` line."""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import inspect
import resource
import sys
import time
from typing import Any

_TOTALS: dict[str, float] = {}


def _timed(fn: Any, phase: str) -> Any:
    def charge(started: float) -> None:
        _TOTALS[phase] = _TOTALS.get(phase, 0.0) + time.process_time() - started

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                charge(started)

        return timed_async

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            charge(started)

    return timed


def _install() -> None:
    from ferry.engine import loader, runner
    from ferry.store import sqlite

    for cls, attr, phase in (
        (runner.Runner, "_extract", "read"),
        (runner.Runner, "_prepare", "prepare"),
        (runner.Runner, "_plan_records", "plan"),
        (runner.Runner, "_drop_orphans", "load"),
        (loader.Loader, "load", "load"),
        (sqlite.Store, "clear_staging", "clear_staging"),
    ):
        setattr(cls, attr, _timed(getattr(cls, attr), phase))


class _AfterRunnerImport(importlib.abc.MetaPathFinder):
    """Wraps the phases right after ferry.engine.runner has been executed (once)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "ferry.engine.runner":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_install(module: Any) -> None:
            exec_module(module)
            _install()

        spec.loader.exec_module = exec_then_install  # type: ignore[method-assign]
        return spec


def _report() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    phases = " ".join(f"{k}={v:.2f}" for k, v in _TOTALS.items())
    print(f"PHASES {phases} rest={total - sum(_TOTALS.values()):.2f} total={total:.2f}", file=sys.stderr)


sys.meta_path.insert(0, _AfterRunnerImport())
atexit.register(_report)
