"""The messy store generator: deterministic, every messiness present, ids unique, timestamps colliding."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import orjson
import pytest

from ferry.sandbox.shopify import Store, generate_store
from ferry.sandbox.shopify.times import parse

EXPECTED_TAGS = {
    "customer": {
        "email_missing", "email_malformed", "email_shared", "email_mixed_case", "phone_malformed", "name_missing",
        "first_name_too_long", "last_name_too_long", "city_too_long", "zip_too_long", "no_address", "note_emoji",
        "repeat_customer", "updated_at_shared", "script_latin_diacritics", "script_cyrillic", "script_greek",
        "script_cjk", "script_arabic", "script_hebrew", "script_devanagari", "script_thai",
    },
    "product": {"draft", "archived", "title_too_long", "title_non_latin", "updated_at_shared"},
    "variant": {"sku_missing", "sku_duplicate"},
    "order": {
        "guest_checkout", "guest_no_email", "cancelled", "refunded", "partially_refunded", "pending", "authorized",
        "edited_after_creation", "foreign_currency", "note_emoji", "note_too_long", "updated_at_shared",
    },
    "line_item": {"custom_item_no_variant", "variant_deleted", "product_deleted", "title_too_long"},
}


@pytest.fixture(scope="module")
def store() -> Store:
    return generate_store()  # the default size is the contract: every kind must be present


def _dump(s: Store) -> bytes:
    return orjson.dumps([s.customers, s.products, s.orders, s.anomalies])


def test_same_seed_same_bytes_other_seed_differs(store: Store) -> None:
    assert _dump(generate_store()) == _dump(store)
    assert _dump(generate_store(seed=8, customers=50, products=10, orders=80)) != _dump(
        generate_store(seed=9, customers=50, products=10, orders=80))


def test_sizes_and_shapes(store: Store) -> None:
    assert (len(store.customers), len(store.products), len(store.orders)) == (1000, 200, 2000)
    order = store.orders[0]
    for key in ("id", "admin_graphql_api_id", "name", "order_number", "created_at", "updated_at", "financial_status",
                "total_price_set", "presentment_currency", "line_items", "refunds", "customer", "shipping_address"):
        assert key in order
    assert isinstance(order["total_price"], str) and re.fullmatch(r"-?\d+\.\d\d", order["total_price"])
    assert order["admin_graphql_api_id"] == f"gid://shopify/Order/{order['id']}"
    offsets = Counter(o["created_at"][-6:] for o in store.orders)
    assert {"-05:00", "-04:00"} <= set(offsets) and len(offsets) >= 5
    assert all(parse(r["updated_at"]) >= parse(r["created_at"]) for r in store.customers + store.orders)


def test_every_anomaly_kind_is_present(store: Store) -> None:
    found: dict[str, set[str]] = {}
    for key, tags in store.anomalies.items():
        found.setdefault(key.split(":")[0], set()).update(tags)
    for kind, tags in EXPECTED_TAGS.items():
        assert tags <= found.get(kind, set()), (kind, tags - found.get(kind, set()))


def test_anomalies_match_the_data(store: Store) -> None:
    customers = {c["id"]: c for c in store.customers}
    orders = {o["id"]: o for o in store.orders}
    lines = {li["id"]: li for o in store.orders for li in o["line_items"]}
    products = {p["id"]: p for p in store.products}

    def tagged(kind: str, tag: str) -> list[int]:
        return [int(k.split(":")[1]) for k in store.tagged(tag) if k.startswith(f"{kind}:")]

    assert all(customers[i]["email"] is None for i in tagged("customer", "email_missing"))
    assert all(customers[i]["first_name"] is None and customers[i]["last_name"] is None
               for i in tagged("customer", "name_missing"))
    assert all(len(customers[i]["first_name"]) > 40 for i in tagged("customer", "first_name_too_long"))
    assert all(len(customers[i]["last_name"]) > 80 for i in tagged("customer", "last_name_too_long"))
    assert all(len(customers[i]["default_address"]["city"]) > 40 for i in tagged("customer", "city_too_long"))
    assert all(len(products[i]["title"]) > 255 for i in tagged("product", "title_too_long"))
    assert all(len(orders[i]["note"]) > 32_000 for i in tagged("order", "note_too_long"))
    assert all(len(lines[i]["title"]) > 255 for i in tagged("line_item", "title_too_long"))
    shared = Counter(customers[i]["email"] for i in tagged("customer", "email_shared"))
    assert shared and all(n >= 2 for n in shared.values())
    for i in tagged("order", "guest_checkout"):
        assert orders[i]["customer"] is None and orders[i]["email"]
    assert all(orders[i]["customer"] is None and orders[i]["email"] is None for i in tagged("order", "guest_no_email"))
    for i in tagged("order", "cancelled"):
        assert orders[i]["cancelled_at"] and orders[i]["cancel_reason"]
        assert orders[i]["financial_status"] in ("voided", "refunded")
    assert all(orders[i]["refunds"] for i in tagged("order", "partially_refunded"))
    for i in tagged("line_item", "custom_item_no_variant"):
        assert lines[i]["variant_id"] is None and lines[i]["product_id"] is None
    for i in tagged("line_item", "variant_deleted"):
        assert lines[i]["variant_id"] is None and lines[i]["product_id"]
    for i in tagged("order", "edited_after_creation"):
        assert parse(orders[i]["updated_at"]) - parse(orders[i]["created_at"]) >= 3600
    foreign = [orders[i] for i in tagged("order", "foreign_currency")]
    assert {o["presentment_currency"] for o in foreign} >= {"EUR", "GBP", "CAD", "JPY", "AUD"}
    o = foreign[0]
    assert o["total_price_set"]["shop_money"]["currency_code"] == "USD"
    assert o["total_price_set"]["presentment_money"]["currency_code"] == o["presentment_currency"]


def test_repeat_customers_are_skewed(store: Store) -> None:
    counts = Counter(o["customer"]["id"] for o in store.orders if o["customer"])
    assert max(counts.values()) >= 8
    assert sum(1 for n in counts.values() if n >= 2) >= 100
    by_id = {c["id"]: c for c in store.customers}
    assert all(by_id[cid]["orders_count"] == n for cid, n in counts.items())


def test_ids_unique_per_resource(store: Store) -> None:
    def unique(ids: list[Any]) -> bool:
        return len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 10**11 for i in ids)

    assert unique([c["id"] for c in store.customers])
    assert unique([p["id"] for p in store.products])
    assert unique([v["id"] for p in store.products for v in p["variants"]])
    assert unique([o["id"] for o in store.orders])
    assert unique([li["id"] for o in store.orders for li in o["line_items"]])
    assert [o["id"] for o in store.orders] == sorted(o["id"] for o in store.orders)


def test_updated_at_collisions_cross_page_boundaries(store: Store) -> None:
    for records in (store.customers, store.orders):
        instants = [parse(r["updated_at"]) for r in records]  # id order
        assert max(Counter(instants).values()) >= 2
        # The longest run of consecutive ids sharing one instant spans a 50-record page boundary.
        longest = run = 1
        for a, b in itertools.pairwise(instants):
            run = run + 1 if a == b else 1
            longest = max(longest, run)
        assert longest > 50
    # And the exact same string, not only the same instant (cursor code often compares strings).
    strings = Counter(o["updated_at"] for o in store.orders)
    assert max(strings.values()) > 50


def test_tiny_and_empty_stores() -> None:
    empty = generate_store(customers=0, products=0, orders=0)
    assert (empty.customers, empty.products, empty.orders) == ([], [], [])
    tiny = generate_store(customers=1, products=1, orders=3)
    assert len(tiny.orders) == 3
    with pytest.raises(ValueError):
        generate_store(orders=-1)
