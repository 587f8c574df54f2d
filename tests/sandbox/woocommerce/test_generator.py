"""The generated store: deterministic, messy in every documented way, and internally consistent."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from ferry.sandbox.woocommerce import generate_store
from ferry.sandbox.woocommerce.store import Store

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
TAGS = {
    "customer": ["script_cyrillic", "script_cjk", "name_missing", "first_name_too_long", "last_name_too_long",
                 "city_too_long", "postcode_too_long", "billing_email_malformed", "billing_email_other",
                 "billing_email_shared", "email_mixed_case", "phone_malformed", "no_address", "date_modified_null",
                 "repeat_customer", "edited"],
    "product": ["variable", "draft", "private", "name_too_long", "name_non_latin", "sku_missing", "on_sale"],
    "variation": ["sku_missing", "sku_duplicate"],
    "order": ["guest", "guest_email_of_customer", "status_cancelled", "status_refunded", "status_failed",
              "status_pending", "foreign_currency", "edited_after_creation", "refunded", "partially_refunded",
              "coupon", "note_emoji", "note_too_long", "billing_email_malformed", "product_deleted",
              "date_modified_shared"],
}


@pytest.fixture(scope="module")
def store() -> Store:
    return generate_store(seed=3, customers=400, products=60, orders=900)


def _dated(store: Store) -> list[dict[str, object]]:
    return [*store.customers, *store.products, *store.orders, *store.coupons,
            *(v for vs in store.variations.values() for v in vs), *(r for rs in store.refunds.values() for r in rs)]


def test_same_seed_same_store_other_seed_other_store() -> None:
    a, b = generate_store(seed=9, customers=50, products=10, orders=80), generate_store(
        seed=9, customers=50, products=10, orders=80)
    assert a == b
    assert a != generate_store(seed=10, customers=50, products=10, orders=80)


def test_every_documented_anomaly_occurs(store: Store) -> None:
    for kind, tags in TAGS.items():
        present = Counter(t for key, ts in store.anomalies.items() if key.startswith(f"{kind}:") for t in ts)
        assert not [t for t in tags if not present[t]], kind


def test_dates_are_naive_and_the_local_twin_is_the_store_timezone(store: Store) -> None:
    zone = ZoneInfo(store.timezone)
    assert store.timezone == "Europe/Berlin"
    offsets = set()
    for rec in _dated(store):
        for key in [k for k in rec if k.endswith("_gmt")]:
            local_key = key.removesuffix("_gmt")
            gmt, local = rec[key], rec[local_key]
            if gmt is None:
                assert local is None
                continue
            assert isinstance(gmt, str) and isinstance(local, str) and DATE.match(gmt) and DATE.match(local)
            instant = datetime.fromisoformat(gmt).replace(tzinfo=UTC)
            assert instant.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S") == local
            offsets.add(datetime.fromisoformat(local) - datetime.fromisoformat(gmt))
    assert len(offsets) == 2  # CET and CEST: the data cross both DST changes


def test_timezone_is_configurable() -> None:
    other = generate_store(seed=3, customers=5, products=3, orders=5, timezone="America/Sao_Paulo")
    order = other.orders[0]
    assert datetime.fromisoformat(order["date_created_gmt"]) - datetime.fromisoformat(order["date_created"]) \
        == (datetime(2026, 1, 1, 3) - datetime(2026, 1, 1, 0))


def test_guest_orders_have_customer_id_zero_and_others_point_at_customers(store: Store) -> None:
    customer_ids = {c["id"] for c in store.customers}
    guests = [o for o in store.orders if o["customer_id"] == 0]
    assert guests and all("guest" in store.anomalies[f"order:{o['id']}"] for o in guests)
    assert all(o["customer_id"] in customer_ids for o in store.orders if o["customer_id"])
    assert 1 not in customer_ids  # the admin


def test_order_money_adds_up(store: Store) -> None:
    for o in store.orders:
        lines = sum(Decimal(li["total"]) for li in o["line_items"])
        assert Decimal(o["total"]) == lines + Decimal(o["total_tax"]) + Decimal(o["shipping_total"]), o["id"]
        assert all(isinstance(v, str) for v in (o["total"], o["discount_total"], o["shipping_total"]))
    currencies = Counter(o["currency"] for o in store.orders)
    assert currencies.most_common(1)[0][0] == store.currency and len(currencies) > 2


def test_refunds_summaries_and_the_shared_id_sequence(store: Store) -> None:
    for o in store.orders:
        refunds = store.refunds.get(o["id"], [])
        assert o["refunds"] == [{"id": r["id"], "reason": r["reason"], "total": f"-{r['amount']}"} for r in refunds]
        assert all(r["id"] > o["id"] and r["date_created_gmt"] <= o["date_modified_gmt"] for r in refunds)
        if o["status"] == "refunded" and refunds:
            assert sum(Decimal(r["amount"]) for r in refunds) == Decimal(o["total"])
    posts = [r["id"] for r in [*store.products, *store.orders, *store.coupons]] + [
        r["id"] for rs in [*store.variations.values(), *store.refunds.values()] for r in rs]
    assert len(posts) == len(set(posts))  # products, variations, coupons, orders, refunds: one id sequence


def test_variable_products_list_their_variations(store: Store) -> None:
    for p in store.products:
        children = store.variations.get(p["id"], [])
        assert p["variations"] == [v["id"] for v in children]
        assert (p["type"] == "variable") == bool(children)
        assert all(v["parent_id"] == p["id"] for v in children)


def test_a_block_of_orders_shares_one_modified_second_across_pages(store: Store) -> None:
    shared = [o for o in store.orders if "date_modified_shared" in store.anomalies.get(f"order:{o['id']}", [])]
    assert len({o["date_modified_gmt"] for o in shared}) == 1 and len(shared) >= 14


def test_empty_store() -> None:
    empty = generate_store(seed=1, customers=0, products=0, orders=0)
    assert empty.customers == empty.products == empty.orders == []
