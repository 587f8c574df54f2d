"""Fidelity: the real ShopifyAPI client works against the sandbox with only the site URL and CA changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import shopify
from pyactiveresource.connection import ClientError, ResourceNotFound, UnauthorizedAccess

from ferry.sandbox.shopify.times import parse

from .conftest import Served, _serve, after_the_second_of


def _all_pages(first: Any) -> list[Any]:
    page, items = first, list(first)
    while page.has_next_page():
        page = page.next_page()
        items += list(page)
    return items


def _epoch(rec: dict[str, Any], key: str = "updated_at") -> int:
    return parse(rec[key])


def test_paging_all_orders_yields_each_exactly_once(client: Served, request: pytest.FixtureRequest) -> None:
    # The sharded store: the real client builds every full order, served as its stored JSON bytes (each anomaly
    # kind parsed by ShopifyAPI, ~25 ms an order). The plain store pages the same way with fields=id: its full
    # records are the same JSON (test_compact: one shard is the ordinary store byte for byte), and ferry's reader
    # reads them whole in tests/connectors; building 600 full orders a second time took ~15-60 s and proved no more.
    fields = {} if request.node.callspec.params["served"] == "sharded" else {"fields": "id"}
    orders = _all_pages(shopify.Order.find(limit=250, status="any", **fields))
    ids = [o.id for o in orders]
    assert len(ids) == len(set(ids))
    assert ids == sorted(o["id"] for o in client.sandbox.store.orders)  # id ascending, nothing missing


def test_orders_in_updated_at_order_come_again_after_an_edit_made_mid_read(client: Served) -> None:
    """Keyset pages in updated_at order, as Shopify's relative cursors: an order edited after its page was read
    sorts after everything older, so the same read meets it again, at its new updated_at, on a later page."""
    page = shopify.Order.find(limit=50, status="any", order="updated_at asc", fields="id,updated_at")
    seen = list(page)
    target = seen[3].id
    order = shopify.Order.find(target)
    order.note = "edited while a read pages past it"
    assert order.save()
    pages = 1
    while page.has_next_page():
        page = page.next_page()
        seen += list(page)
        pages += 1
    store = client.sandbox.store.orders
    assert pages >= len(store) // 50  # several pages
    ids = [o.id for o in seen]
    assert ids.count(target) == 2 and ids.index(target) == 3 and ids[-1] == target
    assert seen[-1].updated_at == order.updated_at > seen[3].updated_at
    later = [(_epoch(o.attributes), o.id) for o in seen[4:]]
    assert later == sorted(later)  # keyset order held across every page boundary
    assert sorted(set(ids)) == sorted(o["id"] for o in store)  # nothing skipped


def test_default_status_is_open_like_shopify(client: Served) -> None:
    ids = {o.id for o in _all_pages(shopify.Order.find(limit=250, fields="id"))}
    store = client.sandbox.store.orders
    expected = {o["id"] for o in store if o["closed_at"] is None and o["cancelled_at"] is None}
    assert ids == expected
    assert 0 < len(ids) < len(store)
    assert shopify.Order.count() == len(expected)
    assert shopify.Order.count(status="any") == len(store)


def test_updated_at_min_is_inclusive_and_compares_instants(client: Served) -> None:
    store = client.sandbox.store
    shared = [o for o in store.orders if "updated_at_shared" in store.anomalies.get(f"order:{o['id']}", [])]
    pivot = min(_epoch(o) for o in shared)  # a timestamp several orders share
    # Ask in UTC although the store writes -04:00/-05:00: the filter must compare instants.
    as_utc = datetime.fromtimestamp(pivot, UTC).isoformat()
    found = shopify.Order.find(limit=50, status="any", updated_at_min=as_utc, fields="id,updated_at")
    got = {o.id for o in _all_pages(found)}
    expected = {o["id"] for o in store.orders if _epoch(o) >= pivot}
    assert got == expected
    assert sum(1 for o in store.orders if _epoch(o) == pivot) >= 2


def test_customer_find_and_count(client: Served) -> None:
    want = client.sandbox.store.customers[17]
    got = shopify.Customer.find(want["id"])
    assert got.id == want["id"]
    assert got.email == want["email"]
    assert got.updated_at == want["updated_at"]
    assert shopify.Customer.count() == len(client.sandbox.store.customers)
    with pytest.raises(ResourceNotFound):
        shopify.Customer.find(1)


def test_saving_a_customer_bumps_updated_at(client: Served) -> None:
    store = client.sandbox.store
    newest_before = max(_epoch(c) for c in store.customers + store.orders + store.products)
    after_the_second_of(newest_before)
    customer = shopify.Customer.find(store.customers[5]["id"])
    customer.note = "called about a refund"
    assert customer.save()
    assert parse(customer.updated_at) > newest_before
    stored = next(c for c in store.customers if c["id"] == customer.id)
    assert stored["note"] == "called about a refund"
    assert stored["updated_at"] == customer.updated_at
    since = shopify.Customer.find(limit=250, updated_at_min=customer.updated_at, fields="id")
    assert customer.id in {c.id for c in _all_pages(since)}


def test_creating_a_customer_with_a_taken_email_is_422(client: Served) -> None:
    taken = next(c["email"] for c in client.sandbox.store.customers if c["email"] and "@" in c["email"])
    dup = shopify.Customer({"first_name": "Dup", "email": taken})
    assert not dup.save()
    assert "has already been taken" in " ".join(dup.errors.full_messages())
    fresh = shopify.Customer({"first_name": "Neu", "last_name": "Kundin", "email": "neu.kundin@example.com"})
    assert fresh.save()
    assert fresh.id > max(c["id"] for c in client.sandbox.store.customers[:-1])


def test_bad_token_raises_unauthorized(client: Served) -> None:
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": "shpat_wrong"})
    with pytest.raises(UnauthorizedAccess):
        shopify.Order.find(limit=1)


@pytest.fixture
def tiny_bucket(tmp_path: Path) -> Iterator[Served]:
    # Its own state dir, so its own CA: the test points SSL_CERT_FILE at it.
    yield from _serve(tmp_path, customers=5, products=3, orders=5, bucket_size=2, leak_rate=0.5)


def test_full_bucket_gives_429_with_retry_after(tiny_bucket: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tiny_bucket.running.ca_file))
    shopify.ShopifyResource.set_site(tiny_bucket.api)
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": tiny_bucket.token})
    try:
        shopify.Customer.count()
        shopify.Customer.count()
        with pytest.raises(ClientError) as info:
            shopify.Customer.count()
    finally:
        shopify.ShopifyResource.clear_session()
    assert info.value.code == 429
    headers = {k.lower(): v for k, v in info.value.response.headers.items()}
    assert 0 < float(headers["retry-after"]) <= 2.0
    assert headers["x-shopify-shop-api-call-limit"] == "2/2"
    assert b"Exceeded 2 calls per second" in info.value.response.body


def test_writes_are_stamped_to_the_second_as_shopify_does() -> None:
    from ferry.sandbox.shopify.state import WriteClock

    wall = [1_796_584_100.2]
    clock = WriteClock(1_796_584_000, lambda: wall[0], same_second=True)
    assert clock.tick() == clock.tick() == 1_796_584_100  # two writes in one second share their stamp
    wall[0] = 1_796_584_099.0  # the wall clock stepped back: never behind the last write
    assert clock.tick() == 1_796_584_100
    wall[0] = 1_796_584_101.7
    assert clock.tick() == 1_796_584_101
    assert WriteClock(1_796_584_500, lambda: wall[0], same_second=True).tick() == 1_796_584_500  # nor the store
    ahead = WriteClock(1_796_584_000, lambda: wall[0])  # the other rule: a second per write, running ahead
    assert [ahead.tick() for _ in range(3)] == [1_796_584_101, 1_796_584_102, 1_796_584_103]
