"""Fixtures: one WooCommerce sandbox served twice (HTTPS and plain HTTP) from threads, and the official client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from woocommerce import API

from ferry.sandbox.serve import RunningSandbox
from ferry.sandbox.woocommerce import WooCommerceSandbox

# Several pages at per_page=100, every anomaly kind, and still quick to generate and serve.
SIZES = {"customers": 150, "products": 40, "orders": 320}


@dataclass
class Served:
    sandbox: WooCommerceSandbox
    https: RunningSandbox
    http: RunningSandbox

    def client(self, *, plain_http: bool = False, **overrides: Any) -> API:
        """The official client, unchanged but for the URL and the CA file (``verify_ssl`` is passed to requests)."""
        running = self.http if plain_http else self.https
        options: dict[str, Any] = {"consumer_key": self.sandbox.consumer_key,
                                   "consumer_secret": self.sandbox.consumer_secret, "version": "wc/v3",
                                   "timeout": 10}
        if not plain_http:
            options["verify_ssl"] = str(running.ca_file)
        return API(url=running.url, **{**options, **overrides})

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.https.url}/__sandbox/{path}", verify=str(self.https.ca_file),
                                    timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state_dir = tmp_path_factory.mktemp("woocommerce")
    sandbox = WooCommerceSandbox(state_dir, seed=11, customers=SIZES["customers"], products=SIZES["products"],
                                 orders=SIZES["orders"])
    https = sandbox.start(state_dir)
    http = sandbox.start(state_dir, plain_http=True)
    try:
        yield Served(sandbox, https, http)
    finally:
        https.stop()
        http.stop()


@pytest.fixture
def wc(served: Served) -> API:
    return served.client()


@pytest.fixture
def wc_oauth(served: Served) -> API:
    return served.client(plain_http=True)
