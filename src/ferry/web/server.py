"""Serving the dashboard: uvicorn on a socket bound first, so the URL (and a port picked with 0) is known before
the first request, and a bind refused for want of a token fails before anything listens."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from ferry.web.app import Dashboard, create_app
from ferry.web.security import check_bind


class _Server(uvicorn.Server):
    """Ctrl-C or SIGTERM stops serving and returns, so the caller stops what it started (the demo's sandboxes);
    uvicorn would re-raise the signal after its graceful shutdown and skip that."""

    stopped_by: list[int]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self.stopped_by = list(self._captured_signals)
                self._captured_signals.clear()


class DashboardServer:
    def __init__(self, dash: Dashboard, host: str = "127.0.0.1", port: int = 0) -> None:
        check_bind(host, dash.access.token)
        self.dash = dash
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(dash), log_level="warning", lifespan="off", access_log=False)
        self.server = _Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """In the foreground until Ctrl-C or SIGTERM (uvicorn's handlers stop it gracefully)."""
        if on_ready:
            on_ready(self.url)
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self) -> str:
        """In a background thread (tests, embedding); ``stop()`` ends it."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread:
            self._thread.join(10)
        self.sock.close()
