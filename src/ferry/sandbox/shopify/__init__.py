"""A faithful local emulator of the Shopify Admin REST and GraphQL APIs, and a seeded generator of a messy store.

    from ferry.sandbox.shopify import ShopifySandbox, generate_store, Store
"""

from __future__ import annotations

from ferry.sandbox.shopify.generator import generate_store
from ferry.sandbox.shopify.sandbox import API_VERSION, ShopifySandbox
from ferry.sandbox.shopify.store import Store
from ferry.sandbox.shopify.webhooks import sign_webhook, webhook_headers

__all__ = ["API_VERSION", "ShopifySandbox", "Store", "generate_store", "sign_webhook", "webhook_headers"]
