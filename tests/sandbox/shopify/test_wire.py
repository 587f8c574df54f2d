"""Wire format, checked with a plain HTTP client: headers, Link pagination, errors, writes, admin routes."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ferry.sandbox.shopify.times import parse

from .conftest import Served, after_the_second_of

LINK_PART = re.compile(
    r'^<(https://127\.0\.0\.1:\d+/admin/api/2025-07/[a-z]+\.json\?[^<>, ]+)>; rel="(next|previous)"$'
)


def _ctx(served: Served) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(served.running.ca_file))


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.api, verify=_ctx(served),
                      headers={"X-Shopify-Access-Token": served.token}, timeout=10) as client:
        yield client


def _links(response: httpx.Response) -> dict[str, str]:
    header = response.headers.get("link")
    if not header:
        return {}
    out = {}
    for part in header.split(", "):  # exactly how ShopifyAPI splits it
        m = LINK_PART.match(part)
        assert m, part
        out[m[2]] = m[1]
    return out


def test_headers_on_every_api_response(http: httpx.Client) -> None:
    r = http.get("/customers.json", params={"limit": 1})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-shopify-api-version"] == "2025-07"
    used, size = r.headers["x-shopify-shop-api-call-limit"].split("/")
    assert 1 <= int(used) <= int(size)
    other = http.get(str(http.base_url).replace("2025-07", "2024-10") + "/customers/count.json")
    assert other.headers["x-shopify-api-version"] == "2024-10"


def test_link_pagination_forward_and_back(http: httpx.Client, served: Served) -> None:
    first = http.get("/customers.json", params={"limit": 100, "fields": "id,email"})
    assert set(first.json()["customers"][0]) == {"id", "email"}
    assert "previous" not in _links(first)
    second = http.get(_links(first)["next"])
    links = _links(second)
    assert set(links) == {"previous", "next"}
    assert "fields=id%2Cemail" in links["next"] and "limit=100" in links["next"]
    back = http.get(links["previous"]).json()["customers"]
    assert [c["id"] for c in back] == [c["id"] for c in first.json()["customers"]]
    ids = [c["id"] for c in first.json()["customers"] + second.json()["customers"]]
    assert ids == sorted(c["id"] for c in served.sandbox.store.customers)[:200]


def test_shared_updated_at_survives_page_boundaries(http: httpx.Client, served: Served) -> None:
    """Orders sharing one updated_at instant span pages; an inclusive updated_at_min cursor sees them all."""
    store = served.sandbox.store
    by_instant: dict[int, list[int]] = {}
    for o in store.orders:
        by_instant.setdefault(parse(o["updated_at"]), []).append(o["id"])
    instant, ids = max(by_instant.items(), key=lambda kv: len(kv[1]))
    assert len(ids) > 25
    seen: list[int] = []
    url: str | None = "/orders.json"
    params: dict[str, Any] | None = {"status": "any", "limit": 25, "updated_at_min": _iso(instant),
                                     "updated_at_max": _iso(instant), "fields": "id,updated_at"}
    while url:
        r = http.get(url, params=params)
        params = None
        seen += [o["id"] for o in r.json()["orders"]]
        url = _links(r).get("next")
    assert sorted(seen) == sorted(ids)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 251}, "limit"), ({"limit": 0}, "limit"), ({"limit": "x"}, "limit"),
    ({"updated_at_min": "yesterday"}, "updated_at_min"), ({"status": "weird"}, "status"),
])
def test_bad_list_params_are_400(http: httpx.Client, params: dict[str, Any], field: str) -> None:
    r = http.get("/orders.json", params=params)
    assert r.status_code == 400
    assert field in r.json()["errors"]


def test_page_info_admits_only_limit_and_fields(http: httpx.Client) -> None:
    nxt = _links(http.get("/orders.json", params={"limit": 5, "status": "any"}))["next"]
    assert http.get(nxt, params={"limit": 7}).status_code == 200  # limit may change
    bad = http.get(httpx.URL(nxt).copy_add_param("status", "any"))
    assert bad.status_code == 400 and "page_info" in bad.json()["errors"]
    assert http.get("/orders.json", params={"page_info": "garbage!"}).status_code == 400


def test_errors_have_shopify_bodies(http: httpx.Client, served: Served) -> None:
    assert http.get("/orders/123.json").json() == {"errors": "Not Found"}
    assert http.get("/orders/123.json").status_code == 404
    r = http.get("/orders.json", headers={"X-Shopify-Access-Token": "nope"})
    assert r.status_code == 401
    assert r.json() == {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
    no_token = httpx.get(f"{served.api}/orders.json", verify=_ctx(served))
    assert no_token.status_code == 401


def test_children_and_single_records(http: httpx.Client, served: Served) -> None:
    store = served.sandbox.store
    refunded = next(o for o in store.orders if o["refunds"])
    refunds = http.get(f"/orders/{refunded['id']}/refunds.json").json()["refunds"]
    assert refunds[0]["transactions"][0]["kind"] == "refund"
    product = store.products[0]
    assert http.get(f"/products/{product['id']}/variants.json").json()["variants"] == product["variants"]
    assert http.get(f"/products/{product['id']}.json", params={"fields": "id,title"}).json() == {
        "product": {"id": product["id"], "title": product["title"]}}


def test_writes(http: httpx.Client, served: Served) -> None:
    store = served.sandbox.store
    taken = next(c["email"] for c in store.customers if c["email"] and "@" in c["email"][1:])
    dup = http.post("/customers.json", json={"customer": {"email": taken}})
    assert dup.status_code == 422 and dup.json() == {"errors": {"email": ["has already been taken"]}}
    assert http.post("/customers.json", json={"customer": {"note": "x"}}).status_code == 422
    assert http.put(f"/customers/{store.customers[0]['id']}.json", json={"customer": {"email": "bob@@x"}}
                    ).status_code == 422
    assert http.put("/customers/1.json", json={"customer": {"note": "x"}}).status_code == 404
    variant = next(v for p in store.products if p["status"] == "active" for v in p["variants"])
    created = http.post("/orders.json", json={"order": {
        "line_items": [{"variant_id": variant["id"], "quantity": 2}, {"title": "Engraving", "price": "5.00"}],
        "customer": {"id": store.customers[1]["id"]}, "financial_status": "pending"}})
    assert created.status_code == 201, created.text
    order = created.json()["order"]
    assert order["line_items"][1]["variant_id"] is None and order["financial_status"] == "pending"
    assert http.get(f"/orders/{order['id']}.json").json()["order"]["id"] == order["id"]
    after_the_second_of(order["updated_at"])
    edited = http.put(f"/orders/{order['id']}.json", json={"order": {"note": "edited", "total_price": "0.00"}})
    assert edited.json()["order"]["note"] == "edited"
    assert edited.json()["order"]["total_price"] == order["total_price"]  # read-only fields are ignored
    assert parse(edited.json()["order"]["updated_at"]) > parse(order["updated_at"])
    product = store.products[1]
    renamed = http.put(f"/products/{product['id']}.json", json={"product": {"title": "Renamed"}}).json()["product"]
    assert renamed["title"] == "Renamed"
    assert http.put(f"/products/{product['id']}.json", json={"product": {"title": ""}}).status_code == 422


def test_admin_routes(http: httpx.Client, served: Served) -> None:
    http.get("/orders.json", params={"limit": 1})
    with httpx.Client(base_url=served.url, verify=_ctx(served)) as admin:  # no token: outside the API
        stats = admin.get("/__sandbox/stats").json()
        products = admin.get("/__sandbox/records/products").json()
        anomalies = admin.get("/__sandbox/anomalies").json()
    assert stats["api_calls"] >= 1
    assert stats["by_endpoint"]["GET /admin/api/{version}/orders.json"] >= 1
    assert stats["records"]["customers"] == len(served.sandbox.store.customers)
    assert len(products) == len(served.sandbox.store.products)
    assert anomalies["counts"]["guest_checkout"] >= 1
