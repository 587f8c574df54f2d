"""The JetStream bus against a real nats-server each test starts: dedup, redelivery, dead letters, order, restarts,
back-pressure."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from ferry.bus.consume import WorkConsumer
from ferry.bus.dedup import MemoryDedup
from ferry.core.bus import BusDeadLetter, BusFull, BusMessage, PermanentWorkError, partition_of, work_subject
from ferry.observe import metrics
from tests.bus.helpers import Letters, open_bus, stream_messages, wait_for
from tests.bus.natsserver import NatsServer

pytestmark = pytest.mark.timeout(90)
SRC = Path(__file__).resolve().parents[2] / "src"


def subject(key: str, partitions: int = 4) -> str:
    return work_subject("shop-to-sf", "Order", partition_of(key, partitions))


async def test_same_msg_id_is_stored_once(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url)
    try:
        first = await bus.publish(subject("o-1"), b'{"n": 1}', "load:o-1:v1")
        again = await bus.publish(subject("o-1"), b'{"n": 1}', "load:o-1:v1")
        other = await bus.publish(subject("o-1"), b'{"n": 2}', "load:o-1:v2")
        assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
        assert again.sequence == first.sequence
        assert await stream_messages(bus) == 2
    finally:
        await bus.close()


async def test_ids_older_than_the_window_are_caught_by_ferrys_dedup(nats_server: NatsServer) -> None:
    dedup = MemoryDedup()
    bus = await open_bus(nats_server.url, dedup, duplicate_window=0.2)
    handled: list[str] = []

    async def handler(m: BusMessage) -> None:
        handled.append(m.msg_id)

    stop = asyncio.Event()
    worker = asyncio.create_task(WorkConsumer(bus, handler, Letters(), dedup=dedup).run(stop))
    try:
        await bus.publish(subject("o-1"), b"x", "item-1")
        await wait_for(lambda: handled == ["item-1"], 10, "the first delivery")
        await asyncio.sleep(0.5)  # past the server's window: JetStream alone would store it again
        skipped = await bus.publish(subject("o-1"), b"x", "item-1")
        assert skipped.duplicate and skipped.sequence is None
        # A publisher that does not consult the dedup store gets it into the stream; the consumer skips it.
        blind = await open_bus(nats_server.url, None, duplicate_window=0.2)
        try:
            stored = await blind.publish(subject("o-1"), b"x", "item-1")
            assert not stored.duplicate and stored.sequence is not None
            for _ in range(100):
                if await stream_messages(bus) == 0:
                    break
                await asyncio.sleep(0.05)
            assert await stream_messages(bus) == 0  # acked away...
            assert handled == ["item-1"]  # ...without running the handler twice
        finally:
            await blind.close()
    finally:
        stop.set()
        await worker
        await bus.close()


async def test_a_killed_consumers_message_is_redelivered_after_ack_wait(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, ack_wait=1.5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bus.consumer_proc", nats_server.url, "4", "1.5"],
        stdout=subprocess.PIPE, cwd=SRC.parent, env={**os.environ, "PYTHONPATH": f"{SRC}:{SRC.parent}"},
    )
    try:
        await bus.publish(subject("o-7"), b"work", "item-7")
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.split() == [b"GOT", b"item-7", b"1"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        got: list[tuple[str, int]] = []

        async def handler(m: BusMessage) -> None:
            got.append((m.msg_id, m.attempt))

        stop = asyncio.Event()
        worker = asyncio.create_task(WorkConsumer(bus, handler, Letters()).run(stop))
        await wait_for(lambda: bool(got), 15, "the redelivery")
        stop.set()
        await worker
        assert got == [("item-7", 2)]  # the same message, its second delivery
        assert await stream_messages(bus) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        await bus.close()


async def test_a_message_failing_every_delivery_becomes_a_dead_letter_with_the_reason(
    nats_server: NatsServer,
) -> None:
    bus = await open_bus(nats_server.url, max_deliver=3)
    letters = Letters()
    attempts: list[int] = []

    async def handler(m: BusMessage) -> None:
        attempts.append(m.attempt)
        if m.msg_id == "bad-input":
            raise PermanentWorkError("Order o-2: field Phone: not a phone number")
        raise ValueError("target said INVALID_FIELD on BillingCity")

    stop = asyncio.Event()
    worker = asyncio.create_task(WorkConsumer(bus, handler, letters, delay=lambda n: 0.05).run(stop))
    try:
        await bus.publish(subject("o-1"), b"payload-1", "flaky")
        await bus.publish(subject("o-2"), b"payload-2", "bad-input")
        await wait_for(lambda: len(letters.letters) == 2, 20, "two dead letters")
    finally:
        stop.set()
        await worker
    by_id = {x.msg_id: x for x in letters.letters}
    assert by_id["flaky"].attempts == 3 and by_id["flaky"].data == b"payload-1"
    assert "failed on all 3 deliveries" in by_id["flaky"].reason and "INVALID_FIELD" in by_id["flaky"].reason
    assert by_id["bad-input"].attempts == 1 and "not a phone number" in by_id["bad-input"].reason
    assert sorted(attempts) == [1, 1, 2, 3]  # bounded: never a fourth delivery
    assert await stream_messages(bus) == 0
    await bus.close()


async def test_an_item_whose_deliveries_all_time_out_is_swept_into_the_dead_letters(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, max_deliver=2, ack_wait=0.6, fetch_timeout=0.3)
    taken: list[int] = []

    async def take_and_hang() -> None:  # a worker that takes the message and never answers
        async for m in bus.messages():
            taken.append(m.attempt)

    hang = asyncio.create_task(take_and_hang())
    try:
        await bus.publish(subject("o-3"), b"slow", "hangs")
        await wait_for(lambda: taken == [1, 2], 15, "both deliveries")
        letters = Letters()
        for _ in range(40):  # the server gives up one ack wait after the last delivery
            await asyncio.sleep(0.25)
            if await bus.sweep_exhausted(letters, wait=0.2):
                break
        assert [(x.msg_id, x.attempts, x.data) for x in letters.letters] == [("hangs", 2, b"slow")]
        assert "never acknowledged within the ack wait" in letters.letters[0].reason
        assert await stream_messages(bus) == 0  # removed from the work stream once dead-lettered
        assert await bus.sweep_exhausted(letters, wait=0.2) == 0  # idempotent
    finally:
        hang.cancel()
        await asyncio.gather(hang, return_exceptions=True)
        await bus.close()


async def test_each_keys_items_are_handled_in_publish_order_across_workers(nats_server: NatsServer) -> None:
    buses = [await open_bus(nats_server.url, max_in_flight=8) for _ in range(2)]
    seen: dict[str, list[int]] = defaultdict(list)
    rnd = random.Random(7)

    async def handler(m: BusMessage) -> None:
        key, n = m.data.decode().split(":")
        await asyncio.sleep(rnd.random() * 0.004)
        seen[key].append(int(n))

    keys = [f"order-{i}" for i in range(12)]
    published = [(k, n) for n in range(15) for k in keys]  # interleaved: every key's versions far apart
    for k, n in published:
        await buses[0].publish(subject(k), f"{k}:{n}".encode(), f"{k}:{n}")
    stop = asyncio.Event()
    workers = [asyncio.create_task(WorkConsumer(b, handler, Letters()).run(stop)) for b in buses]
    try:
        await wait_for(lambda: sum(map(len, seen.values())) == len(published), 40, "every item")
    finally:
        stop.set()
        await asyncio.gather(*workers)
        for b in buses:
            await b.close()
    assert {k: v for k, v in seen.items()} == {k: list(range(15)) for k in keys}


async def test_a_nats_restart_mid_stream_loses_nothing_and_the_consumer_resumes(nats_server: NatsServer) -> None:
    dedup = MemoryDedup()
    consumer_bus = await open_bus(nats_server.url, dedup)
    publisher = await open_bus(nats_server.url)
    effects: list[str] = []

    async def handler(m: BusMessage) -> None:
        effects.append(m.msg_id)  # the effect; dedup keeps a redelivery after forgotten acks from repeating it

    stop = asyncio.Event()
    worker = asyncio.create_task(WorkConsumer(consumer_bus, handler, Letters(), dedup=dedup).run(stop))
    ids = [f"item-{i}" for i in range(300)]
    try:
        for i in ids[:150]:
            await publisher.publish(subject(i), i.encode(), i)
        await wait_for(lambda: len(effects) >= 20, 20, "some progress before the restart")
        nats_server.kill()  # SIGKILL mid-stream: unacked and just-acked messages in flight
        await asyncio.sleep(0.5)
        nats_server.start()  # same store dir, same port
        for i in ids[150:]:
            await publisher.publish(subject(i), i.encode(), i)  # retries until the server confirms
        await wait_for(lambda: set(effects) >= set(ids), 60, "every item after the restart")
    finally:
        stop.set()
        await worker
        await publisher.close()
    assert sorted(effects) == sorted(ids)  # nothing lost, nothing done twice
    for _ in range(40):
        if await stream_messages(consumer_bus) == 0:
            break
        await asyncio.sleep(0.1)
    assert await stream_messages(consumer_bus) == 0
    await consumer_bus.close()


async def test_a_burst_waits_in_the_bus_within_the_in_flight_bound(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, partitions=8, max_ack_pending=4, max_in_flight=5)
    running = peak = done = 0

    async def handler(m: BusMessage) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        done += 1

    def acked() -> float:
        return metrics.sample_values().get(("ferry_bus_messages_total", (("event", "acked"),)), 0.0)

    acked_before = acked()
    for i in range(120):
        await bus.publish(work_subject("p", "Order", i % 8), b"x", f"burst-{i}")
    stop = asyncio.Event()
    worker = asyncio.create_task(WorkConsumer(bus, handler, Letters()).run(stop))
    try:
        await wait_for(lambda: done >= 40, 20, "work under way")
        waiting = await bus.depth()
        assert waiting["p"] > 0  # the rest of the burst is queued in the stream, not in the worker
        assert metrics.sample_values()[("ferry_queue_depth", (("pipeline", "p"), ("queue", "bus")))] == waiting["p"]
        await wait_for(lambda: done == 120, 30, "the burst")
    finally:
        stop.set()
        await worker
        await bus.close()
    assert 2 <= peak <= 5  # concurrent, never past the bound
    assert acked() - acked_before == 120


async def test_a_full_stream_refuses_new_work_instead_of_dropping_queued_work(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, max_bytes=4096)
    try:
        stored = 0
        with pytest.raises(BusFull):
            for i in range(1000):
                await bus.publish(subject(f"k{i}"), b"y" * 200, f"full-{i}")
                stored += 1
        assert 0 < stored < 1000
        assert await stream_messages(bus) == stored  # nothing already queued was evicted
    finally:
        await bus.close()


async def test_a_retried_item_holds_its_partition_so_later_items_of_its_key_wait(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, partitions=1)
    order: list[tuple[str, int]] = []

    async def handler(m: BusMessage) -> None:
        order.append((m.data.decode(), m.attempt))
        if m.data == b"v1" and m.attempt < 3:
            raise ConnectionError("target timed out")

    for v in ("v1", "v2", "v3"):
        await bus.publish(subject("o-9", 1), v.encode(), f"o-9:{v}")
    stop = asyncio.Event()
    worker = asyncio.create_task(WorkConsumer(bus, handler, Letters(), delay=lambda n: 0.2).run(stop))
    try:
        await wait_for(lambda: len(order) == 5, 15, "every delivery")
    finally:
        stop.set()
        await worker
        await bus.close()
    assert order == [("v1", 1), ("v1", 2), ("v1", 3), ("v2", 1), ("v3", 1)]  # v2 never overtakes v1


async def test_a_long_item_with_a_heartbeat_is_not_redelivered(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, ack_wait=1.0, fetch_timeout=0.3)
    attempts: list[int] = []

    async def slow(m: BusMessage) -> None:
        attempts.append(m.attempt)
        await asyncio.sleep(2.5)  # well past the ack wait: the default heartbeat (ack_wait/3) keeps it ours

    stop = asyncio.Event()
    worker = asyncio.create_task(WorkConsumer(bus, slow, Letters()).run(stop))
    try:
        await bus.publish(subject("o-5"), b"big", "long-1")
        await wait_for(lambda: bool(attempts), 10, "the delivery")
        await asyncio.sleep(3.0)
    finally:
        stop.set()
        await worker
    assert attempts == [1]
    assert await stream_messages(bus) == 0
    await bus.close()


async def test_a_publish_while_the_server_is_down_completes_when_it_is_back(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, publish_timeout=1.0)
    try:
        await bus.publish(subject("o-1"), b"before", "before-1")
        nats_server.kill()

        async def restart_later() -> None:
            await asyncio.sleep(1.5)
            await asyncio.to_thread(nats_server.start)

        restarting = asyncio.create_task(restart_later())
        published = await bus.publish(subject("o-1"), b"during", "during-1")  # blocks, retries, then succeeds
        await restarting
        assert not published.duplicate and published.sequence is not None
        again = await bus.publish(subject("o-1"), b"during", "during-1")
        assert again.duplicate  # the retries stored it once; the window survived the restart (item still queued)
        assert await stream_messages(bus) == 2  # nothing published before the crash was lost
    finally:
        await bus.close()


async def test_a_dead_letter_the_store_could_not_take_is_swept_in_later(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url, max_deliver=2, ack_wait=1.0, fetch_timeout=0.3)
    letters = Letters()
    calls = 0

    async def flaky_store(letter: BusDeadLetter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("state store unreachable")
        await letters(letter)

    async def handler(m: BusMessage) -> None:
        raise ValueError("target rejects it")

    consumer = WorkConsumer(bus, handler, flaky_store, delay=lambda n: 0.05, sweep=bus.sweep_exhausted,
                            sweep_every=0.3)
    stop = asyncio.Event()
    worker = asyncio.create_task(consumer.run(stop))
    try:
        await bus.publish(subject("o-4"), b"item", "store-down-1")
        await wait_for(lambda: bool(letters.letters), 30, "the swept dead letter")
    finally:
        stop.set()
        await worker
    assert calls == 2 and [x.msg_id for x in letters.letters] == ["store-down-1"]
    assert letters.letters[0].attempts == 2
    assert await stream_messages(bus) == 0
    await bus.close()


async def test_setup_applies_changed_settings_to_existing_consumers(nats_server: NatsServer) -> None:
    bus = await open_bus(nats_server.url)
    await bus.close()
    bus = await open_bus(nats_server.url, ack_wait=7.0, max_deliver=9, max_ack_pending=3)
    try:
        info = await bus.js.consumer_info(bus.settings.stream, "work-p2")
        assert (info.config.ack_wait, info.config.max_deliver, info.config.max_ack_pending) == (7.0, 9, 3)
    finally:
        await bus.close()
