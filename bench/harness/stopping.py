"""A bench stopped by SIGTERM (or SIGHUP: its terminal went away) cleans up as one stopped by Ctrl-C does.

Python's default for SIGTERM ends the process at once: no ``finally`` block runs, and the children the bench
started (``ferry worker``s, ``ferry run``, sandboxes, PostgreSQL, nats-server) keep running, holding ports, CPU
and temp dirs. ``exit_on_terminate`` makes the signal raise ``SystemExit`` in the main thread instead, so every
``finally`` and ``ExitStack`` callback runs and stops what it started.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from types import FrameType
from typing import Any


def exit_on_terminate() -> None:
    """SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` (143 for SIGTERM, the shell's convention)."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        # A second signal while the finally blocks stop the children must not cut that cleanup short.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def stop_processes(procs: Sequence[subprocess.Popen[Any]], timeout: float = 60.0) -> None:
    """SIGTERM each process still running (a ``ferry worker`` drains and exits), then wait; SIGKILL the ones
    still there after ``timeout`` seconds, so a stuck child never outlives the bench."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # stuck: it must not outlive the bench
            p.kill()
            p.wait(timeout=15)
