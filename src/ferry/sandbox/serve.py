"""Run a sandbox app over HTTPS on loopback, in the foreground or in a background thread.

``plain_http`` serves http:// instead, for the one client path that only exists without TLS (WooCommerce's
OAuth 1.0a signing); the CA is still made so a caller's code stays the same.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from ferry.sandbox.tls import TlsFiles, ensure_tls

LOOPBACK = "127.0.0.1"


def bind_loopback(port: int = 0) -> socket.socket:
    """Bind a listening socket on 127.0.0.1; port 0 picks a free one."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and with
    # proto 0 every response (headers and body are two writes) waited ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, tls: TlsFiles, plain_http: bool = False) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        ssl_certfile=None if plain_http else str(tls.cert_file),
        ssl_keyfile=None if plain_http else str(tls.key_file),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        # A client that keeps a socket open must not hold a stopping sandbox for long.
        timeout_graceful_shutdown=2,
        # The sandbox is a peer for load tests: never let uvicorn's default limits be the bottleneck.
        limit_concurrency=None,
        backlog=1024,
    )


@dataclass
class RunningSandbox:
    """A sandbox served from a background thread (tests, benchmarks)."""

    url: str
    port: int
    tls: TlsFiles
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(app: Any, state_dir: Path, port: int = 0, *, plain_http: bool = False) -> RunningSandbox:
    """Serve ``app`` over HTTPS (or plain HTTP) from a daemon thread and return once it accepts connections."""
    tls = ensure_tls(state_dir)
    sock = bind_loopback(port)
    actual_port = sock.getsockname()[1]
    server = uvicorn.Server(_uvicorn_config(app, tls, plain_http))

    def run() -> None:
        # Server.run picks uvicorn's loop (uvloop when installed).
        server.run(sockets=[sock])

    thread = threading.Thread(target=run, name=f"sandbox-{actual_port}", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("sandbox server failed to start")
        threading.Event().wait(0.01)
    scheme = "http" if plain_http else "https"
    return RunningSandbox(f"{scheme}://{LOOPBACK}:{actual_port}", actual_port, tls, server, thread)


def serve_forever(app: Any, state_dir: Path, port: int, announce: Callable[[str, TlsFiles], None], *,
                  plain_http: bool = False) -> None:
    """Serve ``app`` in the foreground; ``announce(url, tls)`` runs once the socket is bound."""
    tls = ensure_tls(state_dir)
    sock = bind_loopback(port)
    url = f"{'http' if plain_http else 'https'}://{LOOPBACK}:{sock.getsockname()[1]}"
    server = uvicorn.Server(_uvicorn_config(app, tls, plain_http))
    announce(url, tls)
    server.run(sockets=[sock])
