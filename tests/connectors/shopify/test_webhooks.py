"""The Shopify webhook receiver on its own: HMAC over the raw bytes, the shop and topic headers, dedup by
X-Shopify-Webhook-Id, and the subscriptions a pipeline's streams need."""

from __future__ import annotations

import orjson
import pytest

from ferry.connectors.shopify.config import ShopifyConfig
from ferry.connectors.shopify.webhooks import ShopifyWebhookReceiver
from ferry.core.webhooks import WebhookRejected, hmac_sha256_base64

SECRET = "client-secret-for-tests"


def _receiver(url: str = "https://acme.myshopify.com") -> ShopifyWebhookReceiver:
    return ShopifyWebhookReceiver(ShopifyConfig(system="shopify", url=url, access_token="shpat_x"), SECRET)


def _headers(body: bytes, topic: str = "orders/updated", shop: str = "acme.myshopify.com") -> dict[str, str]:
    return {"x-shopify-topic": topic, "x-shopify-hmac-sha256": hmac_sha256_base64(body, SECRET),
            "x-shopify-shop-domain": shop, "x-shopify-webhook-id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"}


def test_the_signature_is_checked_over_the_raw_bytes() -> None:
    body = b'{"id": 1,  "note": "spaces matter"}'
    _receiver().authenticate(_headers(body), body)
    reencoded = orjson.dumps(orjson.loads(body))
    with pytest.raises(WebhookRejected) as info:
        _receiver().authenticate(_headers(body), reencoded)
    assert info.value.status == 401


def test_the_shop_is_the_source_urls_myshopify_domain() -> None:
    body = b'{"id": 1}'
    with pytest.raises(WebhookRejected) as info:
        _receiver().authenticate(_headers(body, shop="other.myshopify.com"), body)
    assert info.value.status == 403
    # A source URL that is no myshopify domain (a proxy, the sandbox) checks that a shop is named.
    _receiver("https://127.0.0.1:8443").authenticate(_headers(body, shop="other.myshopify.com"), body)


def test_dedup_key_is_the_webhook_id_and_deletes_are_not_staged() -> None:
    body = b'{"id": 9, "updated_at": "2026-01-01T00:00:00Z"}'
    event = _receiver().parse(_headers(body), body)
    assert event.dedup_key == "shopify:b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert event.stream == "orders" and event.records == [{"id": 9, "updated_at": "2026-01-01T00:00:00Z"}]
    gone = _receiver().parse(_headers(b'{"id": 9}', topic="orders/delete"), b'{"id": 9}')
    assert gone.stream is None and gone.records == []


def test_a_topic_ferry_never_subscribes_to_is_refused() -> None:
    body = b"{}"
    with pytest.raises(WebhookRejected):
        _receiver().authenticate(_headers(body, topic="app/uninstalled"), body)


def test_subscriptions_follow_the_streams() -> None:
    subs = _receiver().subscriptions("https://ferry.example.com/webhooks/p/shopify", ["customers"])
    assert [s.topic for s in subs] == ["customers/create", "customers/update"]


def test_two_deliveries_stamped_in_one_second_are_ordered_by_when_shopify_fired_them() -> None:
    # Shopify stamps updated_at to the second: the later of two changes in one second must still be the newer
    # version, or the engine takes it for the one already written. X-Shopify-Triggered-At orders them.
    from ferry.connectors.shopify.normalize import identify, normalize
    from ferry.model.values import SEEN_KEY as SEEN

    body_a = b'{"id": 9, "updated_at": "2026-12-06T13:39:30-05:00", "email": "a@example.com"}'
    body_b = b'{"id": 9, "updated_at": "2026-12-06T13:39:30-05:00", "email": "b@example.com"}'
    fired = {"a": "2026-12-06T18:39:30.250000000Z", "b": "2026-12-06T18:39:30.900000000Z"}
    a = _receiver().parse({**_headers(body_a, topic="customers/update"), "x-shopify-triggered-at": fired["a"]},
                          body_a).records[0]
    b = _receiver().parse({**_headers(body_b, topic="customers/update"), "x-shopify-triggered-at": fired["b"]},
                          body_b).records[0]
    assert SEEN in a and SEEN in b
    (_, va), (_, vb) = identify("customers", a), identify("customers", b)
    assert "2026-12-06T18:39:29.500000Z" <= va < vb < "2026-12-06T18:39:30.000000Z"
    assert normalize("customers", b)[0][1].version == vb  # the canonical record carries the same version
    # Fired well after its stamp, a delivery is final: its version is the stamp itself.
    late = _receiver().parse({**_headers(body_b, topic="customers/update"),
                              "x-shopify-triggered-at": "2026-12-06T18:39:40.000000000Z"}, body_b).records[0]
    assert SEEN not in late and identify("customers", late)[1] == "2026-12-06T18:39:30.000000Z"
