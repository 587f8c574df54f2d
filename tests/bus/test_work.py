"""Work items: their wire form round-trips, the same work gets the same msg id, a bad item is a permanent error."""

from __future__ import annotations

import orjson
import pytest

from ferry.bus.work import (
    JobLoad,
    LoadBatch,
    MapBatch,
    ReadPage,
    ReadStream,
    RemoteJobItem,
    decode,
    encode,
    msg_id,
    subject_for,
)
from ferry.core.bus import PermanentWorkError, partition_of

ITEMS = [
    ReadPage("shop-to-sf", 12, "orders", {"since_id": 4410, "updated_at_min": "2026-12-01T00:00:00Z"}),
    MapBatch("shop-to-sf", 12, ("orders", "customers"), 1, 2000),
    LoadBatch("shop-to-sf", 12, "Order", (("gid-1", "2026-12-01T10:00:00Z"), ("gid-2", "7")), "bulk"),
    RemoteJobItem("shop-to-sf", 12, "Order", "750R0000001", "salesforce", {"state": "UploadComplete"}),
    ReadStream("shop-to-sf", 12, "orders", 2, "a1b2c3"),
    JobLoad("shop-to-sf", 12, "OrderItem", "bulk", True, "a1b2c3"),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.kind)
def test_every_item_survives_the_wire(item: object) -> None:
    assert decode(encode(item)) == item  # type: ignore[arg-type]


def test_the_same_work_gets_the_same_id_and_different_work_another() -> None:
    again = ReadPage("shop-to-sf", 12, "orders", {"updated_at_min": "2026-12-01T00:00:00Z", "since_id": 4410})
    assert msg_id(again) == msg_id(ITEMS[0])  # key order in the state does not matter
    assert msg_id(ReadPage("shop-to-sf", 12, "orders", {"since_id": 4411})) != msg_id(ITEMS[0])
    assert msg_id(ReadPage("shop-to-sf", 13, "orders", ITEMS[0].state)) != msg_id(ITEMS[0])  # type: ignore[attr-defined]


def test_a_load_batch_goes_to_its_first_keys_partition() -> None:
    batch = ITEMS[2]
    assert subject_for(batch, 8) == f"ferry.work.shop-to-sf.Order.{partition_of('gid-1', 8)}"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (orjson.dumps({"v": 99, "kind": "read_page"}), "v=99"),
        (orjson.dumps({"v": 1, "kind": "launch_rocket"}), "unknown work item kind"),
        (orjson.dumps({"v": 1, "kind": "load_batch", "pipeline": "p"}), "misses object, rows, run_id"),
    ],
)
def test_an_item_this_ferry_cannot_read_is_a_permanent_error_naming_why(data: bytes, reason: str) -> None:
    with pytest.raises(PermanentWorkError, match=reason):
        decode(data)


def test_a_load_round_after_the_first_is_a_new_item() -> None:
    first = LoadBatch("shop-to-sf", 12, "Order", (("gid-1", "7"),), "composite")
    again = LoadBatch("shop-to-sf", 12, "Order", (("gid-1", "7"),), "composite", attempt=2)
    assert msg_id(first) != msg_id(again)
    assert msg_id(LoadBatch("shop-to-sf", 12, "Order", (("gid-1", "7"),), "composite", attempt=1)) == msg_id(first)
    assert decode(encode(again)) == again


def test_the_same_rows_in_another_run_with_the_same_id_are_a_new_item() -> None:
    # Another (or a recreated) state database sharing the bus numbers its runs from 1 again.
    one = LoadBatch("shop-to-sf", 1, "Order", (("gid-1", "7"),), "composite", run_token="a1")
    other = LoadBatch("shop-to-sf", 1, "Order", (("gid-1", "7"),), "composite", run_token="b2")
    assert msg_id(one) != msg_id(other)
    assert decode(encode(other)) == other


def test_a_read_or_job_item_of_another_round_or_run_is_a_new_item() -> None:
    read = ReadStream("shop-to-sf", 12, "orders", 1, "a1b2c3")
    assert msg_id(ReadStream("shop-to-sf", 12, "orders", 1, "a1b2c3")) == msg_id(read)
    assert msg_id(ReadStream("shop-to-sf", 12, "orders", 2, "a1b2c3")) != msg_id(read)  # the next round
    assert msg_id(ReadStream("shop-to-sf", 12, "orders", 1, "ffffff")) != msg_id(read)  # another coordinator
    job = JobLoad("shop-to-sf", 12, "Order", "bulk", False, "a1b2c3")
    assert msg_id(JobLoad("shop-to-sf", 12, "Order", "bulk", True, "a1b2c3")) != msg_id(job)  # collect-only first
    assert subject_for(read, 8) == f"ferry.work.shop-to-sf.orders.{partition_of('orders', 8)}"
