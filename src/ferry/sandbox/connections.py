"""Network faults a sandbox can inflict on its client: a connection reset, a request that never gets an answer.

An HTTP error is easy (answer 503); what a client meets on a real network is harder: the TCP connection
dies mid-request. ASGI has no way to say "drop this connection", so `expose_transport`, called by the
outermost ASGI layer, puts the server's transport for the request into the scope, and `drop_connection` aborts it with
SO_LINGER 0: the kernel sends a RST instead of a FIN, the client sees ECONNRESET (httpx/httpcore:
`RemoteProtocolError`/`ReadError`, requests: `ConnectionError`), never a status line.

uvicorn (the server the sandboxes run on) hands the app `send` as a bound method of its per-request cycle,
whose `transport` attribute is the connection. With another server the transport is unknown and
`drop_connection` raises, which the server turns into a 500: the fault then shows as an error, not silently
as a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TRANSPORT_KEY = "ferry.transport"
_RST_LINGER = struct.pack("ii", 1, 0)


def expose_transport(scope: Scope, send: Send) -> None:
    """Store the request's transport in `scope["ferry.transport"]` (call it from the outermost ASGI layer)."""
    if scope.get("type") == "http":
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is not None:
            scope[TRANSPORT_KEY] = transport


async def hold_connection(receive: Receive, seconds: float) -> None:
    """Answer nothing for `seconds` (a read timeout for the client); return early once the client hangs up."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return
        if message.get("type") == "http.disconnect":
            return
        if message.get("type") == "http.request" and not message.get("more_body"):
            # The body was already read: the server has nothing more to give until the client disconnects.
            await asyncio.sleep(min(left, 0.05))


async def drop_connection(scope: Scope) -> None:
    """Abort the request's TCP connection with a RST; nothing more is sent on it."""
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        raise RuntimeError("cannot drop the connection: the server's transport is not exposed "
                           "(call expose_transport in the outermost ASGI layer, on uvicorn)")
    if transport.is_closing():
        return  # the client hung up first (a held `timeout` call it gave up on): nothing left to drop
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    transport.abort()
    # Let the server see the connection lost before the app returns, so it does not try to answer.
    for _ in range(3):
        await asyncio.sleep(0)
