"""`ferry demo`: both sandboxes in child processes, a generated messy store, the example pipeline, one run."""

from __future__ import annotations

import asyncio
import os
from importlib import resources
from pathlib import Path

from rich.console import Console

from ferry.cli import render
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.engine.stats import RunStats
from ferry.paths import ferry_home
from ferry.store import Store

DEMO_PIPELINE = "demo"


def example_pipeline_path() -> Path:
    return Path(str(resources.files("ferry.examples").joinpath("shopify-to-salesforce.yml")))


def demo_env(shopify: dict[str, str], salesforce: dict[str, str]) -> dict[str, str]:
    """The environment the example pipeline reads, pointed at the two sandboxes."""
    return {
        "SHOPIFY_URL": shopify["url"],
        "SHOPIFY_ACCESS_TOKEN": shopify["access_token"],
        "SHOPIFY_CA_FILE": shopify["ca_file"],
        "SALESFORCE_LOGIN_URL": salesforce["login_url"],
        "SALESFORCE_CLIENT_ID": salesforce["client_id"],
        "SALESFORCE_USERNAME": salesforce["username"],
        "SALESFORCE_PRIVATE_KEY_FILE": salesforce["private_key_file"],
        "SALESFORCE_CA_FILE": salesforce["ca_file"],
    }


def run_demo(*, customers: int, products: int, orders: int, seed: int, quiet: bool, console: Console) -> RunStats:
    home = ferry_home()
    sandbox_dir = home / "sandbox"
    if not quiet:
        console.print(
            f"[bold]ferry demo[/]: generating a messy Shopify store ({customers:,} customers, {products:,} products, "
            f"{orders:,} orders, seed {seed}) and an empty Salesforce org, both on 127.0.0.1 over HTTPS"
        )
    started: list[SandboxProcess] = []
    try:
        shop = start_sandbox(
            "shopify",
            sandbox_dir,
            ["--seed", str(seed), "--customers", str(customers), "--products", str(products), "--orders", str(orders)],
        )
        started.append(shop)
        org = start_sandbox("salesforce", sandbox_dir, ["--seed", str(seed)])
        started.append(org)
        if not quiet:
            console.print(f"  Shopify sandbox    {shop.url}\n  Salesforce sandbox {org.url}")
        spec = load_pipeline(example_pipeline_path(), {**os.environ, **demo_env(shop.info, org.info)})
        spec = spec.model_copy(update={"name": DEMO_PIPELINE})
        store = Store(home / "ferry.db")
        # The sandboxes start empty every time, so the demo's sync state must too.
        store.reset_pipeline(DEMO_PIPELINE)
        with render.progress(console, disabled=quiet) as progress:
            return asyncio.run(Runner(spec, store, progress).run())
    finally:
        for sandbox in reversed(started):
            sandbox.stop()
