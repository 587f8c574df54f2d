"""Fidelity of the GraphQL Admin API: ShopifyAPI's ``shopify.GraphQL()`` and gql (a generic GraphQL client)
against the sandbox, which serves the same records as its REST API (both store modes, as the REST tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import shopify
from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError

from ferry.sandbox.shopify.times import parse

from .conftest import Served, after_the_second_of, configure_graphql, gql_session


@pytest.fixture(scope="module", autouse=True)
def roomy_bucket(served: Served) -> None:
    # These tests read whole stores; the cost limiter has its own tests (test_graphql_cost.py).
    configure_graphql(served, {"plan": "enterprise"})


def run(query: str, **variables: Any) -> dict[str, Any]:
    """ShopifyAPI's GraphQL client, exactly as an app uses it: execute() returns the response text."""
    body: dict[str, Any] = json.loads(shopify.GraphQL().execute(query, variables=variables or None))
    assert "errors" not in body, body
    return body


@pytest.fixture
def gql_client(served: Served) -> Iterator[Any]:
    with gql_session(served) as session:
        yield session


def gql_run(session: Any, query: str, **variables: Any) -> Any:
    return session.execute(GraphQLRequest(query, variable_values=variables or None), get_execution_result=True)


def _utc(text: str) -> str:
    from time import gmtime, strftime

    return strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(parse(text)))


ORDERS_BY_ID = """
query Orders($after: String) {
  orders(first: 250, after: $after, sortKey: ID) {
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id legacyResourceId name updatedAt } }
  }
}"""


