"""A worker process for the kill test: runs WorkConsumer with a handler whose effect is a row per msg id in an
SQLite file (counting executions), and ferry's SQLite dedup store. argv: URL EFFECTS_DB DEDUP_DB."""

from __future__ import annotations

import asyncio
import sqlite3
import sys

from ferry.bus.consume import WorkConsumer
from ferry.bus.dedup import SqliteDedup
from ferry.bus.jetstream import JetStreamBus, JetStreamSettings
from ferry.core.bus import BusDeadLetter, BusMessage


async def main(url: str, effects_path: str, dedup_path: str) -> None:
    effects = sqlite3.connect(effects_path, timeout=30, isolation_level=None)
    effects.execute("PRAGMA journal_mode=WAL")

    async def handler(m: BusMessage) -> None:
        await asyncio.sleep(0.01)  # a call to a target
        effects.execute(
            "INSERT INTO effects (msg_id, runs) VALUES (?, 1) ON CONFLICT (msg_id) DO UPDATE SET runs = runs + 1",
            (m.msg_id,),
        )

    async def letters(letter: BusDeadLetter) -> None:
        raise AssertionError(f"no item should be dead-lettered: {letter}")

    settings = JetStreamSettings(url=url, partitions=4, ack_wait=2.0, fetch_timeout=0.5, max_ack_pending=4,
                                 max_in_flight=8)
    async with JetStreamBus(settings) as bus:
        print("READY", flush=True)
        await WorkConsumer(bus, handler, letters, dedup=SqliteDedup(dedup_path)).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
