"""Waking a loop's task from any thread: the inbox stages events on the web server's thread, while the task
that hands them on (the micro-batch processor, the bus dispatcher) waits on an ``asyncio.Event`` of its own
loop, which only that loop's thread may set."""

from __future__ import annotations

import asyncio
import contextlib


def wake(loop: asyncio.AbstractEventLoop | None, event: asyncio.Event) -> None:
    """Set ``event`` of ``loop``: directly on the loop's own thread, else through the loop. ``loop`` None: the
    task has not started yet, and looks at the store when it starts; a loop closed meanwhile has no one to wake."""
    if loop is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
    else:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(event.set)
