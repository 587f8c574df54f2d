"""Bulk Operations end to end with gql and ShopifyAPI: run, poll, download the JSONL, and check its rows
(root objects, nested connection rows with ``__parentId``) against the REST records of the same store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import shopify
from gql import GraphQLRequest

from .conftest import Served, _serve, configure_graphql, gql_session, sandbox_http

RUN = """mutation($q: String!) { bulkOperationRunQuery(query: $q) {
  bulkOperation { id status } userErrors { field message code } } }"""
POLL = """query($id: ID!) { node(id: $id) { ... on BulkOperation {
  id status errorCode createdAt completedAt objectCount rootObjectCount fileSize url partialDataUrl query } } }"""
ORDERS_BULK = '''{ orders(query: "status:any", sortKey: ID) { edges { node {
  __typename id name updatedAt
  totalPriceSet { shopMoney { amount currencyCode } }
  customer { id }
  refunds { id }
  transactions { id kind }
  lineItems { edges { node { __typename id sku quantity } } }
} } } }'''


@pytest.fixture(scope="module", params=["plain", "sharded"])
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    extra: dict[str, Any] = {"shard_orders": 60, "spill": True} if request.param == "sharded" else {}
    yield from _serve(tmp_path_factory.mktemp("shopify-bulk"), customers=40, products=10, orders=120,
                      graphql_plan="plus", **extra)


@pytest.fixture
def session(shop: Served) -> Iterator[Any]:
    # ~0.5 ms an object: a run of a few hundred objects takes a visible fraction of a second.
    configure_graphql(shop, {"bulk": {"seconds_per_object": 0.0005, "page_size": 25, "fail_after_objects": None}})
    with gql_session(shop) as s:
        yield s


def gql_run(session: Any, query: str, **variables: Any) -> Any:
    return session.execute(GraphQLRequest(query, variable_values=variables or None))


def wait_until_done(poll: Any, timeout: float = 20.0) -> tuple[dict[str, Any], list[str]]:
    """Poll until the operation leaves CREATED/RUNNING/CANCELING; returns the last state and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = poll()
        seen.append(op["status"])
        if op["status"] not in ("CREATED", "RUNNING", "CANCELING"):
            return op, seen
        time.sleep(0.05)
    raise AssertionError(f"bulk operation still {seen[-1]} after {timeout}s")


def download(shop: Served, url: str) -> list[dict[str, Any]]:
    with sandbox_http(shop) as http:  # a pre-signed URL: no token
        resp = http.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/jsonl")
    return [json.loads(line) for line in resp.text.splitlines()]


def test_bulk_orders_end_to_end_with_gql(shop: Served, session: Any) -> None:
    started = gql_run(session, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]
    assert started["userErrors"] == [] and started["bulkOperation"]["status"] == "CREATED"
    op_id = started["bulkOperation"]["id"]
    assert op_id.startswith("gid://shopify/BulkOperation/")
    op, seen = wait_until_done(lambda: gql_run(session, POLL, id=op_id)["node"])
    assert op["status"] == "COMPLETED" and "RUNNING" in seen and op["errorCode"] is None
    rows = download(shop, op["url"])
    orders = sorted(shop.sandbox.store.orders, key=lambda o: o["id"])
    roots = [r for r in rows if "__parentId" not in r]
    children = [r for r in rows if "__parentId" in r]
    assert [r["id"] for r in roots] == [o["admin_graphql_api_id"] for o in orders]  # every order, id order
    assert (op["objectCount"], op["rootObjectCount"]) == (str(len(rows)), str(len(orders)))  # strings on the wire
    with sandbox_http(shop) as http:
        assert op["fileSize"] == str(len(http.get(op["url"]).content))
    by_id = {o["admin_graphql_api_id"]: o for o in orders}
    for root in roots[:40]:
        rest = by_id[root["id"]]
        assert root["__typename"] == "Order" and root["name"] == rest["name"]
        assert root["customer"] == (None if rest["customer"] is None else
                                    {"id": rest["customer"]["admin_graphql_api_id"]})
        assert [r["id"] for r in root["refunds"]] == [r["admin_graphql_api_id"] for r in rest["refunds"]]
        assert "lineItems" not in root  # a connection never appears inline
        assert isinstance(root["transactions"], list)  # a list field stays inline
    expected_children = [(li["admin_graphql_api_id"], o["admin_graphql_api_id"], li["sku"], li["quantity"])
                         for o in orders for li in o["line_items"]]
    assert [(c["id"], c["__parentId"], c["sku"], c["quantity"]) for c in children] == expected_children
    assert {c["__typename"] for c in children} == {"LineItem"}
    parent = None
    for row in rows:  # grouped (the 2025-07 default): each child right after its parent and its siblings
        if "__parentId" not in row:
            parent = row["id"]
        else:
            assert row["__parentId"] == parent
    query = parse_qs(urlsplit(op["url"]).query)
    bulk_number = op_id.rsplit("/", 1)[1]
    assert f'filename="bulk-{bulk_number}.jsonl"' in query["response-content-disposition"][0]
    assert {"Expires", "Signature", "GoogleAccessId"} <= set(query)


