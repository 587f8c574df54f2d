"""Fixtures: a Shopify sandbox served over HTTPS from a thread, and ShopifyAPI pointed at it."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import shopify

from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox

# Small enough that ShopifyAPI (slow to build its objects: ~25 ms per full order) stays quick,
# large enough for several 250-record pages and every anomaly kind.
SIZES = {"customers": 300, "products": 60, "orders": 600}


@dataclass
class Served:
    sandbox: ShopifySandbox
    running: RunningSandbox

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def token(self) -> str:
        return self.sandbox.access_token

    @property
    def api(self) -> str:
        return f"{self.running.url}/admin/api/2025-07"


def _serve(state_dir: Path, **kwargs: object) -> Iterator[Served]:
    sandbox = ShopifySandbox(state_dir, **kwargs)  # type: ignore[arg-type]
    running = start_in_thread(sandbox.app, state_dir)
    try:
        yield Served(sandbox, running)
    finally:
        running.stop()


# "sharded": the opt-in mode for very large stores (two generator shards, records compressed and spilled
# to a file, decoded on read, pinned on edit); every client test runs against both.
MODES = {"plain": {}, "sharded": {"shard_orders": SIZES["orders"] // 2, "spill": True}}


@pytest.fixture(scope="module", params=sorted(MODES))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # A big bucket: these tests exercise the API, not the limiter (which has its own fixture).
    yield from _serve(tmp_path_factory.mktemp("shopify"), **SIZES, **MODES[request.param],
                      bucket_size=100_000, leak_rate=1000.0)


@pytest.fixture(scope="module")
def trusted_ca(served: Served) -> Iterator[None]:
    """Make urllib (under pyactiveresource) trust the sandbox CA, without turning verification off.

    urllib builds a fresh default SSL context per HTTPS connection, and the default context loads
    the file named by SSL_CERT_FILE, so setting it is enough; the client code stays unchanged.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_CERT_FILE", str(served.running.ca_file))
        yield


@pytest.fixture
def client(served: Served, trusted_ca: None) -> Iterator[Served]:
    shopify.ShopifyResource.set_site(served.api)
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": served.token})
    yield served
    shopify.ShopifyResource.clear_session()


# ---------------------------------------------------------------------- GraphQL
def graphql_url(served: Served, version: str = "2025-07") -> str:
    return f"{served.url}/admin/api/{version}/graphql.json"


def gql_session(served: Served, version: str = "2025-07") -> Any:
    """A gql client session over its requests transport: the sandbox URL, token and CA, nothing else."""
    from gql import Client
    from gql.transport.requests import RequestsHTTPTransport

    transport = RequestsHTTPTransport(url=graphql_url(served, version), verify=str(served.running.ca_file),
                                      headers={"X-Shopify-Access-Token": served.token}, retries=0)
    return Client(transport=transport)


def sandbox_http(served: Served) -> httpx.Client:
    """Plain HTTPS to the sandbox's control routes and bulk result URLs (the CA, no token)."""
    return httpx.Client(verify=ssl.create_default_context(cafile=str(served.running.ca_file)), timeout=10)


def configure_graphql(served: Served, settings: dict[str, Any]) -> dict[str, Any]:
    with sandbox_http(served) as http:
        resp = http.patch(f"{served.url}/__sandbox/graphql", json=settings)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def after_the_second_of(stamp: str | int) -> None:
    """Wait until the wall clock is past ``stamp``'s second (an updated_at, or epoch seconds): the sandbox stamps
    writes as Shopify does, to the second, so only a write in a later second has a later updated_at."""
    import time

    from ferry.sandbox.shopify.times import parse

    second = stamp if isinstance(stamp, int) else parse(stamp)
    while time.time() < second + 1:
        time.sleep(0.02)
