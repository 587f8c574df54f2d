"""The GraphQL cost model and throttling, seen by ShopifyAPI and gql: ``extensions.cost``, the points bucket,
``THROTTLED`` (HTTP 200 by default, 429 when asked), ``MAX_COST_EXCEEDED``, page sizes over 250, and the fault
gate in front of the GraphQL endpoint."""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import shopify
from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError

from .conftest import Served, _serve, configure_graphql, gql_session, graphql_url, sandbox_http


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # A 2-call REST bucket: GraphQL calls must not touch it.
    yield from _serve(tmp_path_factory.mktemp("shopify-gql-cost"), customers=40, products=8, orders=60,
                      bucket_size=2, leak_rate=0.5)


@pytest.fixture
def session(shop: Served) -> Iterator[Any]:
    configure_graphql(shop, {"plan": "standard", "throttle_status": 200})  # a full, fresh bucket per test
    with gql_session(shop) as s:
        yield s


@pytest.fixture
def shopify_graphql(shop: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[shopify.GraphQL]:
    monkeypatch.setenv("SSL_CERT_FILE", str(shop.running.ca_file))
    shopify.ShopifyResource.set_site(f"{shop.url}/admin/api/2025-07")
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": shop.token})
    yield shopify.GraphQL()
    shopify.ShopifyResource.clear_session()


def cost_of(session: Any, query: str) -> dict[str, Any]:
    result = session.execute(GraphQLRequest(query), get_execution_result=True)
    return dict(result.extensions["cost"])


def test_cost_extensions_follow_shopifys_rules(shop: Served, session: Any) -> None:
    flat = cost_of(session, "{ orders(first: 50) { edges { cursor node { id name } } pageInfo { hasNextPage } } }")
    assert flat["requestedQueryCost"] == 2 + 50 * 1  # connection 2 + first x one order object (scalars free)
    assert flat["actualQueryCost"] == 2 + 50  # 60 orders: a full page
    status = flat["throttleStatus"]
    assert status["maximumAvailable"] == 2000.0 and status["restoreRate"] == 100.0
    assert 2000 - 52 <= status["currentlyAvailable"] < 2000
    nested = cost_of(session, """{ orders(first: 10) { nodes { id totalPriceSet { shopMoney { amount } }
                                   lineItems(first: 5) { nodes { id } } } } }""")
    # 2 + 10 x (order 1 + money bag 1 + MoneyV2 1 + (2 + 5 x line item 1))
    assert nested["requestedQueryCost"] == 2 + 10 * (1 + 1 + 1 + (2 + 5))
    assert nested["actualQueryCost"] < nested["requestedQueryCost"]  # orders have fewer than 5 lines on average
    few = cost_of(session, '{ orders(first: 100, query: "id:<1") { nodes { id } } }')
    assert (few["requestedQueryCost"], few["actualQueryCost"]) == (102, 2)  # an empty page costs the connection
    ids = [o["admin_graphql_api_id"] for o in shop.sandbox.store.orders[:3]]
    by_ids = cost_of(session, f"{{ nodes(ids: {json.dumps(ids)}) {{ id }} }}")
    assert by_ids["requestedQueryCost"] == by_ids["actualQueryCost"] == 3  # one object per id
    mutation = cost_of(session, """mutation { webhookSubscriptionCreate(topic: ORDERS_CREATE,
        webhookSubscription: {callbackUrl: "https://127.0.0.1:9/cost"}) { userErrors { message } } }""")
    assert mutation["requestedQueryCost"] == mutation["actualQueryCost"] == 10


def test_wire_types_of_throttle_status(shop: Served, session: Any) -> None:
    resp = requests.post(graphql_url(shop), json={"query": "{ shop { name } }", "variables": None,
                                                  "operationName": None},
                         headers={"X-Shopify-Access-Token": shop.token}, verify=str(shop.running.ca_file), timeout=10)
    assert b'"maximumAvailable":2000.0' in resp.content and b'"restoreRate":100.0' in resp.content
    assert isinstance(resp.json()["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"], int)
    assert "x-shopify-shop-api-call-limit" not in resp.headers  # the REST bucket is not GraphQL's limit
    assert resp.headers["x-shopify-api-version"] == "2025-07"


def test_max_cost_exceeded_is_refused_before_running_and_charges_nothing(shop: Served, session: Any) -> None:
    query = "{ orders(first: 250) { nodes { id lineItems(first: 250) { nodes { id } } } } }"
    with pytest.raises(TransportQueryError) as info:
        session.execute(GraphQLRequest(query))
    (error,) = info.value.errors or []
    expected = 2 + 250 * (1 + 2 + 250)
    assert error["extensions"] == {"code": "MAX_COST_EXCEEDED", "cost": expected, "maxCost": 1000,
                                   "documentation": "https://shopify.dev/api/usage/rate-limits"}
    assert error["message"].startswith(
        f"Query cost is {expected}, which exceeds the single query max cost limit (1000).")
    assert info.value.data is None
    cost = info.value.extensions["cost"]  # type: ignore[index]
    assert cost["actualQueryCost"] is None and cost["throttleStatus"]["currentlyAvailable"] >= 1999


def test_page_sizes_over_250_and_missing_sizes_are_refused(shop: Served, session: Any) -> None:
    for query, message in (("{ customers(first: 251) { nodes { id } } }", "has an invalid value (251)"),
                           ("{ customers { nodes { id } } }", "you must provide one of first or last")):
        with pytest.raises(TransportQueryError) as info:
            session.execute(GraphQLRequest(query))
        (error,) = info.value.errors or []
        assert message in error["message"] and error["path"] == ["customers"]


def test_throttled_with_http_200_then_restored(shop: Served, shopify_graphql: shopify.GraphQL) -> None:
    configure_graphql(shop, {"maximum_available": 120, "restore_rate": 50, "throttle_status": 200})
    query = "{ orders(first: 50) { nodes { id } } }"  # 52 points
    first = json.loads(shopify_graphql.execute(query))
    second = json.loads(shopify_graphql.execute(query))
    third = json.loads(shopify_graphql.execute(query))  # 120 - 104 (+ a little restored) < 52
    assert "errors" not in first and "errors" not in second
    assert third["errors"] == [{"message": "Throttled", "extensions": {
        "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}]
    assert "data" not in third
    cost = third["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 52 and cost["actualQueryCost"] is None
    status = cost["throttleStatus"]
    assert status["currentlyAvailable"] < 52 and status["maximumAvailable"] == 120.0
    # Back off as a client should: (requested - available) / restoreRate seconds.
    time.sleep((52 - status["currentlyAvailable"]) / status["restoreRate"] + 0.05)
    assert "errors" not in json.loads(shopify_graphql.execute(query))
    with sandbox_http(shop) as http:
        assert http.get(f"{shop.url}/__sandbox/graphql").json()["throttled"] >= 1


def test_throttled_as_http_429_when_configured(shop: Served, shopify_graphql: shopify.GraphQL, session: Any) -> None:
    configure_graphql(shop, {"maximum_available": 60, "restore_rate": 1, "throttle_status": 429})
    query = "{ orders(first: 50) { nodes { id } } }"
    json.loads(shopify_graphql.execute(query))
    with pytest.raises(urllib.error.HTTPError) as http_error:  # ShopifyAPI re-raises HTTP errors
        shopify_graphql.execute(query)
    assert http_error.value.code == 429
    with pytest.raises(TransportQueryError) as info:  # gql reads the GraphQL body whatever the status
        session.execute(GraphQLRequest(query))
    assert (info.value.errors or [{}])[0]["extensions"]["code"] == "THROTTLED"


def test_plans_size_the_bucket(shop: Served, session: Any) -> None:
    for plan, maximum, rate in (("advanced", 4000.0, 200.0), ("plus", 20000.0, 1000.0), ("standard", 2000.0, 100.0)):
        configure_graphql(shop, {"plan": plan})
        status = cost_of(session, "{ shop { name } }")["throttleStatus"]
        assert (status["maximumAvailable"], status["restoreRate"]) == (maximum, rate)
    with sandbox_http(shop) as http:
        assert http.patch(f"{shop.url}/__sandbox/graphql", json={"plan": "gold"}).status_code == 400


def test_faults_apply_to_the_graphql_endpoint(shop: Served, session: Any) -> None:
    with sandbox_http(shop) as http:
        http.post(f"{shop.url}/__sandbox/faults", json={"rules": [{"kind": "503", "path": "graphql.json", "count": 1}]})
        try:
            with pytest.raises(TransportQueryError) as info:  # gql reads the body whatever the status
                session.execute(GraphQLRequest("{ shop { name } }"))
            assert info.value.errors == [{"message": "Service Unavailable"}]
            resp = requests.post(graphql_url(shop), json={"query": "{ shop { name } }"}, timeout=10,
                                 headers={"X-Shopify-Access-Token": shop.token}, verify=str(shop.running.ca_file))
            assert resp.status_code == 200  # count 1: the fault fired once
            http.post(f"{shop.url}/__sandbox/faults", json={"rules": [{"kind": "500", "path": "graphql.json",
                                                                       "count": 1}], "reset_counts": True})
            with pytest.raises(TransportQueryError) as info:
                session.execute(GraphQLRequest("{ shop { name } }"))
            assert (info.value.errors or [{}])[0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
            assert session.execute(GraphQLRequest("{ shop { name } }")) == {"shop": {"name": "ferry-demo"}}
            assert http.get(f"{shop.url}/__sandbox/faults").json()["injected"] == {"500": 1}
        finally:
            http.delete(f"{shop.url}/__sandbox/faults")


def test_bad_requests_and_auth(shop: Served) -> None:
    url = graphql_url(shop)
    verify = str(shop.running.ca_file)
    headers = {"X-Shopify-Access-Token": shop.token}
    assert requests.post(url, data=b"not json", headers=headers, verify=verify, timeout=10).status_code == 400
    raw = requests.post(url, data=b"{ shop { name } }", verify=verify, timeout=10,
                        headers={**headers, "Content-Type": "application/graphql"})
    assert raw.json()["data"] == {"shop": {"name": "ferry-demo"}}  # Airbyte polls this way
    denied = requests.post(url, json={"query": "{ shop { name } }"}, verify=verify, timeout=10,
                           headers={"X-Shopify-Access-Token": "shpat_wrong"})
    assert denied.status_code == 401
