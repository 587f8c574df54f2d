"""A tiny webhook receiver on 127.0.0.1 for the sandboxes' delivery tests: it records every request and answers
with the statuses it is told to (one per request, then ``default``)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import Receive, Scope, Send

from ferry.sandbox.serve import RunningSandbox, start_in_thread


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float


@dataclass
class Receiver:
    default: int = 200
    statuses: deque[int] = field(default_factory=deque)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: RunningSandbox | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        with self.lock:
            status = self.statuses.popleft() if self.statuses else self.default
            self.requests.append(Received(scope["path"], {k.decode().lower(): v.decode() for k, v in scope["headers"]},
                                          body, time.time()))
        # Connection: close, so a stopping receiver never waits for the sender's idle keep-alive connection.
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"ok"})

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")

    def reset(self, *statuses: int, default: int = 200) -> None:
        with self.lock:
            self.requests.clear()
            self.statuses = deque(statuses)
            self.default = default


@contextmanager
def serve_receiver(state_dir: Path, *, plain_http: bool = False) -> Iterator[Receiver]:
    """Serve a receiver; over HTTPS its certificate comes from the CA in ``state_dir`` (the sandbox's own)."""
    receiver = Receiver()
    receiver.running = start_in_thread(receiver, state_dir, plain_http=plain_http)
    try:
        yield receiver
    finally:
        receiver.running.stop()