def test_bulk_products_with_shopifyapi_and_current_bulk_operation(shop: Served, session: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(shop.running.ca_file))
    shopify.ShopifyResource.set_site(f"{shop.url}/admin/api/2025-07")
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": shop.token})
    try:
        client = shopify.GraphQL()
        inner = ('{ products(query: "status:active") { edges { node { id title '
                 'variants { edges { node { id sku inventoryItem { id } } } } } } } }')
        started = json.loads(client.execute(RUN, variables={"q": inner}))["data"]["bulkOperationRunQuery"]
        assert started["userErrors"] == []
        current = "{ currentBulkOperation { id status objectCount rootObjectCount url } }"
        op, _ = wait_until_done(lambda: json.loads(client.execute(current))["data"]["currentBulkOperation"])
    finally:
        shopify.ShopifyResource.clear_session()
    assert op["id"] == started["bulkOperation"]["id"] and op["status"] == "COMPLETED"
    rows = download(shop, op["url"])
    active = sorted((p for p in shop.sandbox.store.products if p["status"] == "active"), key=lambda p: p["id"])
    expected: list[tuple[str, str | None]] = []
    for p in active:
        expected.append((p["admin_graphql_api_id"], None))
        expected += [(v["admin_graphql_api_id"], p["admin_graphql_api_id"]) for v in p["variants"]]
    assert [(r["id"], r.get("__parentId")) for r in rows] == expected
    variant_rows = [r for r in rows if "__parentId" in r]
    assert all(r["inventoryItem"]["id"].startswith("gid://shopify/InventoryItem/") for r in variant_rows)


def test_one_bulk_query_at_a_time_and_cancel(shop: Served, session: Any) -> None:
    configure_graphql(shop, {"bulk": {"seconds_per_object": 0.02}})  # slow enough to be caught running
    first = gql_run(session, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]["bulkOperation"]
    second = gql_run(session, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]
    assert second["bulkOperation"] is None
    assert second["userErrors"] == [{
        "field": None, "code": "OPERATION_IN_PROGRESS",
        "message": f"A bulk query operation for this app and shop is already in progress: {first['id']}."}]
    time.sleep(0.15)
    canceled = gql_run(session, """mutation($id: ID!) { bulkOperationCancel(id: $id) {
        bulkOperation { id status } userErrors { field message } } }""", id=first["id"])["bulkOperationCancel"]
    assert canceled == {"bulkOperation": {"id": first["id"], "status": "CANCELING"}, "userErrors": []}
    op, _ = wait_until_done(lambda: gql_run(session, POLL, id=first["id"])["node"])
    assert op["status"] == "CANCELED" and op["url"] is None
    partial = download(shop, op["partialDataUrl"])
    assert 0 < len(partial) == int(op["objectCount"]) < 200
    configure_graphql(shop, {"bulk": {"seconds_per_object": 0.0005}})
    again = gql_run(session, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]
    assert again["userErrors"] == []  # free again once the other finished
    wait_until_done(lambda: gql_run(session, POLL, id=again["bulkOperation"]["id"])["node"])


