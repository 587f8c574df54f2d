"""WooCommerce REST API (wc/v3) source connector: customers, products (with variations) and orders."""

from ferry.connectors.woocommerce.config import WooCommerceConfig
from ferry.connectors.woocommerce.source import WooCommerceSource
from ferry.connectors.woocommerce.webhooks import WooCommerceWebhookReceiver
from ferry.core.registry import Connector


def open_source(config: WooCommerceConfig) -> WooCommerceSource:
    return WooCommerceSource(config)


CONNECTOR = Connector(
    system="woocommerce",
    source_config=WooCommerceConfig,
    open_source=open_source,
    description="WooCommerce store (REST API wc/v3): customers, products and variations, orders with refunds",
    webhooks=WooCommerceWebhookReceiver,
)

__all__ = ["CONNECTOR", "WooCommerceConfig", "WooCommerceSource"]
