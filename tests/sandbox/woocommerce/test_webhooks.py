"""WooCommerce webhooks: the ``webhooks`` resource through the official client, the ping, signed deliveries
to a loopback receiver, no retries, disabling after repeated failures, and pending deliveries coalescing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from woocommerce import API

from ferry.sandbox.serve import RunningSandbox
from ferry.sandbox.woocommerce import WooCommerceSandbox
from tests.sandbox.receiver import Receiver, serve_receiver

SECRET = "s3cr&t-with-amp"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WooCommerceSandbox, RunningSandbox, Path]]:
    state_dir = tmp_path_factory.mktemp("woo-webhooks")
    sandbox = WooCommerceSandbox(state_dir, seed=5, customers=20, products=8, orders=20)
    running = sandbox.start(state_dir)
    try:
        yield sandbox, running, state_dir
    finally:
        sandbox.webhooks.dispatcher.close()
        running.stop()


@pytest.fixture(scope="module")
def receiver(site: tuple[WooCommerceSandbox, RunningSandbox, Path]) -> Iterator[Receiver]:
    with serve_receiver(site[2], plain_http=True) as rec:  # WooCommerce delivers to http:// too
        yield rec


@pytest.fixture
def wc(site: tuple[WooCommerceSandbox, RunningSandbox, Path], receiver: Receiver) -> Iterator[API]:
    sandbox, running, _ = site
    sandbox.webhooks.records.clear()
    sandbox.webhooks.dispatcher.faults.clear()
    receiver.reset()
    yield API(url=running.url, consumer_key=sandbox.consumer_key, consumer_secret=sandbox.consumer_secret,
              version="wc/v3", verify_ssl=str(running.ca_file), timeout=10)
    assert sandbox.webhooks.dispatcher.wait_idle(10)


def create_hook(wc: API, receiver: Receiver, topic: str, **extra: Any) -> dict[str, Any]:
    response = wc.post("webhooks", {"name": f"ferry {topic}", "topic": topic, "secret": SECRET,
                                    "delivery_url": f"{receiver.url}/wc", **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def signature(body: bytes, secret: str = "s3cr&t-with-amp") -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_create_list_get_update_delete_through_the_official_client(wc: API, receiver: Receiver) -> None:
    hook = create_hook(wc, receiver, "order.updated")
    assert {k: hook[k] for k in ("name", "status", "topic", "resource", "event", "delivery_url")} == {
        "name": "ferry order.updated", "status": "active", "topic": "order.updated", "resource": "order",
        "event": "updated", "delivery_url": f"{receiver.url}/wc"}
    assert hook["hooks"] == ["woocommerce_update_order", "woocommerce_order_refunded",
                             "woocommerce_delete_order_refund"]
    assert "secret" not in hook and hook["date_created_gmt"] and hook["_links"]["self"][0]["href"].endswith(
        f"/wp-json/wc/v3/webhooks/{hook['id']}")
    ping = receiver.wait_for(1)[0]  # WC_Webhook::deliver_ping
    assert ping.body == f"webhook_id={hook['id']}".encode()
    assert ping.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "x-wc-webhook-signature" not in ping.headers and "Hookshot" in ping.headers["user-agent"]
    second = create_hook(wc, receiver, "customer.created")
    listed = wc.get("webhooks")
    assert listed.headers["X-WP-Total"] == "2"
    assert [h["id"] for h in listed.json()] == [second["id"], hook["id"]]  # date desc
    assert [h["id"] for h in wc.get("webhooks", params={"status": "active", "orderby": "id",
                                                        "order": "asc"}).json()] == [hook["id"], second["id"]]
    paused = wc.put(f"webhooks/{hook['id']}", {"status": "paused"}).json()
    assert paused["status"] == "paused"
    assert [h["id"] for h in wc.get("webhooks", params={"status": "paused"}).json()] == [hook["id"]]
    assert wc.get(f"webhooks/{second['id']}").json()["topic"] == "customer.created"
    not_forced = wc.delete(f"webhooks/{hook['id']}")
    assert not_forced.status_code == 501 and not_forced.json()["code"] == "woocommerce_rest_trash_not_supported"
    assert wc.delete(f"webhooks/{hook['id']}", params={"force": "true"}).json()["id"] == hook["id"]
    gone = wc.get(f"webhooks/{hook['id']}")
    assert gone.status_code == 400 and gone.json() == {
        "code": "woocommerce_rest_shop_webhook_invalid_id", "message": "ID is invalid.", "data": {"status": 400}}


def test_invalid_webhooks_are_refused_with_woocommerces_errors(wc: API, receiver: Receiver) -> None:
    missing = wc.post("webhooks", {"name": "no topic"}).json()
    assert missing["code"] == "rest_missing_callback_param" and missing["data"]["params"] == ["topic", "delivery_url"]
    topic = wc.post("webhooks", {"topic": "order.shipped", "delivery_url": f"{receiver.url}/x"}).json()
    assert topic["code"] == "woocommerce_rest_shop_webhook_invalid_topic"
    far = wc.post("webhooks", {"topic": "order.created", "delivery_url": "https://hooks.example.com/x"})
    assert far.status_code == 400 and far.json()["code"] == "woocommerce_rest_shop_webhook_invalid_delivery_url"
    assert "loopback" in far.json()["data"]["sandbox"]
    hook = create_hook(wc, receiver, "order.created")
    status = wc.put(f"webhooks/{hook['id']}", {"status": "sleeping"}).json()
    assert status["code"] == "rest_invalid_param"
    assert status["data"]["params"]["status"] == "status is not one of active, paused, and disabled."


def test_an_order_update_is_delivered_signed_with_the_resource_as_the_api_returns_it(
        wc: API, receiver: Receiver, site: tuple[WooCommerceSandbox, RunningSandbox, Path]) -> None:
    hook = create_hook(wc, receiver, "order.updated")
    receiver.wait_for(1)
    order_id = site[0].store.orders[2]["id"]
    assert wc.put(f"orders/{order_id}", {"customer_note": "Bitte klingeln \u2013 Hinterhaus"}).status_code == 200
    got = receiver.wait_for(2)[1]
    h = got.headers
    assert hmac.compare_digest(h["x-wc-webhook-signature"], signature(got.body))
    assert {k: h[f"x-wc-webhook-{k}"] for k in ("topic", "resource", "event", "id")} == {
        "topic": "order.updated", "resource": "order", "event": "updated", "id": str(hook["id"])}
    assert h["x-wc-webhook-source"] == f"{site[1].url}/" and len(h["x-wc-webhook-delivery-id"]) == 32
    assert h["content-type"] == "application/json"
    payload = json.loads(got.body)
    assert payload == wc.get(f"orders/{order_id}").json()  # the same JSON GET answers
    assert b"\\/wp-json\\/wc\\/v3\\/orders" in got.body and b"\\u2013" in got.body  # wp_json_encode's escapes
    reencoded = json.dumps(payload).encode()  # a receiver that re-encodes before verifying fails
    assert not hmac.compare_digest(h["x-wc-webhook-signature"], signature(reencoded))


def test_created_trashed_and_deleted_topics(wc: API, receiver: Receiver,
                                            site: tuple[WooCommerceSandbox, RunningSandbox, Path]) -> None:
    create_hook(wc, receiver, "customer.created")
    create_hook(wc, receiver, "customer.deleted")
    create_hook(wc, receiver, "product.deleted")
    receiver.wait_for(3)
    customer = wc.post("customers", {"email": "hook.test@example.org", "first_name": "Hook"}).json()
    wc.delete(f"customers/{customer['id']}", params={"force": "true"})
    product_id = site[0].store.products[0]["id"]
    wc.delete(f"products/{product_id}")  # to the trash: wp_trash_post
    got = receiver.wait_for(6)[3:]
    assert [r.headers["x-wc-webhook-topic"] for r in got] == ["customer.created", "customer.deleted",
                                                              "product.deleted"]
    assert json.loads(got[0].body)["email"] == "hook.test@example.org"
    assert [json.loads(r.body) for r in got[1:]] == [{"id": customer["id"]}, {"id": product_id}]


def test_no_retries_and_disabled_on_the_seventh_consecutive_failure(
        wc: API, receiver: Receiver, site: tuple[WooCommerceSandbox, RunningSandbox, Path]) -> None:
    sandbox = site[0]
    hook = create_hook(wc, receiver, "customer.updated")
    receiver.wait_for(1)
    receiver.reset(500, 500, default=200)
    customers = [c["id"] for c in sandbox.store.customers[:9]]

    def touch(cid: int) -> None:
        assert wc.put(f"customers/{cid}", {"last_name": f"N{time.monotonic_ns()}"}).status_code == 200
        assert sandbox.webhooks.dispatcher.wait_idle(5)

    touch(customers[0])
    touch(customers[1])
    assert sandbox.webhooks.records[hook["id"]]["failure_count"] == 2  # each failure counted, none retried
    assert len(receiver.requests) == 2
    touch(customers[2])  # a success resets the count
    assert sandbox.webhooks.records[hook["id"]]["failure_count"] == 0
    receiver.reset(default=500)
    for n in range(6):
        touch(customers[3 + n])
        assert wc.get(f"webhooks/{hook['id']}").json()["status"] == "active"
    assert sandbox.webhooks.records[hook["id"]]["failure_count"] == 6
    touch(customers[0])  # the 7th: failures (6) > woocommerce_max_webhook_delivery_failures (5)
    assert wc.get(f"webhooks/{hook['id']}").json()["status"] == "disabled"
    touch(customers[1])
    assert len(receiver.requests) == 7  # a disabled webhook gets nothing
    failed = sandbox.webhooks.dispatcher.deliveries(subscription=str(hook["id"]), state="failed")
    assert len(failed) == 9 and all(len(d["attempts"]) == 1 for d in failed)


def test_a_pending_delivery_carries_later_changes_to_the_same_record(
        wc: API, receiver: Receiver, site: tuple[WooCommerceSandbox, RunningSandbox, Path]) -> None:
    sandbox = site[0]
    create_hook(wc, receiver, "product.updated")
    receiver.wait_for(1)
    sandbox.webhooks.dispatcher.faults.configure({"rules": [{"kind": "delay", "delay_ms": 400, "count": 1}]})
    product_id = sandbox.store.products[1]["id"]
    for price in ("10.00", "11.00", "12.00"):
        wc.put(f"products/{product_id}", {"regular_price": price})
    assert sandbox.webhooks.dispatcher.wait_idle(5)
    deliveries = receiver.requests[1:]
    assert len(deliveries) == 1 and json.loads(deliveries[0].body)["regular_price"] == "12.00"


def test_delivery_ids_repeat_within_one_second_as_wp_hash_of_id_and_time(
        wc: API, receiver: Receiver, site: tuple[WooCommerceSandbox, RunningSandbox, Path]) -> None:
    sandbox = site[0]
    hook = create_hook(wc, receiver, "order.updated")
    receiver.wait_for(1)
    for order in sandbox.store.orders[5:9]:
        wc.put(f"orders/{order['id']}", {"customer_note": "same second?"})
    assert sandbox.webhooks.dispatcher.wait_idle(5)
    sent = sandbox.webhooks.dispatcher.deliveries(subscription=str(hook["id"]), topic="order.updated")
    by_second: dict[int, set[str]] = {}
    for d in (d for d in sent if not d["ping"]):
        by_second.setdefault(int(d["attempts"][0]["at"]), set()).add(d["headers"]["X-WC-Webhook-Delivery-ID"])
    assert all(len(ids) == 1 for ids in by_second.values())  # one id per webhook and second
    assert len({i for ids in by_second.values() for i in ids}) == len(by_second)


def test_batch_creates_pings_and_deletes(wc: API, receiver: Receiver) -> None:
    answer = wc.post("webhooks/batch", {"create": [
        {"topic": "coupon.created", "delivery_url": f"{receiver.url}/a"},
        {"topic": "nonsense", "delivery_url": f"{receiver.url}/b"}]}).json()
    ok, bad = answer["create"]
    assert ok["topic"] == "coupon.created" and bad["error"]["code"] == "woocommerce_rest_shop_webhook_invalid_topic"
    assert receiver.wait_for(1)[0].body == f"webhook_id={ok['id']}".encode()
    assert wc.post("webhooks/batch", {"delete": [ok["id"]]}).json()["delete"][0]["id"] == ok["id"]
    assert wc.get("webhooks").json() == []
