"""The WooCommerce source block, and WordPress error bodies turned into ferry errors."""

from __future__ import annotations

import httpx
import orjson
import pytest
from pydantic import ValidationError

from ferry.connectors.woocommerce import CONNECTOR, WooCommerceConfig
from ferry.connectors.woocommerce.client import classify
from ferry.errors import AuthError, PermanentError, TransientError

BLOCK = {"system": "woocommerce", "url": "https://shop.example.com/", "consumer_key": "ck_1", "consumer_secret": "cs_2"}


def test_the_block_validates_and_keeps_secrets_out_of_its_repr() -> None:
    cfg = WooCommerceConfig.model_validate(BLOCK | {"ca_file": ""})
    assert cfg.url == "https://shop.example.com" and cfg.ca_file is None and cfg.page_size == 100
    assert cfg.streams == ["customers", "products", "orders"]
    assert "cs_2" not in repr(cfg) and "ck_1" not in repr(cfg)
    assert WooCommerceConfig.model_validate(BLOCK | {"url": "https://shop.example.com/wp-json"}).url.endswith(".com")
    assert CONNECTOR.system == "woocommerce" and CONNECTOR.source_config is WooCommerceConfig


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "http://shop.example.com"}, "https://"),
        ({"consumer_secret": " "}, "WOOCOMMERCE_CONSUMER_SECRET"),
        ({"page_size": 101}, "less than or equal to 100"),
        ({"streams": ["coupons"]}, "customers"),
        ({"system": "shopify"}, "woocommerce"),
    ],
)
def test_bad_blocks_are_refused_with_what_to_fix(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WooCommerceConfig.model_validate(BLOCK | change)


def _answer(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "https://shop.example.com/wp-json/wc/v3/orders?consumer_secret=cs_2")
    return httpx.Response(status, content=orjson.dumps(body), headers=headers, request=request)


def test_wordpress_error_bodies_become_ferry_errors_with_the_stores_code() -> None:
    refused = classify(_answer(401, {"code": "woocommerce_rest_authentication_error",
                                     "message": "Consumer secret is invalid.", "data": {"status": 401}}))
    assert isinstance(refused, AuthError) and refused.code == "woocommerce_rest_authentication_error"
    assert "Consumer secret is invalid." in str(refused) and "WOOCOMMERCE_CONSUMER_SECRET" in str(refused)
    assert "cs_2" not in str(refused)  # the query string is never in a message

    invalid = classify(_answer(400, {"code": "rest_invalid_param", "message": "Invalid parameter(s): per_page",
                                     "data": {"status": 400, "params": {"per_page": "per_page must be <= 100"}}}))
    assert isinstance(invalid, PermanentError) and not invalid.transient
    assert "per_page must be <= 100" in str(invalid) and invalid.code == "rest_invalid_param"

    no_route = classify(_answer(404, {"code": "rest_no_route", "message": "No route", "data": {"status": 404}}))
    assert isinstance(no_route, PermanentError) and "pretty permalinks" in str(no_route)

    busy = classify(_answer(503, "<html>nginx</html>", {"Retry-After": "7"}))
    assert isinstance(busy, TransientError) and busy.retry_after == 7.0 and busy.code == "HTTP_503"
    fatal = classify(_answer(500, {"code": "internal_server_error", "message": "<p>critical error</p>",
                                   "data": {"status": 500}}))
    assert isinstance(fatal, TransientError) and fatal.code == "internal_server_error"
    assert classify(_answer(200, [])) is None
