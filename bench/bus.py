"""Work-bus throughput on a nats-server this script starts (own port, temp store dir): publish, then consume
through ``WorkConsumer`` (ack after a no-op handler) in strict per-partition order and in loose order.

    .venv/bin/python bench/bus.py [--items 5000] [--partitions 8]

Prints one line per phase: items, seconds, items/s. The handler does nothing, so this is the bus's own ceiling
per process (each delivery: fetch, dedup check, ack_sync round trip), not a pipeline's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

DEDUP = "sqlite"
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.bus.natsserver import NatsServer, require_nats_server  # noqa: E402

from ferry.bus.consume import WorkConsumer  # noqa: E402
from ferry.bus.dedup import MemoryDedup, SqliteDedup  # noqa: E402
from ferry.bus.jetstream import JetStreamBus, JetStreamSettings  # noqa: E402
from ferry.core.bus import BusDeadLetter, BusMessage, partition_of, work_subject  # noqa: E402


async def no_letters(letter: BusDeadLetter) -> None:
    raise AssertionError(f"unexpected dead letter: {letter}")


async def phase(url: str, tmp: Path, name: str, items: int, partitions: int, pending: int, in_flight: int) -> None:
    settings = JetStreamSettings(url=url, stream=f"BENCH_{name.upper()}", partitions=partitions,
                                 max_ack_pending=pending, max_in_flight=in_flight)
    dedup = SqliteDedup(tmp / f"{name}.db") if DEDUP == "sqlite" else MemoryDedup()
    async with JetStreamBus(settings, dedup) as bus:
        await bus.setup()
        t0 = time.perf_counter()
        for i in range(items):
            key = f"order-{i % 997}"
            await bus.publish(work_subject("bench", "Order", partition_of(key, partitions)), b"{}", f"{name}-{i}")
        pub = time.perf_counter() - t0
        print(f"{name:>7} publish  {items:>6} items {pub:6.2f} s {items / pub:8.0f} items/s")
        done = 0

        async def handler(m: BusMessage) -> None:
            nonlocal done
            done += 1

        stop = asyncio.Event()
        t0 = time.perf_counter()
        worker = asyncio.create_task(WorkConsumer(bus, handler, no_letters, dedup=dedup).run(stop))
        while done < items:
            await asyncio.sleep(0.01)
        took = time.perf_counter() - t0
        stop.set()
        await worker
        print(f"{name:>7} consume  {items:>6} items {took:6.2f} s {items / took:8.0f} items/s "
              f"(partitions {partitions}, max_ack_pending {pending}, in flight {in_flight})")
        await bus.js.delete_stream(settings.stream)
        await bus.js.delete_stream(settings.exhausted_stream)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--dedup", choices=["sqlite", "memory"], default="sqlite")
    args = ap.parse_args()
    global DEDUP
    DEDUP = args.dedup
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(require_nats_server(), Path(tmp) / "nats")
        server.start()
        try:
            print(f"nats-server {server.binary}")
            await phase(server.url, Path(tmp), "ordered", args.items, args.partitions, 1, 16)
            await phase(server.url, Path(tmp), "loose", args.items, args.partitions, 64, 64)
        finally:
            server.kill()


if __name__ == "__main__":
    asyncio.run(main())
