"""A Shopify sandbox and a Salesforce sandbox in-process over HTTPS, the example pipeline with webhooks, and
``ferry serve`` on its own thread and event loop: what the serve tests drive through real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter

from ferry.cli.demo import demo_env
from ferry.core.webhooks import hmac_sha256_base64
from ferry.engine.pipeline import PipelineSpec, WebhooksSpec, load_pipeline
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.sandbox.tls import ensure_tls
from ferry.serve.service import ServeOptions, Service
from ferry.store import Store

REPO = Path(__file__).resolve().parents[2]
PIPELINE_FILE = REPO / "examples" / "shopify-to-salesforce.yml"
API = "/admin/api/2025-07"


@dataclass
class ServeThread:
    """A Service running on its own thread's event loop (signals stay with pytest's main thread)."""

    service: Service
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    exit_code: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.service.url is not None
        return self.service.url

    def stop(self) -> int:
        self.loop.call_soon_threadsafe(self.service.request_stop)
        self.thread.join(60)
        assert not self.thread.is_alive(), "ferry serve did not stop"
        return self.exit_code[0]


def start_serve(specs: list[PipelineSpec], store: Store, options: ServeOptions,
                routers: Sequence[APIRouter] = ()) -> ServeThread:
    service = Service(specs, store, options, routers)
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        try:
            code = loop.run_until_complete(service.run(on_ready=lambda _: ready.set()))
            box.setdefault("code", []).append(code)
        except BaseException as exc:  # pragma: no cover - surfaced by the wait below
            box["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "ferry serve did not start"
    if "error" in box:
        raise box["error"]
    codes: list[int] = []
    box["code"] = codes
    return ServeThread(service, thread, box["loop"], codes)


@dataclass
class World:
    tmp: Path
    shop: ShopifySandbox
    shop_run: RunningSandbox
    org: SalesforceSandbox
    org_run: RunningSandbox
    spec: PipelineSpec
    store: Store
    shop_http: httpx.Client
    org_http: httpx.Client

    def serve_options(self, **overrides: Any) -> ServeOptions:
        tls = ensure_tls(self.tmp)  # the sandboxes' CA signed it: their webhook dispatchers trust it
        base = {"host": "127.0.0.1", "port": 0, "tls_cert": tls.cert_file, "tls_key": tls.key_file, "window": 0.1}
        return ServeOptions(**{**base, **overrides})

    # -- the shop ---------------------------------------------------------------------------------------
    def put(self, resource: str, rid: int, body: dict[str, Any]) -> dict[str, Any]:
        singular = resource[:-1]
        resp = self.shop_http.put(f"{API}/{resource}/{rid}.json", json={singular: {"id": rid, **body}})
        assert resp.status_code == 200, resp.text
        return dict(resp.json()[singular])

    def shop_records(self, resource: str) -> list[dict[str, Any]]:
        resp = self.shop_http.get(f"/__sandbox/records/{resource}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return list(body if isinstance(body, list) else body.get(resource, body.get("records", [])))

    def subscriptions(self) -> list[dict[str, Any]]:
        return list(self.shop_http.get(f"{API}/webhooks.json").json()["webhooks"])

    def deliveries(self) -> list[dict[str, Any]]:
        body = self.shop_http.get("/__sandbox/webhooks/deliveries").json()
        return list(body["deliveries"] if isinstance(body, dict) else body)

    def signed(self, body: bytes, *, topic: str, webhook_id: str, shop: str | None = None,
               secret: str | None = None) -> dict[str, str]:
        """Headers as Shopify sends them, signed with the sandbox's secret (or ``secret``)."""
        return {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": hmac_sha256_base64(body, secret or self.shop.webhook_secret),
            "X-Shopify-Shop-Domain": shop or f"{self.shop.shop}.myshopify.com",
            "X-Shopify-API-Version": "2025-07",
            "X-Shopify-Webhook-Id": webhook_id,
        }

    # -- the org ----------------------------------------------------------------------------------------
    def sf_records(self, sobject: str) -> list[dict[str, Any]]:
        resp = self.org_http.get(f"/__sandbox/records/{sobject}")
        assert resp.status_code == 200, resp.text
        return list(resp.json())

    def sf_calls(self) -> dict[str, int]:
        return dict(self.org_http.get("/__sandbox/stats").json()["by_endpoint"])


def make_world(tmp: Path, *, customers: int = 40, products: int = 10, orders: int = 60,
               org_schema: str | None = None) -> World:
    """``org_schema``: the Salesforce sandbox's ``--schema`` file's text (an org's validation rules, ...)."""
    shop = ShopifySandbox(tmp, seed=5, customers=customers, products=products, orders=orders,
                          bucket_size=100_000, leak_rate=100_000.0, webhook_time_scale=0.001)
    schema_file = None
    if org_schema is not None:
        schema_file = tmp / "org-schema.yaml"
        schema_file.write_text(org_schema)
    org = SalesforceSandbox(tmp, extra_schema=schema_file)
    shop_run = start_in_thread(shop.app, tmp)
    org_run = start_in_thread(org.app, tmp)
    shop_info = {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)}
    org_info = {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)}
    spec = load_pipeline(PIPELINE_FILE, demo_env(shop_info, org_info))
    spec = spec.model_copy(update={"webhooks": WebhooksSpec(secret=shop.webhook_secret)})
    verify = str(shop_run.ca_file)
    shop_http = httpx.Client(base_url=shop_run.url, verify=verify, timeout=30,
                             headers={"X-Shopify-Access-Token": shop.access_token})
    org_http = httpx.Client(base_url=org_run.url, verify=str(org_run.ca_file), timeout=30)
    return World(tmp, shop, shop_run, org, org_run, spec, Store(tmp / "ferry.db"), shop_http, org_http)


def stop_world(world: World) -> None:
    world.shop_http.close()
    world.org_http.close()
    world.org_run.stop()
    world.shop_run.stop()
    world.store.close()


def free_port() -> int:
    """A loopback port nobody listens on now (a restart of `ferry serve` reuses it: the same webhook address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
