"""A throwaway PostgreSQL server for tests: ``initdb`` into a temp dir, ``pg_ctl start`` on a free loopback port,
stopped (and restartable) by the test session. Never the machine's shared server.

As root (CI containers) the server runs as the ``postgres`` user: initdb and postgres refuse root. With CI=true a
missing PostgreSQL fails the run instead of skipping it (reference: /work/shared/reference/distributed.md §4.2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and pg_ctl (or $FERRY_TEST_PG_BIN)."""
    configured = os.environ.get("FERRY_TEST_PG_BIN")
    candidates = [Path(configured)] if configured else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    for d in reversed(candidates):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def require_postgres_bin() -> Path:
    found = postgres_bin()
    if found is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql, or set FERRY_TEST_PG_BIN)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, bindir: Path, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        self.bin = bindir
        self.settings = settings or {}
        self.durable = durable  # fsync on (benchmarks); tests run with fsync off
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-pg-"))
        self.data = self.dir / "data"
        self.port = 0
        self._as_root = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_root else list(args)

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), *args), capture_output=True, text=True
        )

    def init(self) -> None:
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        subprocess.run(
            self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                      "-E", "UTF8", "--locale=C.UTF-8"),
            check=True, capture_output=True,
        )

    def start(self) -> None:
        """Start on the port used before (a restart), or on a free one; retried when another process took it."""
        for _ in range(5):
            port = self.port or _free_port()
            # fsync off: these servers are thrown away; a process crash (what the tests do) still loses nothing
            # committed (only an OS crash would).
            opts = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
            opts += "" if self.durable else " -F"
            opts += "".join(f" -c {k}={v}" for k, v in self.settings.items())
            done = self._ctl("-l", str(self.dir / "pg.log"), "-w", "-t", "30", "-o", opts, "start")
            if done.returncode == 0:
                self.port = port
                return
            if self.port:  # a restart must come back on its port
                break
        raise RuntimeError(f"postgres did not start: {done.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def crash(self) -> None:
        """An immediate stop: no clean shutdown; the next start runs crash recovery."""
        self.stop("immediate")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's processes so far (postmaster and backends alive now)."""
        import psutil

        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "pg.log").read_text()[-2000:]
        return ""

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def fresh_database(self) -> str:
        """A new empty database on the server; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def fresh_schema(self) -> str:
        """A new empty schema in the server's ``postgres`` database, and a URL whose search_path is it: cheaper
        than a database per test (a few ms)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.admin_url}?options=-csearch_path%3D{name}"


def start_server(*, durable: bool = False, settings: dict[str, str] | None = None) -> PostgresServer:
    server = PostgresServer(require_postgres_bin(), durable=durable, settings=settings)
    server.init()
    server.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(server.admin_url, connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
