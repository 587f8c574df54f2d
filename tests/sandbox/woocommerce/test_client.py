"""Fidelity: the official ``woocommerce`` client works against the sandbox with only the URL and CA changed."""

from __future__ import annotations

from typing import Any

import pytest
from woocommerce import API

from .conftest import Served

HIDDEN_ORDER_STATUSES = ("trash", "checkout-draft")


def _all_pages(wc: API, endpoint: str, **params: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every page by following ``Link: rel="next"``; returns the records and each page's response."""
    first = wc.get(endpoint, params=params)
    responses, items = [first], list(first.json())
    while "next" in responses[-1].links:
        url = responses[-1].links["next"]["url"]
        page = int(url.rsplit("page=", 1)[1].split("&")[0])
        responses.append(wc.get(endpoint, params={**params, "page": page}))
        items += responses[-1].json()
    return items, responses


def test_paging_lists_every_visible_order_once_newest_first_with_wp_headers(served: Served, wc: API) -> None:
    orders, responses = _all_pages(wc, "orders", per_page=100)
    stored = [o for o in served.admin("GET", "records/orders") if o["status"] not in HIDDEN_ORDER_STATUSES]
    assert sorted(o["id"] for o in orders) == sorted(o["id"] for o in stored)
    assert len({o["id"] for o in orders}) == len(orders)
    keys = [(o["date_created"], o["id"]) for o in orders]
    assert keys == sorted(keys, reverse=True)  # default orderby=date, order=desc ("post_date ID")
    assert responses[0].headers["X-WP-Total"] == str(len(stored))
    assert responses[0].headers["X-WP-TotalPages"] == str(-(-len(stored) // 100)) == str(len(responses))
    assert "prev" not in responses[0].links and "prev" in responses[1].links
    assert "next" not in responses[-1].links
    assert orders[0]["_links"]["self"][0]["href"].endswith(f"/wp-json/wc/v3/orders/{orders[0]['id']}")


def test_per_page_above_100_is_refused_with_wordpress_invalid_param_body(wc: API) -> None:
    response = wc.get("orders", params={"per_page": 101})
    assert response.status_code == 400
    message = "per_page must be between 1 (inclusive) and 100 (inclusive)"
    assert response.json() == {
        "code": "rest_invalid_param",
        "message": "Invalid parameter(s): per_page",
        "data": {"status": 400, "params": {"per_page": message},
                 "details": {"per_page": {"code": "rest_out_of_bounds", "message": message, "data": None}}},
    }


def test_invalid_orderby_and_status_are_rest_invalid_param(wc: API) -> None:
    body = wc.get("orders", params={"orderby": "total", "status": "shipped"}).json()
    assert body["code"] == "rest_invalid_param"
    assert set(body["data"]["params"]) == {"orderby", "status"}
    assert body["data"]["params"]["orderby"] == (
        "orderby is not one of date, id, include, title, slug, and modified.")


def test_modified_after_reads_local_time_unless_dates_are_gmt(served: Served, wc: API) -> None:
    stored = [o for o in served.admin("GET", "records/orders") if o["status"] not in HIDDEN_ORDER_STATUSES]
    bound = sorted(o["date_modified_gmt"] for o in stored)[len(stored) // 2]
    as_gmt, _ = _all_pages(wc, "orders", per_page=100, modified_after=bound, dates_are_gmt="true")
    as_local, _ = _all_pages(wc, "orders", per_page=100, modified_after=bound)
    assert sorted(o["id"] for o in as_gmt) == sorted(o["id"] for o in stored if o["date_modified_gmt"] > bound)
    assert sorted(o["id"] for o in as_local) == sorted(o["id"] for o in stored if o["date_modified"] > bound)
    # The store is in Europe/Berlin: the same digits read as local time are an hour or two earlier in UTC.
    assert len(as_local) > len(as_gmt)


def test_orderby_modified_ascending(served: Served, wc: API) -> None:
    orders, _ = _all_pages(wc, "orders", per_page=100, orderby="modified", order="asc")
    keys = [(o["date_modified"], o["id"]) for o in orders]
    assert keys == sorted(keys)


def test_customer_create_get_update_delete(served: Served, wc: API) -> None:
    created = wc.post("customers", {"email": "new.person@example.com", "first_name": "Zoë",
                                    "billing": {"city": "Köln", "country": "DE"}})
    assert created.status_code == 201
    customer = created.json()
    assert created.headers["Location"].endswith(f"/wp-json/wc/v3/customers/{customer['id']}")
    assert customer["billing"]["city"] == "Köln" and customer["billing"]["email"] == ""
    assert wc.get(f"customers/{customer['id']}").json()["first_name"] == "Zoë"
    updated = wc.put(f"customers/{customer['id']}", {"last_name": "Ångström"}).json()
    assert updated["last_name"] == "Ångström"
    assert updated["date_modified_gmt"] > customer["date_modified_gmt"]
    again = wc.post("customers", {"email": "new.person@example.com"})
    assert again.status_code == 400 and again.json()["code"] == "registration-error-email-exists"
    not_trashed = wc.delete(f"customers/{customer['id']}")
    assert not_trashed.status_code == 501
    assert not_trashed.json() == {"code": "woocommerce_rest_trash_not_supported",
                                  "message": "Customers do not support trashing.", "data": {"status": 501}}
    assert wc.delete(f"customers/{customer['id']}", params={"force": "true"}).json()["id"] == customer["id"]
    gone = wc.get(f"customers/{customer['id']}")
    assert gone.status_code == 404 and gone.json()["code"] == "woocommerce_rest_invalid_id"


def test_order_create_update_trash_and_force_delete(served: Served, wc: API) -> None:
    product = next(p for p in served.sandbox.store.products if p["type"] == "simple" and p["price"])
    created = wc.post("orders", {"set_paid": True, "billing": {"email": "guest@example.com", "first_name": "Ana"},
                                 "line_items": [{"product_id": product["id"], "quantity": 2}]}).json()
    assert created["status"] == "processing" and created["customer_id"] == 0 and created["date_paid"]
    line = created["line_items"][0]
    assert line["product_id"] == product["id"] and line["quantity"] == 2 and line["variation_id"] == 0
    assert line["subtotal"] == f"{float(product['price']) * 2:.2f}" == created["total"]
    updated = wc.put(f"orders/{created['id']}", {"status": "completed", "customer_note": "leave at door"}).json()
    assert updated["status"] == "completed" and updated["date_modified_gmt"] > created["date_modified_gmt"]
    trashed = wc.delete(f"orders/{created['id']}")
    assert trashed.status_code == 200 and trashed.json()["status"] == "completed"  # the order as it was
    assert wc.get(f"orders/{created['id']}").json()["status"] == "trash"
    twice = wc.delete(f"orders/{created['id']}").json()
    assert twice["code"] == "woocommerce_rest_already_trashed" and twice["data"]["status"] == 410
    assert wc.delete(f"orders/{created['id']}", params={"force": True}).status_code == 200
    missing = wc.get(f"orders/{created['id']}")
    assert missing.status_code == 404
    assert missing.json() == {"code": "woocommerce_rest_shop_order_invalid_id", "message": "Invalid ID.",
                              "data": {"status": 404}}
    assert wc.put(f"orders/{created['id']}", {"status": "completed"}).status_code == 400  # update_item: 400


def test_batch_create_update_delete_and_the_100_item_limit(served: Served, wc: API) -> None:
    victim = wc.post("products", {"name": "Doomed", "regular_price": "5"}).json()
    target = served.sandbox.store.products[0]
    result = wc.post("products/batch", {
        "create": [{"name": "Batch A", "regular_price": "9.5", "sku": "BATCH-A"}, {"name": "Batch B"}],
        "update": [{"id": target["id"], "sale_price": ""}, {"id": 999_999_999, "name": "ghost"}],
        "delete": [victim["id"]],
    })
    assert result.status_code == 200
    body = result.json()
    assert [p["name"] for p in body["create"]] == ["Batch A", "Batch B"]
    assert body["create"][0]["price"] == "9.50"
    assert body["update"][0]["id"] == target["id"]
    assert body["update"][1] == {"id": 999_999_999, "error": {
        "code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.", "data": {"status": 400}}}
    assert body["delete"][0]["id"] == victim["id"]
    assert wc.get(f"products/{victim['id']}").status_code == 404
    dup = wc.post("products/batch", {"create": [{"name": "Dup", "sku": "BATCH-A"}]}).json()
    assert dup["create"][0]["id"] == 0 and dup["create"][0]["error"]["code"] == "product_invalid_sku"
    too_many = wc.post("products/batch", {"create": [{"name": f"p{i}"} for i in range(60)],
                                          "delete": list(range(1, 42))})
    assert too_many.status_code == 413
    assert too_many.json() == {"code": "woocommerce_rest_request_entity_too_large",
                               "message": "Unable to accept more than 100 items for this request.",
                               "data": {"status": 413}}


def test_variations_of_a_variable_product(served: Served, wc: API) -> None:
    product = next(p for p in served.sandbox.store.products if p["type"] == "variable")
    listed = wc.get(f"products/{product['id']}/variations", params={"per_page": 100})
    variations = listed.json()
    assert sorted(v["id"] for v in variations) == sorted(product["variations"])
    assert all(v["parent_id"] == product["id"] for v in variations)
    assert variations[0]["_links"]["up"][0]["href"].endswith(f"/products/{product['id']}")
    assert wc.get(f"products/{product['id']}/variations/{variations[0]['id']}").json()["sku"] == variations[0]["sku"]
    other = next(p for p in served.sandbox.store.products if p["id"] != product["id"])
    wrong = wc.get(f"products/{other['id']}/variations/{variations[0]['id']}")
    assert wrong.status_code == 404 and wrong.json()["code"] == "woocommerce_rest_product_variation_invalid_id"
    made = wc.post(f"products/{product['id']}/variations", {"regular_price": "12", "attributes": [
        {"name": "Size", "option": "XXL"}]}).json()
    assert made["price"] == "12.00" and made["id"] in wc.get(f"products/{product['id']}").json()["variations"]


def test_refunds_change_the_order(served: Served, wc: API) -> None:
    order = next(o for o in served.sandbox.store.orders
                 if o["status"] == "completed" and not o["refunds"] and float(o["total"]) > 10)
    before = wc.get(f"orders/{order['id']}").json()
    refund = wc.post(f"orders/{order['id']}/refunds", {"amount": "5.00", "reason": "scratched"})
    assert refund.status_code == 201
    body = refund.json()
    assert body["amount"] == "5.00" and body["reason"] == "scratched"
    after = wc.get(f"orders/{order['id']}").json()
    assert after["refunds"][0] == {"id": body["id"], "reason": "scratched", "total": "-5.00"}
    assert after["date_modified_gmt"] > before["date_modified_gmt"]
    assert [r["id"] for r in wc.get(f"orders/{order['id']}/refunds").json()] == [body["id"]]
    too_much = wc.post(f"orders/{order['id']}/refunds", {"amount": after["total"]})
    assert too_much.status_code == 500
    assert too_much.json() == {"code": "woocommerce_rest_cannot_create_order_refund",
                               "message": "Invalid refund amount.", "data": 500}
    assert wc.put(f"orders/{order['id']}/refunds/{body['id']}", {"reason": "x"}).json()["code"] == "rest_no_route"
    assert wc.delete(f"orders/{order['id']}/refunds/{body['id']}").status_code == 200  # force defaults to true
    assert wc.get(f"orders/{order['id']}").json()["refunds"] == []


def test_coupons(served: Served, wc: API) -> None:
    listed = wc.get("coupons", params={"per_page": 100}).json()
    assert sorted(c["id"] for c in listed) == sorted(c["id"] for c in served.sandbox.store.coupons)
    made = wc.post("coupons", {"code": "Ferry25", "discount_type": "percent", "amount": "25"})
    assert made.status_code == 201 and made.json()["code"] == "ferry25" and made.json()["amount"] == "25.00"
    dup = wc.post("coupons", {"code": "ferry25"}).json()
    assert dup["code"] == "woocommerce_rest_coupon_code_already_exists"


def test_basic_auth_failures_over_https(served: Served) -> None:
    wrong_secret = served.client(consumer_secret="cs_wrong").get("orders")
    assert wrong_secret.status_code == 401
    assert wrong_secret.json() == {"code": "woocommerce_rest_authentication_error",
                                   "message": "Consumer secret is invalid.", "data": {"status": 401}}
    assert wrong_secret.headers["WWW-Authenticate"].startswith('Basic realm="WooCommerce API.')
    # An unknown key is no authentication error: the call runs anonymous and the endpoint refuses it.
    unknown_key = served.client(consumer_key="ck_unknown").get("orders")
    assert unknown_key.status_code == 401
    assert unknown_key.json() == {"code": "woocommerce_rest_cannot_view",
                                  "message": "Sorry, you cannot list resources.", "data": {"status": 401}}
    anonymous_write = served.client(consumer_key="ck_unknown").post("orders", {})
    assert anonymous_write.json()["code"] == "woocommerce_rest_cannot_create"


def test_query_string_auth_over_https(served: Served) -> None:
    response = served.client(query_string_auth=True).get("products", params={"per_page": 3})
    assert response.status_code == 200 and len(response.json()) == 3
    assert "consumer_key=" in response.request.url and "Authorization" not in response.request.headers


def test_oauth1_over_plain_http(served: Served, wc_oauth: API) -> None:
    response = wc_oauth.get("orders", params={"per_page": 7, "orderby": "id", "order": "asc"})
    assert response.status_code == 200
    assert response.request.url.startswith("http://") and "oauth_signature=" in response.request.url
    assert response.request.url.count("per_page=7") == 2  # the client sends the params twice; PHP keeps the last
    ids = [o["id"] for o in response.json()]
    assert ids == sorted(ids) and len(ids) == 7
    created = wc_oauth.post("coupons", {"code": "signed-over-http", "amount": "3"})
    assert created.status_code == 201


def test_oauth1_wrong_secret_and_basic_over_http_are_refused(served: Served) -> None:
    forged = served.client(plain_http=True, consumer_secret="cs_forged").get("orders")
    assert forged.status_code == 401
    assert forged.json()["message"] == "Invalid signature - provided signature does not match."
    wrong_key = served.client(plain_http=True, consumer_key="ck_nope").get("orders")
    assert wrong_key.json()["message"] == "Consumer key is invalid."


def test_faults_reach_the_client(served: Served, wc: API) -> None:
    import requests

    try:
        served.admin("POST", "faults", json={"seed": 3, "rules": [
            {"kind": "503", "rate": 1.0, "count": 1, "path": "orders"},
            {"kind": "429", "rate": 1.0, "count": 1, "retry_after": 2, "path": "orders"},
            {"kind": "reset", "rate": 1.0, "count": 1, "path": "orders"},
        ]})
        unavailable = wc.get("orders")
        assert unavailable.status_code == 503 and "Service Unavailable" in unavailable.text
        throttled = wc.get("orders")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
        with pytest.raises(requests.ConnectionError):
            wc.get("orders")
        assert wc.get("orders").status_code == 200
        assert served.admin("GET", "faults")["injected"] == {"429": 1, "503": 1, "reset": 1}
    finally:
        served.admin("DELETE", "faults")


def test_server_side_edit_is_seen_by_an_incremental_read(served: Served, wc: API) -> None:
    newest = max(o["date_modified_gmt"] for o in served.admin("GET", "records/orders"))
    order = served.sandbox.store.orders[5]
    edited = served.admin("PATCH", f"records/orders/{order['id']}", json={"status": "on-hold"})
    assert edited["date_modified_gmt"] > newest
    seen = wc.get("orders", params={"modified_after": newest, "dates_are_gmt": "true", "per_page": 100}).json()
    assert [o["id"] for o in seen] == [order["id"]] and seen[0]["status"] == "on-hold"
