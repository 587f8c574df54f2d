from __future__ import annotations

from pathlib import Path

import pytest

from ferry.engine.pipeline import interpolate, load_pipeline
from ferry.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"

ENV = {
    "SHOPIFY_URL": "https://127.0.0.1:1",
    "SHOPIFY_ACCESS_TOKEN": "shpat_secret_value",
    "SALESFORCE_LOGIN_URL": "https://127.0.0.1:2",
    "SALESFORCE_CLIENT_ID": "cid",
    "SALESFORCE_USERNAME": "u@example.com",
    "SALESFORCE_PRIVATE_KEY_FILE": "/tmp/key.pem",
}


def test_interpolation_reads_env_and_defaults() -> None:
    env = {"A": "1"}
    assert interpolate({"x": "${A}", "y": ["${B:-two}"], "z": "pre-${A}-post"}, env) == {
        "x": "1",
        "y": ["two"],
        "z": "pre-1-post",
    }
    assert interpolate("${B:-}", env) is None


def test_missing_variable_names_the_variable_and_the_place() -> None:
    with pytest.raises(ConfigError, match=r"source\.access_token: environment variable TOKEN is not set"):
        interpolate({"source": {"access_token": "${TOKEN}"}}, {})


def test_env_values_cannot_change_structure() -> None:
    assert interpolate({"x": "${A}"}, {"A": "{b: 1}\nc: 2"}) == {"x": "{b: 1}\nc: 2"}


def test_example_pipeline_loads_and_keeps_secrets_secret() -> None:
    spec = load_pipeline(EXAMPLE, ENV)
    assert [o.name for o in spec.objects] == ["Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem"]
    assert "shpat_secret_value" not in repr(spec) and "shpat_secret_value" not in str(spec.model_dump())


def test_invalid_pipeline_error_names_the_field_without_echoing_values(tmp_path: Path) -> None:
    bad = tmp_path / "p.yml"
    bad.write_text(EXAMPLE.read_text().replace("name: shopify-to-salesforce", "name: 'bad name!'"))
    with pytest.raises(ConfigError) as info:
        load_pipeline(bad, ENV)
    assert "name" in str(info.value) and "shpat_secret_value" not in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("system: shopify", "system: magento",
         "source.system: unknown system 'magento'; a source is one of: salesforce, shopify"),
        ("system: salesforce", "system: magento",
         "target.system: unknown system 'magento'; a target is one of: quickbooks, salesforce, shopify"),
        ("system: shopify", "kind: shopify", "source.system: no system given; a source is one of: salesforce, shopify"),
    ],
)
def test_an_unknown_system_is_named_with_the_known_ones(tmp_path: Path, old: str, new: str, message: str) -> None:
    bad = tmp_path / "p.yml"
    text = EXAMPLE.read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_pipeline(bad, ENV)
    assert message in str(info.value)


def test_source_blocks_are_told_apart_by_system() -> None:
    from typing import Literal

    from pydantic import BaseModel, TypeAdapter, ValidationError

    from ferry.connectors.shopify.config import ShopifyConfig
    from ferry.engine.pipeline import _block_union

    class OtherConfig(BaseModel):
        system: Literal["other"]
        path: str

    union = TypeAdapter(_block_union([ShopifyConfig, OtherConfig], "source"))
    shop = union.validate_python({"system": "shopify", "url": "https://127.0.0.1:1", "access_token": "t"})
    assert isinstance(shop, ShopifyConfig)
    assert isinstance(union.validate_python({"system": "other", "path": "/x"}), OtherConfig)
    with pytest.raises(ValidationError) as info:
        union.validate_python({"system": "other", "url": "https://127.0.0.1:1"})
    # Only the chosen system's model judges the block: its missing field, not every variant's.
    assert [e["loc"] for e in info.value.errors()] == [("other", "path")]
