"""The connector registry: built-in packages' CONNECTORs, third-party ones by entry point, opened by system."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from ferry.connectors import registry
from ferry.connectors.quickbooks.config import QuickBooksConfig
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.source_config import SalesforceSourceConfig
from ferry.connectors.shopify import ShopifyConfig, ShopifySource
from ferry.core.contracts import Source
from ferry.core.registry import Connector
from ferry.errors import ConfigError


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    registry.connectors.cache_clear()
    yield
    registry.connectors.cache_clear()


class _EntryPoint:
    def __init__(self, name: str, loaded: Any) -> None:
        self.name, self.loaded = name, loaded

    def load(self) -> Any:
        if isinstance(self.loaded, Exception):
            raise self.loaded
        return self.loaded


def test_the_built_in_connectors_are_found() -> None:
    assert {"shopify", "salesforce"} <= set(registry.connectors())
    assert {"shopify", "woocommerce", "salesforce"} <= set(registry.source_systems())
    assert "quickbooks" not in registry.source_systems()
    assert "salesforce" in registry.sink_systems()
    assert ShopifyConfig in registry.source_configs() and SalesforceConfig in registry.sink_configs()
    assert SalesforceSourceConfig in registry.source_configs()


def test_an_unknown_system_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no connector for system 'magento'; known: .*salesforce, shopify"):
        registry.connector("magento")


async def test_a_source_is_opened_from_its_block() -> None:
    config = ShopifyConfig(system="shopify", url="https://127.0.0.1:1", access_token="shpat_x")  # type: ignore[arg-type]
    async with registry.open_source(config) as source:
        assert isinstance(source, ShopifySource)
        assert source.system == "shopify" and list(source.streams) == ["customers", "products", "orders"]
        assert source.api_calls == 0
        assert source.locate({"id": 5, "line_items": []}) == ("orders", "5")
        assert source.locate({"id": 6, "variants": []}) == ("products", "6")
        assert source.locate({"id": 7}) == ("customers", "7")
        assert source.locate({"email": "x@example.com"}) is None
        assert source.identify("customers", {"id": 7, "updated_at": "2026-03-04T10:11:12-05:00"}) == (
            "7", "2026-03-04T15:11:12.000000Z")
    with pytest.raises(ConfigError, match="quickbooks cannot be a source"):
        registry.open_source(QuickBooksConfig.model_construct(system="quickbooks"))


def test_third_party_connectors_come_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    class PlugConfig(BaseModel):
        system: str = "plug"

    def open_plug(config: Any) -> Source:
        raise AssertionError("not opened here")

    plug = Connector(system="plug", source_config=PlugConfig, open_source=open_plug)
    shadow = Connector(system="shopify", source_config=PlugConfig, open_source=open_plug)
    points = [
        _EntryPoint("plug", plug),
        _EntryPoint("shadow", shadow),  # cannot replace a built-in
        _EntryPoint("broken", ImportError("no module named plug_deps")),  # logged, not fatal
        _EntryPoint("odd", object()),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == "ferry.connectors" else [])
    found = registry.connectors()
    assert found["plug"] is plug
    assert found["shopify"].source_config is ShopifyConfig
    assert "plug" in registry.source_systems() and PlugConfig in registry.source_configs()
