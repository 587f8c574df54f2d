"""Shopify Admin REST source connector."""

from ferry.connectors.shopify.config import ShopifyConfig
from ferry.connectors.shopify.source import ShopifySource
from ferry.connectors.shopify.webhooks import ShopifyWebhookReceiver
from ferry.core.registry import Connector

CONNECTOR = Connector(
    system="shopify",
    source_config=ShopifyConfig,
    open_source=ShopifySource,
    description="Shopify Admin REST API: customers, products and orders (read)",
    webhooks=ShopifyWebhookReceiver,
)

__all__ = ["CONNECTOR", "ShopifyConfig", "ShopifySource"]
