"""The opt-in mode for very large stores: sharded generation and compressed (optionally spilled) records."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ferry.sandbox.shopify.compact import CompactRecords
from ferry.sandbox.shopify.generator import generate_compact_store, generate_shards, generate_store, shard_sizes
from ferry.sandbox.shopify.store import RESOURCES


def test_a_store_of_one_shard_is_the_ordinary_store_byte_for_byte() -> None:
    sizes = {"customers": 150, "products": 30, "orders": 300}
    plain = generate_store(seed=11, **sizes)
    (shard,) = generate_shards(seed=11, **sizes, shard_orders=300)
    compact = generate_compact_store(seed=11, **sizes, shard_orders=1000)
    for name in RESOURCES:
        assert orjson.dumps(shard.records(name)) == orjson.dumps(plain.records(name))
        assert orjson.dumps(list(compact.records(name))) == orjson.dumps(sorted(plain.records(name),
                                                                                key=lambda r: r["id"]))
    assert shard.anomalies.keys() == plain.anomalies.keys() == compact.anomalies.keys()


def test_shards_split_sizes_evenly() -> None:
    assert shard_sizes(500_000, 100_000, 1_000_000, 100_000) == [(50_000, 10_000, 100_000)] * 10
    assert shard_sizes(5, 1, 10, 4) == [(1, 0, 3), (2, 0, 3), (2, 1, 4)]
    assert sum(o for _, _, o in shard_sizes(7, 3, 1001, 100)) == 1001
    with pytest.raises(ValueError):
        shard_sizes(1, 1, 1, 0)


def test_shards_are_unique_store_wide_and_self_contained() -> None:
    shards = list(generate_shards(seed=5, customers=120, products=30, orders=240, shard_orders=80))
    assert len(shards) == 3
    ids = {name: [r["id"] for s in shards for r in s.records(name)] for name in RESOURCES}
    for name in RESOURCES:
        assert ids[name] == sorted(set(ids[name])), name  # ascending across shards, no repeats
    orders = [o for s in shards for o in s.orders]
    assert len({o["name"] for o in orders}) == len(orders)
    guest_emails = [o["email"] for o in orders if o["customer"] is None and o["email"]]
    assert len(set(guest_emails)) == len(guest_emails)
    emails = [c["email"] for s in shards for c in s.customers if c["email"] and "@" in c["email"]]
    assert len({e.lower() for e in emails}) > 0.95 * len(emails)  # only the deliberate email_shared repeat
    for shard in shards:  # orders reference only their own shard's customers and variants
        customers = {c["id"] for c in shard.customers}
        variants = {v["id"] for p in shard.products for v in p["variants"]}
        for order in shard.orders:
            assert order["customer"] is None or order["customer"]["id"] in customers
            for line in order["line_items"]:
                if line["variant_id"] is not None and line.get("product_exists", True):
                    assert line["variant_id"] in variants or f"line_item:{line['id']}" in shard.anomalies
    # Other shards draw other data: not copies of shard 0.
    assert [o["total_price"] for o in shards[1].orders] != [o["total_price"] for o in shards[0].orders]


@pytest.mark.parametrize("spill", [False, True])
def test_compact_records_decode_pin_append_and_pop(tmp_path: Path, spill: bool) -> None:
    source = sorted(generate_store(seed=2, customers=30, products=5, orders=40).orders, key=lambda r: r["id"])
    recs = CompactRecords(source, spill_dir=tmp_path / "spill" if spill else None)
    assert len(recs) == 40 and recs.stored_bytes() < len(orjson.dumps(source)) / 2
    assert orjson.dumps(list(recs)) == orjson.dumps(source)
    assert orjson.dumps(recs[3:6]) == orjson.dumps(source[3:6])
    assert orjson.loads(recs.json_array(10, 13)) == source[10:13]
    # A plain read is a fresh copy; a pinned record is the record: edits to it stay.
    recs[0]["note"] = "lost"
    assert recs[0]["note"] == source[0]["note"]
    live = recs.pin(1)
    live["note"] = "kept"
    assert recs[1]["note"] == "kept" and recs.pin(1) is live
    assert orjson.loads(recs.json_array(1, 2))[0]["note"] == "kept"
    new = dict(source[-1], id=source[-1]["id"] + 1)
    recs.append(new)
    assert recs[-1] is new and recs.ids[-1] == new["id"]
    with pytest.raises(ValueError):
        recs.append(dict(new))  # ids must grow
    popped = recs.pop(1)
    assert popped["note"] == "kept" and len(recs) == 40 and recs[1]["id"] == source[2]["id"]
    assert list(recs.ids) == [r["id"] for r in recs]


def test_a_full_page_is_served_from_the_stored_json_unchanged(tmp_path: Path) -> None:
    source = sorted(generate_store(seed=4, customers=20, products=5, orders=30).orders, key=lambda r: r["id"])
    recs = CompactRecords(source, spill_dir=tmp_path)
    assert recs.json_of([0, 5, 7]) == orjson.dumps([source[0], source[5], source[7]])
