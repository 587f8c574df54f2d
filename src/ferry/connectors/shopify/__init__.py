"""Shopify: the Admin API source (REST, or GraphQL opt-in), its webhooks, and the GraphQL Admin API sink (customers)."""

from ferry.connectors.shopify.config import ShopifyConfig
from ferry.connectors.shopify.sink import ShopifySink
from ferry.connectors.shopify.sink_config import ShopifySinkConfig
from ferry.connectors.shopify.source import ShopifySource
from ferry.connectors.shopify.webhooks import ShopifyWebhookReceiver
from ferry.core.contracts import Sink, SinkContext
from ferry.core.registry import Connector


def open_sink(config: ShopifySinkConfig, ctx: SinkContext) -> Sink:
    return ShopifySink(config, ctx)


CONNECTOR = Connector(
    system="shopify",
    source_config=ShopifyConfig,
    open_source=ShopifySource,
    sink_config=ShopifySinkConfig,
    open_sink=open_sink,
    description="Shopify Admin API: customers, products and orders (read); customers (write, GraphQL, id map)",
    webhooks=ShopifyWebhookReceiver,
)

__all__ = ["CONNECTOR", "ShopifyConfig", "ShopifySink", "ShopifySinkConfig", "ShopifySource"]
