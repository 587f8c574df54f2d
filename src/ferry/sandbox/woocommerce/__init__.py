"""A faithful local emulator of the WooCommerce REST API (``/wp-json/wc/v3``), and a seeded generator of a messy store.

    from ferry.sandbox.woocommerce import WooCommerceSandbox, generate_store, Store
"""

from __future__ import annotations

from ferry.sandbox.woocommerce.generator import generate_store
from ferry.sandbox.woocommerce.sandbox import API_VERSION, WooCommerceSandbox
from ferry.sandbox.woocommerce.store import Store

__all__ = ["API_VERSION", "Store", "WooCommerceSandbox", "generate_store"]
