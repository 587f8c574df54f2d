"""Shared set-up for engine tests: both sandboxes over HTTPS in threads, the example pipeline pointed at them."""

from __future__ import annotations

import os
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from ferry.cli.demo import demo_env
from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox, generate_store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"
EXT_IDS = {
    "Account": "Shopify_Customer_Id__c",
    "Contact": "Shopify_Customer_Id__c",
    "Product2": "Shopify_Product_Id__c",
    "PricebookEntry": "Shopify_Variant_Id__c",
    "Order": "Shopify_Order_Id__c",
    "OrderItem": "Shopify_Line_Item_Id__c",
}


@dataclass
class World:
    tmp: Path
    shop: ShopifySandbox
    org: SalesforceSandbox
    shop_run: RunningSandbox
    org_run: RunningSandbox
    shopify_api: str = "graphql"  # the example pipeline's `api:` (tests of REST paging ask for "rest")

    def env(self) -> dict[str, str]:
        env = demo_env(
            {**self.shop.credentials(self.shop_run.url), "ca_file": str(self.shop_run.ca_file)},
            {**self.org.credentials(self.org_run.url), "ca_file": str(self.org_run.ca_file)},
        )
        return {**env, "SHOPIFY_API": self.shopify_api}

    def pipeline_file(self, name: str = "test", edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
        spec = yaml.safe_load(EXAMPLE.read_text())
        spec["name"] = name
        if edit is not None:
            edit(spec)
        path = self.tmp / f"{name}.yml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def spec(self, path: Path) -> PipelineSpec:
        return load_pipeline(path, self.env())

    def records(self, obj: str) -> list[dict[str, Any]]:
        ctx = ssl.create_default_context(cafile=str(self.org_run.ca_file))
        return list(httpx.get(f"{self.org_run.url}/__sandbox/records/{obj}", verify=ctx, timeout=30).json())

    def keys(self, obj: str) -> list[str]:
        return [r[EXT_IDS[obj]] for r in self.records(obj)]

    def shopify(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.shop_run.ca_file))
        return httpx.Client(
            base_url=f"{self.shop_run.url}/admin/api/2025-07",
            verify=ctx,
            timeout=30,
            headers={"X-Shopify-Access-Token": self.shop.access_token},
        )

    def ferry(self, home: Path, *args: str) -> subprocess.Popen[bytes]:
        """A real `ferry` process (its output goes to files under ``home``)."""
        home.mkdir(parents=True, exist_ok=True)
        n = len(list(home.glob("ferry-*.out")))
        return subprocess.Popen(
            [sys.executable, "-m", "ferry", *args],
            env={**os.environ, **self.env(), "FERRY_HOME": str(home)},
            stdout=(home / f"ferry-{n}.out").open("wb"),
            stderr=(home / f"ferry-{n}.err").open("wb"),
        )


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the state store of a running ferry process (read-only; empty until the table exists)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


@contextmanager
def world(
    tmp: Path,
    *,
    seed: int = 5,
    customers: int = 60,
    products: int = 15,
    orders: int = 120,
    shopify_api: str = "graphql",
) -> Iterator[World]:
    shop = ShopifySandbox(tmp, store=generate_store(seed=seed, customers=customers, products=products, orders=orders))
    org = SalesforceSandbox(tmp)
    shop_run = start_in_thread(shop.app, tmp)
    try:
        org_run = start_in_thread(org.app, tmp)
    except BaseException:
        shop_run.stop()
        raise
    try:
        yield World(tmp, shop, org, shop_run, org_run, shopify_api)
    finally:
        org_run.stop()
        shop_run.stop()
