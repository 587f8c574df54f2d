"""``ShopifySandbox``: a generated (or given) store served as the Shopify Admin REST and GraphQL APIs."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ferry.sandbox.shopify.app import build_app
from ferry.sandbox.shopify.faults import FaultGate, Faults
from ferry.sandbox.shopify.gate import ApiGate, Stats
from ferry.sandbox.shopify.generator import generate_compact_store, generate_store
from ferry.sandbox.shopify.graphql import GraphQLApi
from ferry.sandbox.shopify.ratelimit import Buckets
from ferry.sandbox.shopify.state import ShopState
from ferry.sandbox.shopify.store import Store
from ferry.sandbox.shopify.webhooks import ShopifyWebhooks
from ferry.sandbox.tls import ensure_tls
from ferry.sandbox.webhooks import install_routes

API_VERSION = "2025-07"


class ShopifySandbox:
    """Serve ``store`` (or a store generated from ``seed`` and sizes) over the Admin REST and GraphQL APIs.

    ``shard_orders`` (opt-in) generates the store in shards of that many orders and keeps its records
    compressed (``compact.CompactRecords``), so stores of millions of orders fit in memory; the data then
    differ from the ordinary store's above one shard (see ``generator.generate_shards``); with ``spill``
    too, the compressed records live in a file under ``state_dir`` rather than in memory.
    ``graphql_plan`` (standard, advanced, plus, enterprise) sizes the GraphQL points bucket (``graphql/cost.py``);
    ``bulk_seconds_per_object`` paces bulk operations (default 0.5 ms an object; 0 runs them as fast as it can).
    Webhook subscriptions get signed deliveries (``webhooks.py``) to https:// loopback receivers whose certificate
    the sandbox CA or one of ``webhook_ca_files`` signed; ``webhook_time_scale`` scales the retry delays and
    ``webhook_faults`` configures delivery faults (drop, duplicate, reorder, delay).
    Writes are stamped as Shopify stamps them, to the wall clock's second: writes within one second share their
    updated_at (``state.WriteClock``). ``same_second_writes=False`` stamps each write a second after the last
    instead (versions always differ, and a burst runs the store's clock ahead of the wall clock).
    ``sb.app`` is the ASGI app (auth, leaky bucket and stats wrap the FastAPI routes); start it with
    ``ferry.sandbox.serve.start_in_thread(sb.app, state_dir)``. Tokens are random per instance.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        store: Store | None = None,
        seed: int = 7,
        customers: int = 1000,
        products: int = 200,
        orders: int = 2000,
        bucket_size: int = 40,
        leak_rate: float = 2.0,
        shop: str = "ferry-demo",
        shard_orders: int | None = None,
        spill: bool = False,
        graphql_plan: str = "standard",
        bulk_seconds_per_object: float | None = None,
        webhook_ca_files: tuple[Path, ...] = (),
        webhook_time_scale: float = 1.0,
        webhook_faults: dict[str, Any] | None = None,
        same_second_writes: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.shop = shop
        if store is None and shard_orders:
            # Opt-in compact mode for very large stores (see generator.generate_shards): other data.
            store = generate_compact_store(seed=seed, customers=customers, products=products, orders=orders,
                                           shard_orders=shard_orders, shop=shop,
                                           spill_dir=self.state_dir / "records" if spill else None)
        self.store = store if store is not None else generate_store(
            seed=seed, customers=customers, products=products, orders=orders, shop=shop
        )
        self.access_token = f"shpat_{secrets.token_hex(16)}"
        self.webhook_secret = secrets.token_hex(32)
        self.stats = Stats()
        self.faults = Faults()
        self.state = ShopState(self.store, seed=seed, shop=shop, same_second_writes=same_second_writes)
        self.graphql = GraphQLApi(self.state, self.state_dir, plan=graphql_plan)
        if bulk_seconds_per_object is not None:
            self.graphql.configure({"bulk": {"seconds_per_object": bulk_seconds_per_object}})
        self.api: FastAPI = build_app(self.state, self.stats, self.faults, self.graphql)
        self.webhooks = ShopifyWebhooks(self.state, secret=self.webhook_secret, time_scale=webhook_time_scale,
                                        ca_files=[ensure_tls(self.state_dir).ca_file, *webhook_ca_files])
        install_routes(self.api, self.webhooks.dispatcher)
        if webhook_faults:
            self.webhooks.dispatcher.faults.configure(webhook_faults)  # the POST /__sandbox/webhooks/faults body
        gate = ApiGate(self.api, token=self.access_token, buckets=Buckets(bucket_size, leak_rate), stats=self.stats)
        self.app: Any = FaultGate(gate, self.faults)

    def credentials(self, base_url: str) -> dict[str, str]:
        return {
            "url": base_url,
            "access_token": self.access_token,
            "webhook_secret": self.webhook_secret,
            "api_version": API_VERSION,
            "shop": self.shop,
        }
