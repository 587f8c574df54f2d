"""A worker that takes messages and never answers: the test SIGKILLs it to prove redelivery after ack wait.

argv: URL PARTITIONS ACK_WAIT. Prints ``GOT <msg_id> <attempt>`` per message, flushes, and sleeps."""

from __future__ import annotations

import asyncio
import sys

from ferry.bus.jetstream import JetStreamBus, JetStreamSettings


async def main(url: str, partitions: int, ack_wait: float) -> None:
    bus = JetStreamBus(JetStreamSettings(url=url, partitions=partitions, ack_wait=ack_wait, fetch_timeout=0.5))
    await bus.connect()
    async for message in bus.messages():
        print("GOT", message.msg_id, message.attempt, flush=True)  # taken, never acked: the process "hangs" here


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
