"""Start sandboxes as child processes (`ferry demo`, benchmarks) and read what they announce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ferry.errors import FerryError

_START_TIMEOUT = 60.0


@dataclass
class SandboxProcess:
    system: str
    process: subprocess.Popen[str]
    info: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.info["url"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_sandbox(system: str, state_dir: Path, extra_args: list[str] | None = None) -> SandboxProcess:
    """Run `ferry sandbox serve SYSTEM --json` in a child process and wait for its JSON line."""
    cmd = [
        sys.executable,
        "-m",
        "ferry",
        "sandbox",
        "serve",
        system,
        "--port",
        "0",
        "--json",
        "--state-dir",
        str(state_dir),
        *(extra_args or []),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    line = _read_first_line(proc)
    if not line:
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        proc.kill()
        raise FerryError(f"the {system} sandbox did not start: {err.strip()[-2000:] or 'no output'}")
    # Keep draining stderr so a chatty child can never block on a full pipe.
    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=_drain, args=(stream,), daemon=True).start()
    return SandboxProcess(system, proc, json.loads(line))


def _read_first_line(proc: subprocess.Popen[str]) -> str:
    result: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        result.append(proc.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(_START_TIMEOUT)
    return result[0].strip() if result else ""


def _drain(stream: IO[str] | None) -> None:
    if stream is not None:
        for _ in stream:
            pass
