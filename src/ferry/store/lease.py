"""One run of a pipeline at a time: an OS file lock per pipeline, next to the state database.

The lock is the lease: the kernel drops it when its process ends, however it ends (kill -9, a crash, a lost
container), so a `running` row whose pipeline lock is free belongs to a process that is gone: `ferry runs` shows it
as `died`, and the next run marks it so and resumes what it left. POSIX ``flock``; where it does not exist
(Windows), runs are not guarded and nothing is shown as died.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO

from ferry.errors import PipelineBusy

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


def _lock_path(state_dir: Path, pipeline: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", pipeline)
    return state_dir / "locks" / f"{safe}.lock"


class PipelineLock:
    """Held for a whole run: ``with PipelineLock(dir, "shop"):``; a second holder gets ``PipelineBusy``."""

    def __init__(self, state_dir: Path, pipeline: str) -> None:
        self.path = _lock_path(state_dir, pipeline)
        self.pipeline = pipeline
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                handle.close()
                raise PipelineBusy(
                    f"pipeline {self.pipeline} is being run by {owner}; wait for it to finish (or stop it)"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename if hasattr(os, 'uname') else 'this host'}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> PipelineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_running(state_dir: Path, pipeline: str) -> bool:
    """Whether a live process holds the pipeline's lock (False where locks are not supported)."""
    path = _lock_path(state_dir, pipeline)
    if fcntl is None or not path.exists():
        return False
    with path.open("r") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False
