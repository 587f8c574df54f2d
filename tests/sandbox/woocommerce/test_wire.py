"""The wire details a client meets beyond the official client's happy path: OAuth edge cases, routing, filters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest
import requests

from .conftest import Served

API = "/wp-json/wc/v3"


def _enc(text: str) -> str:
    return quote(text, safe="-._~")


def _oauth_header(method: str, url: str, query: dict[str, str], key: str, secret: str, *, algorithm: str,
                  timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """RFC 5849 §3.4 signing of a one-legged request, written from the RFC (not from the sandbox)."""
    oauth = {"oauth_consumer_key": key, "oauth_timestamp": str(timestamp or int(time.time())),
             "oauth_nonce": nonce or uuid.uuid4().hex, "oauth_signature_method": f"HMAC-{algorithm.upper()}"}
    pairs = sorted((_enc(k), _enc(v)) for k, v in {**query, **oauth}.items())
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    base = "&".join([method, _enc(url), _enc(normalized)])
    digest = hmac.new(f"{_enc(secret)}&".encode(), base.encode(), getattr(hashlib, algorithm)).digest()
    oauth["oauth_signature"] = base64.b64encode(digest).decode()
    return {"Authorization": "OAuth " + ", ".join(f'{k}="{_enc(v)}"' for k, v in oauth.items())}


def _http_get(served: Served, path: str, params: dict[str, str], **kw: Any) -> requests.Response:
    return requests.get(f"{served.http.url}{API}/{path}", params=params, timeout=10, **kw)


def _https_get(served: Served, path: str, params: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
    auth = (served.sandbox.consumer_key, served.sandbox.consumer_secret)
    return requests.get(f"{served.https.url}{API}/{path}", params=params, auth=auth,
                        verify=str(served.https.ca_file), timeout=10, **kw)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_oauth_in_the_authorization_header_with_either_hash(served: Served, algorithm: str) -> None:
    query = {"per_page": "2", "search": "a b/c"}
    headers = _oauth_header("GET", f"{served.http.url}{API}/customers", query, served.sandbox.consumer_key,
                            served.sandbox.consumer_secret, algorithm=algorithm)
    response = _http_get(served, "customers", query, headers=headers)
    assert response.status_code == 200, response.text


def test_oauth_nonce_replay_stale_timestamp_and_missing_parameters(served: Served) -> None:
    url = f"{served.http.url}{API}/coupons"
    key, secret = served.sandbox.consumer_key, served.sandbox.consumer_secret
    headers = _oauth_header("GET", url, {}, key, secret, algorithm="sha256", nonce="n-" + uuid.uuid4().hex)
    assert _http_get(served, "coupons", {}, headers=headers).status_code == 200
    replay = _http_get(served, "coupons", {}, headers=headers).json()
    assert replay["message"] == "Invalid nonce - nonce has already been used."
    stale = _oauth_header("GET", url, {}, key, secret, algorithm="sha256", timestamp=int(time.time()) - 3600)
    assert _http_get(served, "coupons", {}, headers=stale).json() == {
        "code": "woocommerce_rest_authentication_error", "message": "Invalid timestamp.", "data": {"status": 401}}
    partial = _http_get(served, "coupons", {"oauth_consumer_key": key, "oauth_nonce": "x"}).json()
    assert partial["code"] == "woocommerce_rest_authentication_missing_parameter"
    assert partial["message"] == ("Missing OAuth parameters oauth_timestamp, oauth_signature, "
                                  "oauth_signature_method")


def test_basic_auth_is_not_read_over_plain_http(served: Served) -> None:
    response = _http_get(served, "orders", {}, auth=(served.sandbox.consumer_key, served.sandbox.consumer_secret))
    assert response.status_code == 401 and response.json()["code"] == "woocommerce_rest_cannot_view"


def test_routes_wordpress_does_not_have(served: Served) -> None:
    for path in ("widgets", "orders/abc", "orders/1/notes/x"):
        body = _https_get(served, path).json()
        assert body == {"code": "rest_no_route", "message": "No route was found matching the URL and request method.",
                        "data": {"status": 404}}
    put_on_collection = requests.put(f"{served.https.url}{API}/orders", json={}, verify=str(served.https.ca_file),
                                     auth=(served.sandbox.consumer_key, served.sandbox.consumer_secret), timeout=10)
    assert put_on_collection.status_code == 404 and put_on_collection.json()["code"] == "rest_no_route"


def test_a_date_filter_with_an_offset_is_converted_to_store_time(served: Served) -> None:
    orders = [o for o in served.admin("GET", "records/orders") if o["status"] not in ("trash", "checkout-draft")]
    bound = sorted(o["date_created_gmt"] for o in orders)[len(orders) // 3]
    with_z = _https_get(served, "orders", {"after": f"{bound}Z", "per_page": 100})
    assert int(with_z.headers["X-WP-Total"]) == sum(o["date_created_gmt"] > bound for o in orders)
    bad = _https_get(served, "orders", {"after": "yesterday"}).json()
    assert bad["data"]["details"]["after"] == {"code": "rest_invalid_date", "message": "Invalid date.", "data": None}


def test_paging_parameters(served: Served) -> None:
    total = int(_https_get(served, "customers", {"per_page": 1}).headers["X-WP-Total"])
    beyond = _https_get(served, "customers", {"page": 999, "per_page": 50})
    assert beyond.status_code == 200 and beyond.json() == [] and beyond.headers["X-WP-Total"] == str(total)
    assert 'rel="prev"' in beyond.headers["Link"] and 'rel="next"' not in beyond.headers["Link"]
    by_offset = _https_get(served, "customers", {"offset": 3, "per_page": 2, "orderby": "id"}).json()
    by_page = _https_get(served, "customers", {"page": 1, "per_page": 5, "orderby": "id"}).json()
    assert [c["id"] for c in by_offset] == [c["id"] for c in by_page][3:5]
    assert _https_get(served, "customers", {"page": 0}).json()["data"]["params"] == {
        "page": "page must be greater than or equal to 1"}
    assert _https_get(served, "customers", {"per_page": "ten"}).json()["data"]["details"]["per_page"] == {
        "code": "rest_invalid_type", "message": "per_page is not of type integer.", "data": {"param": "per_page"}}


def test_include_order_and_fields(served: Served) -> None:
    ids = [o["id"] for o in served.sandbox.store.orders[10:14]][::-1]
    listed = _https_get(served, "orders", {"include": ",".join(map(str, ids)), "orderby": "include",
                                           "_fields": "id,status,date_modified_gmt"}).json()
    assert [o["id"] for o in listed] == ids
    assert set(listed[0]) == {"id", "status", "date_modified_gmt"}


def test_customers_have_no_date_filters_and_sort_by_name(served: Served) -> None:
    every = _https_get(served, "customers", {"per_page": 100, "modified_after": "2099-01-01T00:00:00"})
    assert every.headers["X-WP-Total"] == str(len(served.sandbox.store.customers))  # ignored, as WordPress does
    names = [c["username"] for c in every.json()]
    assert names == sorted(names)  # default orderby=name, order=asc


def test_query_string_credentials_stay_in_the_link_header(served: Served) -> None:
    params = {"consumer_key": served.sandbox.consumer_key, "consumer_secret": served.sandbox.consumer_secret,
              "per_page": "5"}
    response = requests.get(f"{served.https.url}{API}/products", params=params, verify=str(served.https.ca_file),
                            timeout=10)
    assert response.status_code == 200
    assert f"consumer_key={served.sandbox.consumer_key}" in response.links["next"]["url"]


def test_a_500_fault_is_wordpress_critical_error_and_a_timeout_holds_then_drops(served: Served) -> None:
    try:
        served.admin("POST", "faults", json={"rules": [{"kind": "500", "count": 1},
                                                        {"kind": "timeout", "count": 1, "hold_seconds": 0.5}]})
        failed = _https_get(served, "orders")
        assert failed.status_code == 500 and failed.json()["code"] == "internal_server_error"
        with pytest.raises(requests.ConnectionError):
            _https_get(served, "orders")
        assert served.admin("GET", "records/customers")  # the sandbox's own routes are never faulted
    finally:
        served.admin("DELETE", "faults")


def test_stats_count_calls_per_route(served: Served) -> None:
    before = served.admin("GET", "stats")
    order_id = served.sandbox.store.orders[0]["id"]
    _https_get(served, f"orders/{order_id}")
    after = served.admin("GET", "stats")
    route = "GET /wp-json/wc/v3/orders/{id}"
    assert after["by_endpoint"][route] == before["by_endpoint"].get(route, 0) + 1
    assert after["records"]["orders"] >= 1 and after["timezone"] == "Europe/Berlin"


def test_customer_delete_checks_force_before_the_id(served: Served) -> None:
    auth = (served.sandbox.consumer_key, served.sandbox.consumer_secret)
    url = f"{served.https.url}{API}/customers/987654321"
    unforced = requests.delete(url, auth=auth, verify=str(served.https.ca_file), timeout=10)
    assert unforced.status_code == 501 and unforced.json()["code"] == "woocommerce_rest_trash_not_supported"
    forced = requests.delete(url, params={"force": "true"}, auth=auth, verify=str(served.https.ca_file), timeout=10)
    assert forced.status_code == 400 and forced.json()["message"] == "Invalid resource id."


def test_a_trashed_coupon_leaves_the_list(served: Served) -> None:
    auth = (served.sandbox.consumer_key, served.sandbox.consumer_secret)
    coupon = served.sandbox.store.coupons[0]
    trashed = requests.delete(f"{served.https.url}{API}/coupons/{coupon['id']}", auth=auth,
                              verify=str(served.https.ca_file), timeout=10)
    assert trashed.status_code == 200
    listed = _https_get(served, "coupons", {"per_page": 100}).json()
    assert coupon["id"] not in [c["id"] for c in listed]
    assert _https_get(served, f"coupons/{coupon['id']}").json()["status"] == "trash"


def test_records_control_endpoint_pages_in_id_order(served: Served) -> None:
    every = served.admin("GET", "records/variations")
    assert [v["id"] for v in every] == sorted(v["id"] for v in every) and all("product_id" in v for v in every)
    assert served.admin("GET", "records/variations", params={"offset": 2, "limit": 3}) == every[2:5]