def test_shopifyapi_pages_every_order_once_by_cursor(client: Served) -> None:
    seen: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        conn = run(ORDERS_BY_ID, after=after)["data"]["orders"]
        seen += [e["node"] for e in conn["edges"]]
        assert conn["pageInfo"]["endCursor"] == conn["edges"][-1]["cursor"]
        assert conn["pageInfo"]["hasPreviousPage"] is (after is not None)
        pages += 1
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    store = {o["id"]: o for o in client.sandbox.store.orders}
    assert pages == -(-len(store) // 250)
    assert [int(n["legacyResourceId"]) for n in seen] == sorted(store)  # every order, once, id order
    for node in seen[:50]:
        rest = store[int(node["legacyResourceId"])]
        assert node["id"] == f"gid://shopify/Order/{rest['id']}" == rest["admin_graphql_api_id"]
        assert node["name"] == rest["name"]
        assert node["updatedAt"] == _utc(rest["updated_at"])  # the same instant, written in UTC


def test_gql_reads_updated_at_keyset_pages_with_a_quoted_filter(served: Served, gql_client: Any) -> None:
    store = served.sandbox.store
    shared = sorted(parse(o["updated_at"]) for o in store.orders
                    if "updated_at_shared" in store.anomalies.get(f"order:{o['id']}", []))
    pivot = shared[len(shared) // 2]  # a timestamp several orders share
    pivot_text = _iso(pivot)
    query = """query($q: String, $after: String) {
      orders(first: 40, after: $after, sortKey: UPDATED_AT, query: $q) {
        pageInfo { hasNextPage endCursor } nodes { legacyResourceId updatedAt } } }"""
    for term, keep in ((f"updated_at:>='{pivot_text}'", lambda t: t >= pivot),
                       (f"updated_at:>'{pivot_text}'", lambda t: t > pivot),
                       (f"updated_at:>={pivot_text} AND updated_at:<='{pivot_text}'", lambda t: t == pivot)):
        got: list[tuple[int, int]] = []
        after = None
        while True:
            conn = gql_run(gql_client, query, q=term, after=after).data["orders"]
            got += [(parse(n["updatedAt"]), int(n["legacyResourceId"])) for n in conn["nodes"]]
            if not conn["pageInfo"]["hasNextPage"]:
                break
            after = conn["pageInfo"]["endCursor"]
        expected = sorted((parse(o["updated_at"]), o["id"]) for o in store.orders if keep(parse(o["updated_at"])))
        assert got == expected, term  # (updated_at, id) order across page boundaries, nothing missed
    assert sum(1 for t in shared if t == pivot) >= 2


def _graphql_decimal(rest_amount: str) -> str:
    """GraphQL writes Decimal without trailing zeros but with one decimal: REST "41.90" is "41.9", "10.00" "10.0"."""
    text = f"{Decimal(rest_amount).normalize():f}"
    return text if "." in text else f"{text}.0"


def _iso(epoch: int) -> str:
    from time import gmtime, strftime

    return strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(epoch))


def test_id_and_status_filters_reverse_and_backward_paging(served: Served, gql_client: Any) -> None:
    orders = sorted(served.sandbox.store.orders, key=lambda o: o["id"])
    pivot = orders[len(orders) // 3]["id"]
    query = """query($q: String, $first: Int, $last: Int, $after: String, $before: String, $reverse: Boolean) {
      orders(first: $first, last: $last, after: $after, before: $before, query: $q, reverse: $reverse) {
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes { legacyResourceId closedAt cancelledAt }
      } }"""
    q = f"id:>{pivot} AND status:open"
    expected = [o["id"] for o in orders if o["id"] > pivot and o["closed_at"] is None and o["cancelled_at"] is None]
    conn = gql_run(gql_client, query, q=q, first=250, reverse=True).data["orders"]
    assert [int(n["legacyResourceId"]) for n in conn["nodes"]] == expected[::-1]
    first = gql_run(gql_client, query, q=q, first=10).data["orders"]
    second = gql_run(gql_client, query, q=q, first=10, after=first["pageInfo"]["endCursor"]).data["orders"]
    back = gql_run(gql_client, query, q=q, last=10, before=second["pageInfo"]["startCursor"]).data["orders"]
    assert back["nodes"] == first["nodes"] and back["pageInfo"]["hasPreviousPage"] is False
    assert [int(n["legacyResourceId"]) for n in first["nodes"] + second["nodes"]] == expected[:20]
    tail = gql_run(gql_client, query, q=q, last=5).data["orders"]
    assert [int(n["legacyResourceId"]) for n in tail["nodes"]] == expected[-5:]
    assert gql_run(gql_client, query, q=f"id:{pivot}", first=5).data["orders"]["nodes"][0]["legacyResourceId"] == str(
        pivot)


def test_order_money_bags_line_items_refunds_and_transactions_match_rest(served: Served, gql_client: Any) -> None:
    store = served.sandbox.store
    refunded = next(o for o in store.orders if o["refunds"] and o["presentment_currency"] != "USD")
    result = gql_run(gql_client, """query($id: ID!) { order(id: $id) {
        currencyCode presentmentCurrencyCode displayFinancialStatus
        totalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }
        lineItems(first: 50) { nodes { id sku quantity originalUnitPriceSet { shopMoney { amount } } } }
        refunds { legacyResourceId refundLineItems(first: 10) { nodes { quantity lineItem { id } } }
                  totalRefundedSet { shopMoney { amount } } }
        transactions { kind status amountSet { shopMoney { amount } } parentTransaction { kind } } } }""",
                     id=refunded["admin_graphql_api_id"]).data["order"]
    rest_total = refunded["total_price_set"]
    assert Decimal(result["totalPriceSet"]["shopMoney"]["amount"]) == Decimal(rest_total["shop_money"]["amount"])
    assert result["totalPriceSet"]["presentmentMoney"] == {
        "amount": _graphql_decimal(rest_total["presentment_money"]["amount"]),
        "currencyCode": refunded["presentment_currency"]}
    assert result["presentmentCurrencyCode"] == refunded["presentment_currency"]
    assert result["displayFinancialStatus"] == refunded["financial_status"].upper()
    assert [n["id"] for n in result["lineItems"]["nodes"]] == [
        li["admin_graphql_api_id"] for li in refunded["line_items"]]
    rest_refund = refunded["refunds"][0]
    gql_refund = result["refunds"][0]
    assert gql_refund["legacyResourceId"] == str(rest_refund["id"])
    assert [(n["quantity"], n["lineItem"]["id"]) for n in gql_refund["refundLineItems"]["nodes"]] == [
        (r["quantity"], f"gid://shopify/LineItem/{r['line_item_id']}") for r in rest_refund["refund_line_items"]]
    refund_sum = sum(Decimal(t["amount"]) for t in rest_refund["transactions"])
    assert Decimal(gql_refund["totalRefundedSet"]["shopMoney"]["amount"]) == refund_sum
    kinds = [(t["kind"], t["parentTransaction"]) for t in result["transactions"]]
    assert kinds[0] == ("SALE", None) and kinds[1] == ("REFUND", {"kind": "SALE"})


def test_a_rest_edit_shows_in_graphql_and_a_graphql_mutation_shows_in_rest(client: Served) -> None:
    rec = client.sandbox.store.customers[11]
    customer = shopify.Customer.find(rec["id"])
    customer.note = "edited over REST"
    assert customer.save()
    gid = rec["admin_graphql_api_id"]
    seen = run("query($id: ID!) { customer(id: $id) { note updatedAt tags } }", id=gid)["data"]["customer"]
    assert seen["note"] == "edited over REST" and seen["updatedAt"] == _utc(customer.updated_at)
    after_the_second_of(customer.updated_at)
    body = run("""mutation($input: CustomerInput!) { customerUpdate(input: $input) {
                    customer { id note tags updatedAt } userErrors { field message } } }""",
               input={"id": gid, "note": "edited over GraphQL", "tags": ["vip", "wholesale"]})
    payload = body["data"]["customerUpdate"]
    assert payload["userErrors"] == [] and payload["customer"]["tags"] == ["vip", "wholesale"]
    again = shopify.Customer.find(rec["id"])
    assert again.note == "edited over GraphQL" and again.tags == "vip, wholesale"
    assert parse(again.updated_at) > parse(customer.updated_at)
    assert payload["customer"]["updatedAt"] == _utc(again.updated_at)


def test_mutations_answer_bad_input_with_user_errors(client: Served) -> None:
    customers = client.sandbox.store.customers
    target = customers[3]
    taken = next(c["email"] for c in customers if c["email"] and "@" in c["email"] and c["id"] != target["id"]
                 and c["email"] != target["email"] and "." in c["email"].split("@")[1])
    mutation = """mutation($input: CustomerInput!) { customerUpdate(input: $input) {
                    customer { id } userErrors { field message } } }"""
    dup = run(mutation, input={"id": target["admin_graphql_api_id"], "email": taken})["data"]["customerUpdate"]
    assert dup == {"customer": None, "userErrors": [{"field": ["email"], "message": "Email has already been taken"}]}
    bad = run(mutation, input={"id": target["admin_graphql_api_id"], "email": "not-an-email"})["data"]["customerUpdate"]
    assert bad["userErrors"] == [{"field": ["email"], "message": "Email is invalid"}]
    missing = run(mutation, input={"id": "gid://shopify/Customer/1", "note": "x"})["data"]["customerUpdate"]
    assert missing["userErrors"] == [{"field": ["id"], "message": "Customer does not exist"}]
    order = client.sandbox.store.orders[7]
    done = run("""mutation($input: OrderInput!) { orderUpdate(input: $input) {
                    order { note tags customAttributes { key value } } userErrors { field message } } }""",
               input={"id": order["admin_graphql_api_id"], "note": "gift", "tags": ["a", "b"],
                      "customAttributes": [{"key": "gift_wrap", "value": "yes"}]})["data"]["orderUpdate"]
    assert done == {"order": {"note": "gift", "tags": ["a", "b"],
                              "customAttributes": [{"key": "gift_wrap", "value": "yes"}]}, "userErrors": []}
    rest = shopify.Order.find(order["id"])
    assert rest.note == "gift" and rest.tags == "a, b"


def test_customer_create_writes_through_rest_and_refuses_a_taken_email(client: Served) -> None:
    mutation = """mutation($input: CustomerInput!) { customerCreate(input: $input) {
                    customer { id email firstName tags defaultAddress { city countryCodeV2 } }
                    userErrors { field message } } }"""
    made = run(mutation, input={"email": "new.customer@example.com", "firstName": "Nova", "tags": ["crm"],
                                "addresses": [{"address1": "1 Main St", "city": "Austin", "countryCode": "US"}]})
    payload = made["data"]["customerCreate"]
    assert payload["userErrors"] == [] and payload["customer"]["email"] == "new.customer@example.com"
    assert payload["customer"]["defaultAddress"] == {"city": "Austin", "countryCodeV2": "US"}
    rest = shopify.Customer.find(int(payload["customer"]["id"].rsplit("/", 1)[1]))
    assert rest.first_name == "Nova" and rest.tags == "crm"
    again = run(mutation, input={"email": "NEW.customer@example.com", "firstName": "Twice"})["data"]["customerCreate"]
    assert again == {"customer": None, "userErrors": [{"field": ["email"], "message": "Email has already been taken"}]}
    nobody = run(mutation, input={"note": "no identity"})["data"]["customerCreate"]
    assert nobody["customer"] is None and nobody["userErrors"][0]["message"].startswith("Customer must have")
    with_id = run(mutation, input={"id": payload["customer"]["id"], "note": "x"})["data"]["customerCreate"]
    assert with_id["userErrors"] == [{"field": ["id"], "message": "Id must be blank when creating a customer"}]


def test_inventory_set_quantities_is_compare_and_set(client: Served, gql_client: Any) -> None:
    product = next(p for p in client.sandbox.store.products if p["variants"])
    variant = product["variants"][0]
    item = f"gid://shopify/InventoryItem/{variant['inventory_item_id']}"
    level = gql_run(gql_client, """query($id: ID!) { inventoryItem(id: $id) { variant { id }
        inventoryLevels(first: 5) { nodes { location { id }
          quantities(names: ["available", "on_hand"]) { name quantity } } } } }""", id=item).data["inventoryItem"]
    location = level["inventoryLevels"]["nodes"][0]["location"]["id"]
    before = variant["inventory_quantity"]
    assert level["inventoryLevels"]["nodes"][0]["quantities"] == [
        {"name": "available", "quantity": before}, {"name": "on_hand", "quantity": before}]
    mutation = """mutation($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) {
        inventoryAdjustmentGroup { reason changes { name delta quantityAfterChange } }
        userErrors { code field message } } }"""

    def set_to(quantity: int, compare: int | None) -> Any:
        q = {"inventoryItemId": item, "locationId": location, "quantity": quantity, "compareQuantity": compare}
        return gql_run(gql_client, mutation, input={"name": "available", "reason": "correction",
                                                    "quantities": [q]}).data["inventorySetQuantities"]

    stale = set_to(before + 7, before + 1)
    assert stale["inventoryAdjustmentGroup"] is None
    assert stale["userErrors"][0]["code"] == "COMPARE_QUANTITY_STALE"
    assert stale["userErrors"][0]["field"] == ["input", "quantities", "0", "compareQuantity"]
    done = set_to(before + 7, before)
    assert done["userErrors"] == []
    assert done["inventoryAdjustmentGroup"]["changes"] == [
        {"name": "available", "delta": 7, "quantityAfterChange": before + 7}]
    rest = next(v for v in shopify.Product.find(product["id"]).variants if v.id == variant["id"])
    assert rest.inventory_quantity == before + 7  # REST sees the change


def test_webhook_subscriptions_are_one_list_for_rest_and_graphql(client: Served, gql_client: Any) -> None:
    created = gql_run(gql_client, """mutation($sub: WebhookSubscriptionInput!) {
        webhookSubscriptionCreate(topic: ORDERS_UPDATED, webhookSubscription: $sub) {
          webhookSubscription { id legacyResourceId topic format uri } userErrors { field message } } }""",
                      sub={"callbackUrl": "https://127.0.0.1:9/orders", "format": "JSON"}
                      ).data["webhookSubscriptionCreate"]
    assert created["userErrors"] == []
    sub = created["webhookSubscription"]
    rest = shopify.Webhook.find(int(sub["legacyResourceId"]))
    assert (rest.topic, rest.address, rest.format) == ("orders/updated", "https://127.0.0.1:9/orders", "json")
    hook = shopify.Webhook({"topic": "customers/update", "address": "https://127.0.0.1:9/customers"})
    assert hook.save()
    listed = gql_run(gql_client, """{ webhookSubscriptions(first: 10, topics: [CUSTOMERS_UPDATE]) {
        nodes { legacyResourceId topic uri } } }""").data["webhookSubscriptions"]["nodes"]
    assert listed == [{"legacyResourceId": str(hook.id), "topic": "CUSTOMERS_UPDATE",
                       "uri": "https://127.0.0.1:9/customers"}]
    again = gql_run(gql_client, """mutation { webhookSubscriptionCreate(topic: ORDERS_UPDATED,
        webhookSubscription: {callbackUrl: "https://127.0.0.1:9/orders"}) { userErrors { field message } } }""")
    assert again.data["webhookSubscriptionCreate"]["userErrors"] == [
        {"field": ["webhookSubscription", "callbackUrl"], "message": "Address for this topic has already been taken"}]
    dup = shopify.Webhook({"topic": "customers/update", "address": "https://127.0.0.1:9/customers"})
    assert not dup.save() and "has already been taken" in " ".join(dup.errors.full_messages())
    hook.destroy()
    after = gql_run(gql_client, "{ webhookSubscriptions(first: 10) { nodes { topic } } }").data
    assert after["webhookSubscriptions"]["nodes"] == [{"topic": "ORDERS_UPDATED"}]
    assert shopify.Webhook.count() == 1


def test_nodes_products_variants_and_schema_errors(served: Served, gql_client: Any) -> None:
    store = served.sandbox.store
    order, customer = store.orders[0], store.customers[0]
    variant = store.products[0]["variants"][0]
    got = gql_run(gql_client, """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
        ... on Customer { displayName } ... on ProductVariant { sku product { legacyResourceId } } } }""",
                  ids=[order["admin_graphql_api_id"], customer["admin_graphql_api_id"],
                       f"gid://shopify/ProductVariant/{variant['id']}", "gid://shopify/Order/1"]).data["nodes"]
    assert [n and n["__typename"] for n in got] == ["Order", "Customer", "ProductVariant", None]
    assert got[2]["product"]["legacyResourceId"] == str(store.products[0]["id"])
    drafts = gql_run(gql_client, '{ products(first: 250, query: "status:draft") { nodes { legacyResourceId } } }')
    assert {int(n["legacyResourceId"]) for n in drafts.data["products"]["nodes"]} == {
        p["id"] for p in store.products if p["status"] == "draft"}
    variants: list[int] = []
    after = None
    while True:
        conn = gql_run(gql_client, """query($after: String) { productVariants(first: 50, after: $after) {
            pageInfo { hasNextPage endCursor } nodes { legacyResourceId } } }""", after=after).data["productVariants"]
        variants += [int(n["legacyResourceId"]) for n in conn["nodes"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert variants == sorted(v["id"] for p in store.products for v in p["variants"])
    with pytest.raises(TransportQueryError) as info:  # a field of another version or type: graphql-ruby's code
        gql_client.execute(GraphQLRequest("{ customers(first: 1) { nodes { weight } } }"))
    (error,) = info.value.errors or []
    assert error["message"] == "Field 'weight' doesn't exist on type 'Customer'"  # gql re-prints the document,
    assert error["extensions"] == {"code": "undefinedField", "typeName": "Customer", "fieldName": "weight"}  # so
    assert set(error) == {"message", "locations", "extensions"}  # the locations differ from the source text


COUNTS = """
query Counts($q: String, $limit: Int) {
  ordersCount(query: $q, limit: $limit) { count precision }
  customersCount { count precision }
  productsCount(query: "status:active") { count precision }
}"""


def test_counts_match_the_rest_counts_and_cap_at_their_limit(client: Served) -> None:
    every = run(COUNTS, limit=None)["data"]
    assert every["ordersCount"] == {"count": shopify.Order.count(status="any"), "precision": "EXACT"}
    assert every["customersCount"]["count"] == shopify.Customer.count()
    assert every["productsCount"]["count"] == shopify.Product.count(status="active")
    capped = run(COUNTS, limit=3)["data"]["ordersCount"]
    assert capped == {"count": 3, "precision": "AT_LEAST"}
    # fields=: ShopifyAPI builds 250 full orders in ~6 s (more under load) for their updated_at alone.
    newest = sorted(o.updated_at for o in shopify.Order.find(status="any", limit=250, fields="id,updated_at"))[-1]
    since = run(COUNTS, q=f"updated_at:>='{_utc(newest)}'", limit=None)["data"]["ordersCount"]["count"]
    assert 1 <= since < every["ordersCount"]["count"]


def test_a_refund_is_a_node_with_its_line_items(client: Served) -> None:
    # fields=: the refunds are what is looked at (250 full orders take ShopifyAPI ~6 s, more under load).
    order = next(o for o in shopify.Order.find(status="any", limit=250, fields="id,refunds") if o.refunds)
    refund = order.refunds[0]
    body = run(
        """query R($id: ID!) { node(id: $id) { ... on Refund { id note
             refundLineItems(first: 10) { nodes { lineItem { id } } } } } }""",
        id=f"gid://shopify/Refund/{refund.id}",
    )
    node = body["data"]["node"]
    assert node["id"] == f"gid://shopify/Refund/{refund.id}"
    lines = [n["lineItem"]["id"] for n in node["refundLineItems"]["nodes"]]
    assert lines == [f"gid://shopify/LineItem/{r.line_item_id}" for r in refund.refund_line_items]
