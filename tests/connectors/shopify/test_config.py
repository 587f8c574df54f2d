from __future__ import annotations

import pytest
from pydantic import ValidationError

from ferry.connectors.shopify import ShopifyConfig

BASE = {"system": "shopify", "url": "https://acme.myshopify.com/", "access_token": "shpat_x",
        "streams": ["customers", "orders"]}


def test_defaults_and_normalisation() -> None:
    cfg = ShopifyConfig.model_validate({**BASE, "ca_file": ""})
    assert cfg.url == "https://acme.myshopify.com"
    assert cfg.ca_file is None and cfg.page_size == 250 and cfg.api_version == "2026-10"


def test_token_is_never_shown() -> None:
    cfg = ShopifyConfig.model_validate(BASE)
    assert "shpat_x" not in repr(cfg) and "shpat_x" not in str(cfg.model_dump())


@pytest.mark.parametrize(
    ("override", "field"),
    [({"page_size": 251}, "page_size"), ({"streams": ["refunds"]}, "streams"), ({"url": "acme"}, "url"),
     ({"access_token": ""}, "access_token"), ({"api_version": "2025-13"}, "api_version"),
     ({"system": "salesforce"}, "system")],
)
def test_errors_name_the_field(override: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ShopifyConfig.model_validate({**BASE, **override})
    assert field in str(info.value)
