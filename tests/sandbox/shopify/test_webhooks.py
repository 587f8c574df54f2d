"""Shopify webhook deliveries: subscriptions through ShopifyAPI, signed deliveries to a loopback receiver,
retries with (scaled) backoff, removal of a failing subscription, and the delivery faults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import ssl
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import shopify

from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from tests.sandbox.receiver import Receiver, serve_receiver

SCALE = 0.0001  # Shopify's 4 hours of retries in 1.4 s


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShopifySandbox, RunningSandbox, Path]]:
    state_dir = tmp_path_factory.mktemp("shopify-webhooks")
    sandbox = ShopifySandbox(state_dir, customers=30, products=10, orders=30, bucket_size=100_000, leak_rate=1000.0,
                             webhook_time_scale=SCALE)
    running = start_in_thread(sandbox.app, state_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_CERT_FILE", str(running.ca_file))  # urllib (under ShopifyAPI) trusts the sandbox CA
        shopify.ShopifyResource.set_site(f"{running.url}/admin/api/2025-07")
        shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": sandbox.access_token})
        try:
            yield sandbox, running, state_dir
        finally:
            shopify.ShopifyResource.clear_session()
            sandbox.webhooks.dispatcher.close()
            running.stop()


@pytest.fixture(scope="module")
def receiver(shop: tuple[ShopifySandbox, RunningSandbox, Path]) -> Iterator[Receiver]:
    with serve_receiver(shop[2]) as rec:  # HTTPS with a certificate from the sandbox CA
        yield rec


@pytest.fixture
def clean(shop: tuple[ShopifySandbox, RunningSandbox, Path], receiver: Receiver) -> Iterator[ShopifySandbox]:
    sandbox = shop[0]
    for sub in list(sandbox.state.subscriptions.records):
        sandbox.state.subscriptions.delete(sub["id"])
    sandbox.webhooks.dispatcher.faults.clear()
    sandbox.webhooks.dispatcher.configure({"time_scale": SCALE})
    receiver.reset()
    yield sandbox
    assert sandbox.webhooks.dispatcher.wait_idle(10)


def subscribe(receiver: Receiver, topic: str, path: str = "/hooks", **extra: Any) -> shopify.Webhook:
    hook = shopify.Webhook({"topic": topic, "address": f"{receiver.url}{path}", "format": "json", **extra})
    assert hook.save(), hook.errors.full_messages()
    return hook


def verified(body: bytes, header: str, secret: str) -> bool:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(digest, header)


def control(shop: tuple[ShopifySandbox, RunningSandbox, Path], method: str, path: str, **kwargs: Any) -> Any:
    running = shop[1]
    with httpx.Client(verify=ssl.create_default_context(cafile=str(running.ca_file)), timeout=10) as http:
        response = http.request(method, f"{running.url}/__sandbox/webhooks{path}", **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_order_update_is_delivered_signed_with_shopifys_headers(
        clean: ShopifySandbox, receiver: Receiver, shop: tuple[ShopifySandbox, RunningSandbox, Path]) -> None:
    hook = subscribe(receiver, "orders/updated", "/orders")
    assert hook.id and shopify.Webhook.find(hook.id).address == f"{receiver.url}/orders"
    order = shopify.Order.find(clean.store.orders[3]["id"])
    order.note = "gift wrap, please"
    assert order.save()
    got = receiver.wait_for(1)[0]
    assert got.path == "/orders"
    h = got.headers
    assert verified(got.body, h["x-shopify-hmac-sha256"], clean.webhook_secret)
    assert not verified(got.body + b" ", h["x-shopify-hmac-sha256"], clean.webhook_secret)
    assert (h["x-shopify-topic"], h["x-shopify-shop-domain"], h["x-shopify-api-version"]) == \
        ("orders/updated", "ferry-demo.myshopify.com", "2025-07")
    assert h["content-type"] == "application/json" and h["x-shopify-webhook-id"] and h["x-shopify-event-id"]
    assert datetime.fromisoformat(h["x-shopify-triggered-at"][:26] + "+00:00")
    payload = orjson.loads(got.body)
    assert payload["id"] == order.id and payload["note"] == "gift wrap, please"
    assert payload == orjson.loads(orjson.dumps(clean.state.table("orders").get(order.id)))  # the REST JSON
    assert clean.webhooks.dispatcher.wait_idle(5)  # the receiver answered; the sender may still be recording it
    listed = control(shop, "GET", "/deliveries", params={"topic": "orders/updated"})["deliveries"]
    assert [(d["state"], len(d["attempts"]), d["attempts"][0]["status"]) for d in listed] == [("delivered", 1, 200)]


def test_created_customers_and_subscription_fields(clean: ShopifySandbox, receiver: Receiver) -> None:
    subscribe(receiver, "customers/create", fields=["id", "email"])
    customer = shopify.Customer({"first_name": "Ada", "email": "ada.webhook@example.com"})
    assert customer.save()
    got = receiver.wait_for(1)[0]
    assert got.headers["x-shopify-topic"] == "customers/create"
    assert orjson.loads(got.body) == {"id": customer.id, "email": "ada.webhook@example.com"}


def test_only_loopback_https_addresses_are_accepted(clean: ShopifySandbox, receiver: Receiver) -> None:
    far = shopify.Webhook({"topic": "orders/create", "address": "https://hooks.example.com/x"})
    assert not far.save() and "loopback" in " ".join(far.errors.full_messages())
    plain = shopify.Webhook({"topic": "orders/create", "address": "http://127.0.0.1:9/x"})
    assert not plain.save() and "http:// is not supported" in " ".join(plain.errors.full_messages())
    assert shopify.Webhook.count() == 0


def test_a_failing_receiver_gets_retries_with_growing_delays(clean: ShopifySandbox, receiver: Receiver) -> None:
    subscribe(receiver, "customers/update")
    clean.webhooks.dispatcher.configure({"time_scale": 0.001})  # 56, 113, 226 ms: well above request jitter
    receiver.reset(500, 503, 500)  # then 200
    customer = shopify.Customer.find(clean.store.customers[0]["id"])
    customer.note = "retry me"
    assert customer.save()
    got = receiver.wait_for(4)
    assert len({r.headers["x-shopify-webhook-id"] for r in got}) == 1  # one delivery, retried
    assert len({r.body for r in got}) == 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert gaps[0] < gaps[1] < gaps[2]  # exponential backoff (scaled down)
    assert clean.webhooks.dispatcher.wait_idle(5)
    [delivery] = clean.webhooks.dispatcher.deliveries(topic="customers/update")
    assert delivery["state"] == "delivered" and [a["status"] for a in delivery["attempts"]] == [500, 503, 500, 200]
    clean.webhooks.dispatcher.configure({"time_scale": SCALE})
    assert shopify.Webhook.count() == 1


def test_a_subscription_is_removed_after_every_retry_failed(clean: ShopifySandbox, receiver: Receiver) -> None:
    hook = subscribe(receiver, "products/update")
    receiver.reset(default=500)
    product = shopify.Product.find(clean.store.products[0]["id"])
    product.title = "Always failing"
    assert product.save()
    got = receiver.wait_for(9)  # the first try and 8 retries
    assert clean.webhooks.dispatcher.wait_idle(10)
    assert len(got) == 9
    [delivery] = clean.webhooks.dispatcher.deliveries(topic="products/update")
    assert delivery["state"] == "failed"
    assert shopify.Webhook.count() == 0 and clean.state.subscriptions.get(hook.id) is None


def test_drop_duplicate_and_reorder_faults(clean: ShopifySandbox, receiver: Receiver,
                                           shop: tuple[ShopifySandbox, RunningSandbox, Path]) -> None:
    subscribe(receiver, "customers/update")
    control(shop, "POST", "/faults", json={"seed": 3, "rules": [
        {"kind": "drop", "count": 1}, {"kind": "duplicate", "count": 1, "rate": 1.0},
        {"kind": "reorder", "count": 1, "hold": 1}]})
    ids = [c["id"] for c in clean.store.customers[1:5]]
    for n, cid in enumerate(ids):
        customer = shopify.Customer.find(cid)
        customer.note = f"edit {n}"
        assert customer.save()
    assert clean.webhooks.dispatcher.wait_idle(10)
    # 1st dropped; 2nd duplicated and held back behind the 3rd (reorder); the 4th plain.
    seen = [orjson.loads(r.body)["id"] for r in receiver.requests]
    assert ids[0] not in seen
    assert seen.count(ids[1]) == 2 and seen.index(ids[2]) < seen.index(ids[1])
    dup = [r for r in receiver.requests if orjson.loads(r.body)["id"] == ids[1]]
    assert dup[0].headers == dup[1].headers and dup[0].body == dup[1].body  # byte for byte, same Webhook-Id
    states = {d["resource_id"]: (d["state"], d["faults"]) for d in clean.webhooks.dispatcher.deliveries()}
    assert states[ids[0]] == ("dropped", ["drop"])
    assert states[ids[1]] == ("delivered", ["duplicate", "reorder"])
    assert control(shop, "GET", "/faults")["injected"] == {"drop": 1, "duplicate": 1, "reorder": 1}


def graphql(shop: tuple[ShopifySandbox, RunningSandbox, Path], query: str, **variables: Any) -> Any:
    sandbox, running, _ = shop
    with httpx.Client(verify=ssl.create_default_context(cafile=str(running.ca_file)), timeout=10) as http:
        return http.post(f"{running.url}/admin/api/2025-07/graphql.json",
                         headers={"X-Shopify-Access-Token": sandbox.access_token},
                         json={"query": query, "variables": variables}).json()


SUBSCRIBE = """mutation($topic: WebhookSubscriptionTopic!, $url: URL!) { webhookSubscriptionCreate(topic: $topic,
    webhookSubscription: {callbackUrl: $url, format: JSON}) { userErrors { message } } }"""


def test_graphql_subscriptions_get_deliveries_too(clean: ShopifySandbox, receiver: Receiver,
                                                  shop: tuple[ShopifySandbox, RunningSandbox, Path]) -> None:
    answer = graphql(shop, SUBSCRIBE, topic="ORDERS_CREATE", url=f"{receiver.url}/gql")
    assert answer["data"]["webhookSubscriptionCreate"]["userErrors"] == []
    variant = clean.store.products[1]["variants"][0]
    order = shopify.Order({"line_items": [{"variant_id": variant["id"], "quantity": 1}], "email": "gq@example.com"})
    assert order.save()
    got = receiver.wait_for(1)[0]
    assert got.path == "/gql" and got.headers["x-shopify-topic"] == "orders/create"
    assert orjson.loads(got.body)["id"] == order.id


def test_an_address_change_applies_to_new_deliveries(clean: ShopifySandbox, receiver: Receiver) -> None:
    hook = subscribe(receiver, "orders/updated", "/old")
    hook.address = f"{receiver.url}/new"
    assert hook.save()  # PUT webhooks/{id}.json
    assert shopify.Webhook.find(hook.id).address == f"{receiver.url}/new"
    hook.address = "https://hooks.example.com/elsewhere"
    assert not hook.save() and "loopback" in " ".join(hook.errors.full_messages())
    order = shopify.Order.find(clean.store.orders[4]["id"])
    order.tags = "moved"
    assert order.save()
    assert receiver.wait_for(1)[0].path == "/new"


def test_a_finished_bulk_operation_is_announced(clean: ShopifySandbox, receiver: Receiver,
                                                 shop: tuple[ShopifySandbox, RunningSandbox, Path]) -> None:
    answer = graphql(shop, SUBSCRIBE, topic="BULK_OPERATIONS_FINISH", url=f"{receiver.url}/bulk")
    assert answer["data"]["webhookSubscriptionCreate"]["userErrors"] == []
    run = graphql(shop, """mutation { bulkOperationRunQuery(query: "{ customers { edges { node { id } } } }") {
        bulkOperation { id } userErrors { message } } }""")["data"]["bulkOperationRunQuery"]
    assert run["userErrors"] == []
    got = receiver.wait_for(1, timeout=20)[0]
    assert got.headers["x-shopify-topic"] == "bulk_operations/finish"
    payload = orjson.loads(got.body)
    assert payload["admin_graphql_api_id"] == run["bulkOperation"]["id"]
    assert (payload["status"], payload["type"]) == ("completed", "query")
