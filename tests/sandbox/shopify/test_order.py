"""Lists in updated_at order: the ``order`` parameter, keyset cursors over (updated_at, id), both directions.

Against the served sandbox (plain and sharded/compact, see conftest) with a plain HTTP client, and the table's
updated_at index on its own: an edited record must move, whatever the storage.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from ferry.sandbox.shopify.compact import CompactRecords
from ferry.sandbox.shopify.generator import generate_store
from ferry.sandbox.shopify.tables import Table
from ferry.sandbox.shopify.times import fmt, parse

from .conftest import Served
from .test_wire import _links

ALL = {"status": "any", "fields": "id,updated_at"}


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=str(served.running.ca_file))
    with httpx.Client(base_url=served.api, verify=ctx, headers={"X-Shopify-Access-Token": served.token},
                      timeout=10) as client:
        yield client


def _key(rec: dict[str, Any]) -> tuple[int, int]:
    return parse(rec["updated_at"]), rec["id"]


def _walk(http: httpx.Client, url: str, params: dict[str, Any] | None, rel: str = "next") -> list[list[int]]:
    """Every page from ``url`` following ``rel`` links: the ids of each page."""
    pages: list[list[int]] = []
    next_url: str | None = url
    while next_url:
        r = http.get(next_url, params=params)
        assert r.status_code == 200, r.text
        params = None
        pages.append([o["id"] for o in r.json()["orders"]])
        next_url = _links(r).get(rel)
    return pages


def _store_orders(served: Served) -> list[dict[str, Any]]:
    return [{"id": o["id"], "updated_at": o["updated_at"]} for o in served.sandbox.store.orders]


@pytest.mark.parametrize("spelled", ["updated_at+asc", "updated_at%20asc", "UPDATED_AT++ASC", "updated_at"])
def test_updated_at_asc_is_read_however_the_space_is_encoded(http: httpx.Client, served: Served, spelled: str) -> None:
    r = http.get(f"/orders.json?status=any&limit=250&fields=id,updated_at&order={spelled}")
    assert r.status_code == 200, r.text
    got = [(parse(o["updated_at"]), o["id"]) for o in r.json()["orders"]]
    assert got == sorted(_key(o) for o in _store_orders(served))[:250]


@pytest.mark.parametrize("order", ["title asc", "created_at asc", "updated_at sideways", "updated_at asc id", "id,asc"])
def test_an_order_the_sandbox_cannot_sort_by_is_400_naming_the_parameter(http: httpx.Client, order: str) -> None:
    r = http.get("/orders.json", params={"status": "any", "order": order})
    assert r.status_code == 400
    assert r.json() == {"errors": {"order": "Invalid value."}}


@pytest.mark.parametrize("resource", ["customers", "products", "orders"])
def test_all_pages_in_updated_at_order_are_the_store_sorted_by_updated_at_then_id(
    http: httpx.Client, served: Served, resource: str
) -> None:
    params: dict[str, Any] | None = {"limit": 40, "order": "updated_at asc", "fields": "id,updated_at"}
    if resource == "orders":
        params = {**(params or {}), "status": "any"}
    seen: list[dict[str, Any]] = []
    url: str | None = f"/{resource}.json"
    while url:
        r = http.get(url, params=params)
        params = None  # the next link carries everything (httpx would replace its query with an empty dict's)
        seen += r.json()[resource]
        url = _links(r).get("next")
    expected = sorted(_key(r) for r in served.sandbox.store.records(resource))
    assert [_key(r) for r in seen] == expected


@pytest.mark.parametrize("order", ["updated_at asc", "updated_at desc", "id asc", "id desc"])
def test_previous_links_walk_back_the_same_pages(http: httpx.Client, served: Served, order: str) -> None:
    forward = _walk(http, "/orders.json", {**ALL, "limit": 70, "order": order})
    assert len(forward) >= 5
    records = _store_orders(served)
    field, direction = order.split()
    ranked = sorted(records, key=_key if field == "updated_at" else (lambda o: (o["id"], 0)),
                    reverse=direction == "desc")
    assert [i for page in forward for i in page] == [o["id"] for o in ranked]
    # From the last page back to the first through rel="previous": the same pages, in reverse.
    r = http.get("/orders.json", params={**ALL, "limit": 70, "order": order})
    last_url = None
    while (nxt := _links(r).get("next")) is not None:
        last_url = nxt
        r = http.get(nxt)
    assert last_url is not None
    backward = _walk(http, last_url, None, rel="previous")
    assert backward == forward[::-1][: len(backward)] and len(backward) == len(forward)


def test_updated_at_min_in_updated_at_order_starts_at_the_bound(http: httpx.Client, served: Served) -> None:
    keys = sorted(_key(o) for o in _store_orders(served))
    lo = keys[len(keys) // 2][0]
    pages = _walk(http, "/orders.json", {**ALL, "limit": 50, "order": "updated_at asc",
                                         "updated_at_min": fmt(lo, -300)})
    assert [i for page in pages for i in page] == [rid for v, rid in keys if v >= lo]


def test_order_next_to_page_info_is_400_as_any_filter(http: httpx.Client) -> None:
    r = http.get("/orders.json", params={**ALL, "limit": 5, "order": "updated_at asc"})
    nxt = _links(r)["next"]
    bad = http.get(httpx.URL(nxt).copy_add_param("order", "updated_at asc"))
    assert bad.status_code == 400 and "page_info" in bad.json()["errors"]


def test_a_page_info_without_an_order_still_means_id_order(http: httpx.Client, served: Served) -> None:
    ids = sorted(o["id"] for o in served.sandbox.store.orders)
    # As the sandbox wrote tokens before it knew orders: no "o", no "v".
    doc = {"r": "orders", "f": {}, "d": "next", "b": ids[9]}
    token = base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()
    r = http.get("/orders.json", params={"page_info": token, "limit": 5, "fields": "id"})
    assert [o["id"] for o in r.json()["orders"]] == ids[10:15]
    # A token naming an updated_at order must carry the boundary's updated_at.
    doc["o"] = "updated_at asc"
    token = base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()
    assert http.get("/orders.json", params={"page_info": token}).status_code == 400


# ---------------------------------------------------------------------- the table's index


@pytest.fixture(params=["plain", "compact"])
def table(request: pytest.FixtureRequest) -> Table:
    orders = generate_store(seed=4, customers=40, products=8, orders=120).orders
    records: Any = CompactRecords(sorted(orders, key=lambda r: r["id"])) if request.param == "compact" else orders
    return Table("orders", records)


def _in_order(table: Table) -> list[int]:
    return [table.ids[p] for p in table.after("updated_at asc", None, None, len(table) + 1)]


def _expected(table: Table) -> list[int]:
    return [rid for _, rid in sorted(zip(table.updated, table.ids, strict=True))]


def test_an_edited_record_moves_in_the_updated_at_index(table: Table) -> None:
    assert _in_order(table) == _expected(table)
    rid = _in_order(table)[0]
    rec = table.get(rid)
    assert rec is not None
    rec["updated_at"] = fmt(max(table.updated) + 10, -300)
    table.touched(rid)
    assert _in_order(table)[-1] == rid
    assert _in_order(table) == _expected(table)
    # A boundary before the edit, as a cursor saved on an earlier page holds it: the record is after it now.
    bound = (table.updated[0] - 1, 0)
    assert table.ids[table.after("updated_at asc", None, (max(table.updated) - 1, 0), 1)[0]] == rid
    assert rid in [table.ids[p] for p in table.after("updated_at asc", None, bound, len(table))]


def test_appends_and_deletes_keep_the_index_true(table: Table) -> None:
    assert _in_order(table) == _expected(table)
    newest = generate_store(seed=4, customers=40, products=8, orders=120).orders[0] | {
        "id": table.max_id() + 1, "updated_at": fmt(min(table.updated) - 5, -300)}
    table.append(newest)
    assert _in_order(table)[0] == newest["id"]  # the oldest updated_at sorts first, whatever its id
    gone = _in_order(table)[7]
    table.remove(gone)
    assert gone not in _in_order(table)
    assert _in_order(table) == _expected(table)
    table.remove(table.ids[0])
    rid = table.ids[3]
    rec = table.get(rid)
    assert rec is not None
    rec["updated_at"] = fmt(max(table.updated) + 1, -300)
    table.touched(rid)
    assert _in_order(table) == _expected(table) and _in_order(table)[-1] == rid


def test_descending_pages_are_the_ascending_ones_reversed(table: Table) -> None:
    asc = table.after("updated_at asc", None, None, len(table))
    desc = table.after("updated_at desc", None, None, len(table))
    assert desc == asc[::-1]
    middle = table.key("updated_at asc", asc[50])
    assert table.before("updated_at asc", None, middle, 5) == asc[45:50]
    assert table.after("updated_at desc", None, middle, 5) == asc[45:50][::-1]
    assert table.before("updated_at desc", None, middle, 5) == asc[51:56][::-1]
