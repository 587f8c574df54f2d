"""Shopify Admin REST source connector."""

from ferry.connectors.shopify.config import ShopifyConfig
from ferry.connectors.shopify.source import ShopifySource

__all__ = ["ShopifyConfig", "ShopifySource"]
