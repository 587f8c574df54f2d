"""The WooCommerce webhook receiver on its own: signature, site header, the ping, and dedup keys that survive
WooCommerce's delivery ids (one id for every delivery of a webhook within the same second)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ferry.connectors.woocommerce.config import WooCommerceConfig
from ferry.connectors.woocommerce.webhooks import WooCommerceWebhookReceiver
from ferry.core.webhooks import WebhookRejected, hmac_sha256_base64

SECRET = "s3cret-for-tests"
SITE = "https://shop.example.com"


def _receiver() -> WooCommerceWebhookReceiver:
    config = WooCommerceConfig(system="woocommerce", url=SITE, consumer_key="ck_x", consumer_secret="cs_x")
    return WooCommerceWebhookReceiver(config, SECRET)


def _headers(body: bytes, **over: Any) -> dict[str, str]:
    h = {
        "content-type": "application/json", "x-wc-webhook-source": f"{SITE}/", "x-wc-webhook-topic": "order.updated",
        "x-wc-webhook-resource": "order", "x-wc-webhook-event": "updated", "x-wc-webhook-id": "3",
        "x-wc-webhook-delivery-id": "d41d8cd98f00b204e9800998ecf8427e",
        "x-wc-webhook-signature": hmac_sha256_base64(body, SECRET),
    }
    h.update({k.replace("_", "-"): v for k, v in over.items()})
    return h


def test_a_signed_order_is_one_record_of_the_orders_stream() -> None:
    body = orjson.dumps({"id": 12, "date_modified_gmt": "2026-01-01T00:00:00"})
    r = _receiver()
    r.authenticate(_headers(body), body)
    event = r.parse(_headers(body), body)
    assert (event.stream, event.records, event.problem) == ("orders", [orjson.loads(body)], None)


def test_same_second_deliveries_of_different_changes_get_different_keys() -> None:
    r = _receiver()
    a = orjson.dumps({"id": 12, "status": "processing"})
    b = orjson.dumps({"id": 12, "status": "completed"})
    key_a, key_b = r.parse(_headers(a), a).dedup_key, r.parse(_headers(b), b).dedup_key
    assert key_a != key_b  # the same X-WC-Webhook-Delivery-ID: WooCommerce's ids alone would lose one
    assert r.parse(_headers(a), a).dedup_key == key_a  # a byte-for-byte copy is the same delivery


@pytest.mark.parametrize("change", [
    {"x_wc_webhook_signature": "bm9wZQ=="}, {"x_wc_webhook_source": "https://evil.example.com/"},
    {"x_wc_webhook_delivery_id": ""},
])
def test_bad_requests_are_rejected(change: dict[str, str]) -> None:
    body = orjson.dumps({"id": 1})
    with pytest.raises(WebhookRejected) as info:
        _receiver().authenticate(_headers(body, **change), body)
    assert info.value.status in (400, 401, 403)
    assert SECRET not in info.value.reason


def test_the_creation_ping_is_recognised_and_a_signed_body_is_not_a_ping() -> None:
    r = _receiver()
    assert r.is_ping({"content-type": "application/x-www-form-urlencoded"}, b"webhook_id=7")
    assert not r.is_ping({"content-type": "application/x-www-form-urlencoded"}, b"webhook_id=7&x=1")
    body = orjson.dumps({"id": 1})
    assert not r.is_ping(_headers(body), body)


def test_products_and_unknown_topics_are_remembered_not_staged() -> None:
    body = orjson.dumps({"id": 5})
    event = _receiver().parse(_headers(body, x_wc_webhook_topic="product.updated"), body)
    assert event.stream is None and event.records == []