def test_from_2026_01_five_bulk_queries_run_at_once_started_in_one_request(shop: Served) -> None:
    """shopify.dev bulk-operations/queries: "In API versions 2026-01 and higher apps can run up to five bulk
    query operations at a time per shop" (one before). Five aliased mutations in one request start five; a
    sixth waits for a free slot; one ``nodes(ids:)`` query polls them all."""
    configure_graphql(shop, {"bulk": {"seconds_per_object": 0.02}})  # slow enough to be caught running
    run_many = "mutation(" + ", ".join(f"$q{i}: String!" for i in range(5)) + ") { " + " ".join(
        f"b{i}: bulkOperationRunQuery(query: $q{i}) {{ bulkOperation {{ id status }} userErrors {{ code message }} }}"
        for i in range(5)) + " }"
    try:
        with gql_session(shop, "2026-01") as s:
            started = gql_run(s, run_many, **{f"q{i}": ORDERS_BULK for i in range(5)})
            ids = [started[f"b{i}"]["bulkOperation"]["id"] for i in range(5)]
            assert all(started[f"b{i}"]["userErrors"] == [] for i in range(5)) and len(set(ids)) == 5
            sixth = gql_run(s, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]
            assert sixth["bulkOperation"] is None and sixth["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
            configure_graphql(shop, {"bulk": {"seconds_per_object": 0.0005}})
            polls = """query($ids: [ID!]!) { nodes(ids: $ids) { ... on BulkOperation { id status url } } }"""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                views = gql_run(s, polls, ids=ids)["nodes"]
                if all(v["status"] == "COMPLETED" for v in views):
                    break
                time.sleep(0.1)
            assert [v["id"] for v in views] == ids and all(v["url"] for v in views)
        with gql_session(shop, "2025-10") as s:  # before 2026-01: one at a time
            configure_graphql(shop, {"bulk": {"seconds_per_object": 0.02}})
            first = gql_run(s, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]["bulkOperation"]
            second = gql_run(s, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]
            assert second["userErrors"][0]["message"].endswith(f"already in progress: {first['id']}.")
            gql_run(s, """mutation($id: ID!) { bulkOperationCancel(id: $id) { userErrors { message } } }""",
                    id=first["id"])
            wait_until_done(lambda: gql_run(s, POLL, id=first["id"])["node"])
    finally:
        configure_graphql(shop, {"bulk": {"seconds_per_object": 0.0005}})


def test_from_2026_01_bulk_operations_lists_the_apps_operations_by_status_newest_first(shop: Served) -> None:
    """``bulkOperations(query:)`` (API 2026-01+; shopify.dev changelog "New queries for bulk operations"): the
    app's operations filtered by ``status`` and ``operation_type``, newest first; ``bulkOperation(id:)`` one of
    them. Before 2026-01 neither field exists (``currentBulkOperation`` names the latest)."""
    from gql.transport.exceptions import TransportQueryError

    listed = """query($q: String) { bulkOperations(first: 10, query: $q) { nodes { id status type query } } }"""
    running = "operation_type:query AND (status:created OR status:running OR status:canceling)"
    configure_graphql(shop, {"bulk": {"seconds_per_object": 0.02}})  # slow enough to be caught running
    try:
        with gql_session(shop, "2026-01") as s:
            ids = [gql_run(s, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]["bulkOperation"]["id"] for _ in range(2)]
            active = gql_run(s, listed, q=running)["bulkOperations"]["nodes"]
            assert [op["id"] for op in active] == ids[::-1]  # newest first
            assert all(op["type"] == "QUERY" and op["query"] == ORDERS_BULK for op in active)
            assert gql_run(s, listed, q="status:completed AND operation_type:mutation")["bulkOperations"] == {
                "nodes": []}
            for job in ids:
                gql_run(s, """mutation($id: ID!) { bulkOperationCancel(id: $id) { userErrors { message } } }""",
                        id=job)
                wait_until_done(lambda job=job: gql_run(s, POLL, id=job)["node"])  # type: ignore[misc]
            assert gql_run(s, listed, q=running)["bulkOperations"]["nodes"] == []
            canceled = {op["id"] for op in gql_run(s, listed, q="status:canceled")["bulkOperations"]["nodes"]}
            assert set(ids) <= canceled
            one = gql_run(s, "query($id: ID!) { bulkOperation(id: $id) { id status } }", id=ids[0])
            assert one["bulkOperation"] == {"id": ids[0], "status": "CANCELED"}
        with gql_session(shop, "2025-10") as s, pytest.raises(TransportQueryError) as refused:
            gql_run(s, listed, q=running)
        assert "Field 'bulkOperations' doesn't exist on type 'QueryRoot'" in str(refused.value)
    finally:
        configure_graphql(shop, {"bulk": {"seconds_per_object": 0.0005}})


@pytest.mark.parametrize(("inner", "message"), [
    ("{ shop { name } }", "Bulk queries must contain at least one connection."),
    ('{ node(id: "gid://shopify/Order/1") { id } }', "Bulk queries must contain at least one connection."),
    ("{ orders { edges { node { name lineItems { edges { node { id } } } } } } }",
     "The parent 'node' field for a nested connection must select the 'id' field. "
     "Connection fields without 'id': lineItems."),
    ("{ orders { edges { node { id refunds { refundLineItems { edges { node { quantity } } } } } } } }",
     "Queries that contain a connection field within a list field are not currently supported."),
    ("{ orders { edges { node { id nope } } } }", "Invalid bulk query: Field 'nope' doesn't exist on type 'Order'"),
    ("{ orders { edges { node { id } } } customers { edges { node { id } } } }",
     "Bulk queries must contain exactly one top-level field."),
])
def test_invalid_bulk_queries_get_user_errors(shop: Served, session: Any, inner: str, message: str) -> None:
    payload = gql_run(session, RUN, q=inner)["bulkOperationRunQuery"]
    assert payload == {"bulkOperation": None, "userErrors": [{"field": ["query"], "message": message,
                                                              "code": "INVALID"}]}


def test_a_failed_run_offers_its_partial_data_and_records_the_finish_event(shop: Served, session: Any) -> None:
    configure_graphql(shop, {"bulk": {"fail_after_objects": 30}})
    started = gql_run(session, RUN, q=ORDERS_BULK)["bulkOperationRunQuery"]["bulkOperation"]
    op, _ = wait_until_done(lambda: gql_run(session, POLL, id=started["id"])["node"])
    assert (op["status"], op["errorCode"], op["url"]) == ("FAILED", "INTERNAL_SERVER_ERROR", None)
    partial = download(shop, op["partialDataUrl"])
    assert len(partial) >= 30 and "__parentId" not in partial[0]
    with sandbox_http(shop) as http:
        events = http.get(f"{shop.url}/__sandbox/events").json()["events"]
        tampered = op["partialDataUrl"].replace("Signature=", "Signature=x")
        assert http.get(tampered).status_code == 403  # the signature is the only credential
    finish = [e for e in events if e["payload"]["admin_graphql_api_id"] == started["id"]]
    assert [e["topic"] for e in finish] == ["bulk_operations/finish"]
    assert finish[0]["payload"] | {"created_at": None} == {
        "admin_graphql_api_id": started["id"], "completed_at": None, "created_at": None,
        "error_code": "internal_server_error", "status": "failed", "type": "query"}


def test_ungrouped_output_puts_each_page_of_parents_before_their_children(shop: Served, session: Any) -> None:
    mutation = """mutation($q: String!) { bulkOperationRunQuery(query: $q, groupObjects: false) {
        bulkOperation { id } userErrors { message } } }"""
    started = gql_run(session, mutation, q=ORDERS_BULK)["bulkOperationRunQuery"]["bulkOperation"]
    op, _ = wait_until_done(lambda: gql_run(session, POLL, id=started["id"])["node"])
    rows = download(shop, op["url"])
    seen_parents: set[str] = set()
    for row in rows:  # children still come after their parents, not necessarily right after
        if "__parentId" in row:
            assert row["__parentId"] in seen_parents
        else:
            seen_parents.add(row["id"])
    assert rows[1].get("__parentId") is None  # the second line is the second order, not a line item
    assert len(rows) == int(op["objectCount"])


NAMED = '''{ orders(sortKey: ID) { edges { node { id customer { id email displayName }
  lineItems { edges { node { id product { id legacyResourceId title } variant { id sku displayName } } } } } } } }'''


def _named_records(shop: Served, session: Any) -> dict[str, dict[str, Any]]:
    """The customers, products and variants an orders bulk run names, by GID, as the result file gives them."""
    started = gql_run(session, RUN, q=NAMED)["bulkOperationRunQuery"]
    op, _ = wait_until_done(lambda: gql_run(session, POLL, id=started["bulkOperation"]["id"])["node"])
    assert op["status"] == "COMPLETED", op
    named: dict[str, dict[str, Any]] = {}
    for row in download(shop, op["url"]):
        for kind in ("customer", "product", "variant"):
            if row.get(kind):
                named[row[kind]["id"]] = row[kind]
    return named


def test_the_records_an_order_names_are_read_whole_when_asked_beyond_their_id(shop: Served, session: Any) -> None:
    # An order's customer and a line item's product and variant are looked up only when a field beyond the id
    # is asked (their record is not decoded for `{ id }`): asked, they are the store's records, and a REST
    # write to a product shows in the next run.
    table = shop.sandbox.state.table
    named = _named_records(shop, session)
    customers = [v for k, v in named.items() if "/Customer/" in k]
    products = [v for k, v in named.items() if "/Product/" in k]
    variants = [v for k, v in named.items() if "/ProductVariant/" in k]
    assert customers and products and variants
    for c in customers:
        rec = table("customers").peek(int(c["id"].rsplit("/", 1)[1]))
        assert rec is not None and c["email"] == rec.get("email")
    for p in products:
        rec = table("products").peek(int(p["legacyResourceId"]))
        assert rec is not None and p["title"] == rec["title"]
    by_variant = {v["id"]: (p, v) for p in table("products").records for v in p.get("variants") or ()}
    for v in variants:
        product, variant = by_variant[int(v["id"].rsplit("/", 1)[1])]
        assert v["sku"] == variant.get("sku") and v["displayName"] == f"{product['title']} - {variant['title']}"

    pid = int(products[0]["legacyResourceId"])
    with sandbox_http(shop) as http:
        resp = http.put(f"{shop.api}/products/{pid}.json", headers={"X-Shopify-Access-Token": shop.token},
                        json={"product": {"id": pid, "title": "Renamed mid-test"}})
    assert resp.status_code == 200, resp.text
    again = _named_records(shop, session)
    assert again[products[0]["id"]]["title"] == "Renamed mid-test"
    assert all(v["displayName"].startswith("Renamed mid-test - ") for k, v in again.items()
               if "/ProductVariant/" in k and by_variant[int(k.rsplit("/", 1)[1])][0]["id"] == pid)
