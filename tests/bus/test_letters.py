"""Bus dead letters land in the real state store's dead-letter queue, with the reason."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson

from ferry.bus.consume import WorkConsumer
from ferry.bus.letters import MAX_DELIVER, PERMANENT, StoreDeadLetters
from ferry.bus.work import LoadBatch, decode, encode, msg_id, subject_for
from ferry.core.bus import BusMessage
from ferry.core.ports import LetterFilter
from ferry.store.sqlite import Store
from tests.bus.helpers import open_bus, stream_messages, wait_for
from tests.bus.natsserver import NatsServer


async def test_exhausted_and_unreadable_items_are_in_the_stores_dlq(nats_server: NatsServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    bus = await open_bus(nats_server.url, max_deliver=2)
    item = LoadBatch("shop-to-sf", 3, "Order", (("gid-1", "7"),), "collections")

    async def handler(m: BusMessage) -> None:
        decode(m.data)  # the garbage item: PermanentWorkError
        raise TimeoutError("Salesforce did not answer")

    stop = asyncio.Event()
    worker = asyncio.create_task(WorkConsumer(bus, handler, StoreDeadLetters(store), delay=lambda n: 0.05).run(stop))
    try:
        await bus.publish(subject_for(item, bus.partitions), encode(item), msg_id(item))
        await bus.publish("ferry.work.shop-to-sf.Order.0", b"\x00garbage", "garbage-1")

        def letters() -> int:
            return store.count_matching_letters(LetterFilter(pipeline="shop-to-sf"))

        await wait_for(lambda: letters() == 2, 20, "two letters in the store")
    finally:
        stop.set()
        await worker
    found = {d.record_key: d for d in store.find_dead_letters(LetterFilter(pipeline="shop-to-sf"))}
    batch = found[msg_id(item)]
    assert (batch.object, batch.run_id, batch.error_code) == ("bus:load_batch", 3, MAX_DELIVER)
    assert "Salesforce did not answer" in batch.message and "after 2 deliveries" in batch.message
    assert decode(orjson.dumps(batch.source_payload)) == item  # the item itself, to publish again after a fix
    garbage = found["garbage-1"]
    assert (garbage.object, garbage.error_code) == ("bus:Order", PERMANENT)
    assert "not JSON" in garbage.message
    assert base64.b64decode(garbage.source_payload["undecodable_item_base64"]) == b"\x00garbage"
    assert await stream_messages(bus) == 0
    await bus.close()
    assert orjson.loads(orjson.dumps(batch.mapped_payload))["rows"] == [["gid-1", "7"]]
