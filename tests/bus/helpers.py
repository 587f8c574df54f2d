from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ferry.bus.jetstream import JetStreamBus, JetStreamSettings
from ferry.core.bus import BusDeadLetter, DedupStore

FAST = {"ack_wait": 2.0, "fetch_timeout": 0.5, "publish_retry_for": 20.0, "partitions": 4}


def settings(url: str, **overrides: Any) -> JetStreamSettings:
    return JetStreamSettings(url=url, **{**FAST, **overrides})


async def open_bus(url: str, dedup: DedupStore | None = None, **overrides: Any) -> JetStreamBus:
    bus = JetStreamBus(settings(url, **overrides), dedup)
    await bus.connect()
    await bus.setup()
    return bus


class Letters:
    """A dead-letter handler that keeps what it is given (the store's DeadLetters at merge time)."""

    def __init__(self) -> None:
        self.letters: list[BusDeadLetter] = []

    async def __call__(self, letter: BusDeadLetter) -> None:
        self.letters.append(letter)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def stream_messages(bus: JetStreamBus) -> int:
    info = await bus.js.stream_info(bus.settings.stream)
    return int(info.state.messages)
