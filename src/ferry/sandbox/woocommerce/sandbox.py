"""``WooCommerceSandbox``: a generated (or given) store served as the WooCommerce REST API (``wc/v3``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.tls import ensure_tls
from ferry.sandbox.webhooks import install_routes
from ferry.sandbox.woocommerce.app import build_app
from ferry.sandbox.woocommerce.auth import ApiKey, Authenticator, AuthGate, Stats
from ferry.sandbox.woocommerce.faults import FaultGate, Faults
from ferry.sandbox.woocommerce.generator import generate_store
from ferry.sandbox.woocommerce.state import StoreState
from ferry.sandbox.woocommerce.store import Store
from ferry.sandbox.woocommerce.times import DEFAULT_TIMEZONE
from ferry.sandbox.woocommerce.webhooks import Webhooks, install_webhook_routes

API_VERSION = "wc/v3"


class WooCommerceSandbox:
    """Serve ``store`` (or one generated from ``seed`` and sizes) over ``/wp-json/wc/v3/``.

    ``sb.app`` is the ASGI app (faults, then authentication and stats, around the FastAPI routes); start it
    with ``sb.start(state_dir)`` (HTTPS, Basic auth) or ``sb.start(state_dir, plain_http=True)`` (the
    OAuth 1.0a path). The consumer key and secret are random per instance unless given; ``faults`` is a fault
    configuration (see ``faults``), also settable later through ``sb.faults`` or ``/__sandbox/faults``.
    Webhooks (``/wp-json/wc/v3/webhooks``) deliver to loopback receivers (``webhooks.py``); https:// ones need a
    certificate from the sandbox CA or one of ``webhook_ca_files``; ``webhook_faults`` configures delivery faults.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        store: Store | None = None,
        seed: int = 7,
        customers: int = 200,
        products: int = 40,
        orders: int = 400,
        timezone: str = DEFAULT_TIMEZONE,
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        faults: dict[str, Any] | None = None,
        webhook_ca_files: tuple[Path, ...] = (),
        webhook_faults: dict[str, Any] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.store = store if store is not None else generate_store(
            seed=seed, customers=customers, products=products, orders=orders, timezone=timezone)
        self.key = ApiKey(consumer_key or f"ck_{secrets.token_hex(20)}",
                          consumer_secret or f"cs_{secrets.token_hex(20)}")
        self.stats = Stats()
        self.faults = Faults()
        if faults:
            self.faults.configure(faults)  # the POST /__sandbox/faults body; ValueError when it is not valid
        self.state = StoreState(self.store)
        self.api: FastAPI = build_app(self.state, self.stats, self.faults)
        self.webhooks = Webhooks(self.state, ca_files=[ensure_tls(self.state_dir).ca_file, *webhook_ca_files])
        install_webhook_routes(self.api, self.webhooks)
        install_routes(self.api, self.webhooks.dispatcher)
        if webhook_faults:
            self.webhooks.dispatcher.faults.configure(webhook_faults)  # the POST /__sandbox/webhooks/faults body
        self.app: Any = FaultGate(AuthGate(self.api, Authenticator(self.key), self.stats), self.faults)

    @property
    def consumer_key(self) -> str:
        return self.key.consumer_key

    @property
    def consumer_secret(self) -> str:
        return self.key.consumer_secret

    def credentials(self, base_url: str) -> dict[str, str]:
        return {
            "url": base_url,
            "consumer_key": self.key.consumer_key,
            "consumer_secret": self.key.consumer_secret,
            "api_version": API_VERSION,
            "timezone": self.store.timezone,
            "currency": self.store.currency,
        }

    def start(self, state_dir: Path | None = None, *, port: int = 0, plain_http: bool = False) -> RunningSandbox:
        """Serve from a background thread (tests, the demo); ``plain_http`` serves http:// (OAuth 1.0a)."""
        return start_in_thread(self.app, state_dir or self.state_dir, port, plain_http=plain_http)
