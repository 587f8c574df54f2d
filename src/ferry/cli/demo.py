"""`ferry demo [FLOW]`: both sandboxes in child processes, a generated messy store, an example pipeline, one run.

A flow is a source sandbox, a target sandbox (Salesforce; QuickBooks Online or Shopify, empty) and the
example pipeline between them (``ferry/examples/<flow>.yml``). ``shopify-to-salesforce`` is the default. A
Salesforce org as the source is filled with a seeded retail org through its own API before the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from ferry.cli import render
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.engine.stats import RunStats
from ferry.errors import ConfigError
from ferry.paths import ferry_home
from ferry.store import Store

DEMO_PIPELINE = "demo"
DEFAULT_FLOW = "shopify-to-salesforce"


def shopify_env(shop: dict[str, Any]) -> dict[str, str]:
    return {
        "SHOPIFY_URL": str(shop["url"]),
        "SHOPIFY_ACCESS_TOKEN": str(shop["access_token"]),
        "SHOPIFY_CA_FILE": str(shop["ca_file"]),
        # What the sandbox signs its webhooks with (a real store: the app's client secret): `ferry serve`
        **({"SHOPIFY_WEBHOOK_SECRET": str(shop["webhook_secret"])} if shop.get("webhook_secret") else {}),
    }


def woocommerce_env(store: dict[str, Any]) -> dict[str, str]:
    return {
        "WOOCOMMERCE_URL": str(store["url"]),
        "WOOCOMMERCE_CONSUMER_KEY": str(store["consumer_key"]),
        "WOOCOMMERCE_CONSUMER_SECRET": str(store["consumer_secret"]),
        "WOOCOMMERCE_CA_FILE": str(store["ca_file"]),
    }


def salesforce_env(org: dict[str, Any]) -> dict[str, str]:
    return {
        "SALESFORCE_LOGIN_URL": str(org["login_url"]),
        "SALESFORCE_CLIENT_ID": str(org["client_id"]),
        "SALESFORCE_USERNAME": str(org["username"]),
        "SALESFORCE_PRIVATE_KEY_FILE": str(org["private_key_file"]),
        "SALESFORCE_CA_FILE": str(org["ca_file"]),
    }


def quickbooks_env(company: dict[str, Any]) -> dict[str, str]:
    """``token_file`` is where the rotated refresh token is kept: next to the sandbox's state (``token_file``
    in the sandbox's info is added by ``run_demo``)."""
    return {
        "QUICKBOOKS_CLIENT_ID": str(company["client_id"]),
        "QUICKBOOKS_CLIENT_SECRET": str(company["client_secret"]),
        "QUICKBOOKS_REALM_ID": str(company["realm_id"]),
        "QUICKBOOKS_REFRESH_TOKEN": str(company["refresh_token"]),
        "QUICKBOOKS_TOKEN_FILE": str(company["token_file"]),
        "QUICKBOOKS_API_URL": str(company["url"]),
        "QUICKBOOKS_TOKEN_URL": f"{company['url']}/oauth2/v1/tokens/bearer",
        "QUICKBOOKS_CA_FILE": str(company["ca_file"]),
    }


def fill_salesforce_org(org: dict[str, Any], seed: int, customers: int, products: int, orders: int) -> None:
    """A retail org (accounts, priced products, orders with items, a share messy) created over the org's API."""
    from ferry.sandbox.salesforce.retail import generate_retail_org, seed_retail_org

    retail = generate_retail_org(seed, accounts=customers, products=products, orders=orders)
    seed_retail_org(str(org["url"]), str(org["client_id"]), str(org["client_secret"]), org.get("ca_file"), retail)


@dataclass(frozen=True, slots=True)
class DemoFlow:
    name: str  # also the example pipeline's file name, without .yml
    source: str  # the source sandbox's system
    source_label: str
    source_env: Callable[[dict[str, Any]], dict[str, str]]
    pipeline: str  # the demo run's pipeline name (its state in the ferry home)
    target: str = "salesforce"
    target_label: str = "Salesforce org"
    target_env: Callable[[dict[str, Any]], dict[str, str]] = salesforce_env
    # The target sandbox's arguments besides the seed: QuickBooks starts with an empty company (its accounts only).
    target_args: tuple[str, ...] = ()
    # Fills a source sandbox that generates nothing itself (Salesforce), through its API, once it runs:
    # (sandbox info, seed, customers, products, orders).
    fill_source: Callable[[dict[str, Any], int, int, int, int], None] | None = None

    @property
    def example(self) -> Path:
        return Path(str(resources.files("ferry.examples").joinpath(f"{self.name}.yml")))

    def env(self, source: dict[str, Any], target: dict[str, Any]) -> dict[str, str]:
        """The environment the example pipeline reads, pointed at the two sandboxes."""
        return {**self.source_env(source), **self.target_env(target)}


FLOWS: dict[str, DemoFlow] = {
    flow.name: flow
    for flow in (
        DemoFlow("shopify-to-salesforce", "shopify", "Shopify store", shopify_env, DEMO_PIPELINE),
        DemoFlow("woocommerce-to-salesforce", "woocommerce", "WooCommerce store", woocommerce_env, "demo-woocommerce"),
        DemoFlow("shopify-to-quickbooks", "shopify", "Shopify store", shopify_env, "demo-quickbooks",
                 target="quickbooks", target_label="QuickBooks Online company", target_env=quickbooks_env,
                 target_args=("--customers", "0", "--products", "0", "--orders", "0")),
        DemoFlow("salesforce-to-quickbooks", "salesforce", "Salesforce org", salesforce_env, "demo-salesforce-qbo",
                 target="quickbooks", target_label="QuickBooks Online company", target_env=quickbooks_env,
                 target_args=("--customers", "0", "--products", "0", "--orders", "0"),
                 fill_source=fill_salesforce_org),
        DemoFlow("salesforce-to-shopify", "salesforce", "Salesforce org", salesforce_env, "demo-salesforce-shopify",
                 target="shopify", target_label="Shopify store", target_env=shopify_env,
                 target_args=("--customers", "0", "--products", "1", "--orders", "0"),
                 fill_source=fill_salesforce_org),
    )
}


def demo_flow(name: str) -> DemoFlow:
    try:
        return FLOWS[name]
    except KeyError:
        raise ConfigError(f"unknown demo flow {name!r}; choose one of: {', '.join(FLOWS)}") from None


def example_pipeline_path(flow: str = DEFAULT_FLOW) -> Path:
    return demo_flow(flow).example


def demo_env(shopify: dict[str, str], salesforce: dict[str, str]) -> dict[str, str]:
    """The environment the Shopify example pipeline reads, pointed at the two sandboxes."""
    return FLOWS[DEFAULT_FLOW].env(shopify, salesforce)


def demo_files(flow: DemoFlow) -> tuple[Path, Path]:
    """Where the demo keeps the pipeline file it ran (the example, named as the demo's state) and the environment
    pointing it at the sandboxes: what `ferry dlq replay` needs while the sandboxes run (``--keep``)."""
    folder = ferry_home() / "demo"
    return folder / f"{flow.name}.yml", folder / f"{flow.name}.env"


def _keep_files(flow: DemoFlow, env: dict[str, str]) -> tuple[Path, Path]:
    pipeline, env_file = demo_files(flow)
    pipeline.parent.mkdir(parents=True, exist_ok=True)
    text = flow.example.read_text(encoding="utf-8")
    pipeline.write_text(re.sub(r"(?m)^name: .*$", f"name: {flow.pipeline}", text, count=1), encoding="utf-8")
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    return pipeline, env_file


def run_demo(
    *,
    customers: int,
    products: int,
    orders: int,
    seed: int,
    quiet: bool,
    console: Console,
    flow: str = DEFAULT_FLOW,
    keep: bool = False,
    serve_port: int | None = None,
) -> RunStats:
    chosen = demo_flow(flow)
    home = ferry_home()
    sandbox_dir = home / "sandbox"
    if not quiet:
        console.print(
            f"[bold]ferry demo {chosen.name}[/]: generating a messy {chosen.source_label} ({customers:,} customers, "
            f"{products:,} products, {orders:,} orders, seed {seed}) and an empty {chosen.target_label}, both on "
            "127.0.0.1 over HTTPS"
        )
    started: list[SandboxProcess] = []
    try:
        source = start_sandbox(
            chosen.source,
            sandbox_dir,
            ["--seed", str(seed), "--customers", str(customers), "--products", str(products), "--orders", str(orders)],
        )
        started.append(source)
        if chosen.fill_source is not None:
            chosen.fill_source(source.info, seed, customers, products, orders)
        org = start_sandbox(chosen.target, sandbox_dir, ["--seed", str(seed), *chosen.target_args])
        started.append(org)
        if not quiet:
            label = f"{chosen.source_label.split()[0]} sandbox"
            target_label = f"{chosen.target_label.split()[0]} sandbox"
            width = max(19, len(label) + 1, len(target_label) + 1)
            console.print(f"  {label:<{width}}{source.url}\n  {target_label:<{width}}{org.url}")
        # A fresh sandbox issues a fresh refresh token: a token kept by an earlier demo is dead.
        token_file = sandbox_dir / f"{chosen.pipeline}.token"
        token_file.unlink(missing_ok=True)
        target_info = {**org.info, "token_file": str(token_file)}
        env = chosen.env(source.info, target_info)
        spec = load_pipeline(chosen.example, {**os.environ, **env})
        spec = spec.model_copy(update={"name": chosen.pipeline})
        store = Store(home / "ferry.db")
        # The sandboxes start empty every time, so the demo's sync state must too.
        store.reset_pipeline(chosen.pipeline)
        with render.progress(console, disabled=quiet) as progress:
            stats = asyncio.run(Runner(spec, store, progress).run())
        if serve_port is not None:
            render.print_run(console, stats, exit_codes=False)
            _serve_dashboard(console, chosen, env, spec, store, serve_port)
        elif keep:
            render.print_run(console, stats, exit_codes=False)
            _serve_until_interrupted(console, chosen, env)
        return stats
    finally:
        for sandbox in reversed(started):
            sandbox.stop()


def _serve_dashboard(
    console: Console, flow: DemoFlow, env: dict[str, str], spec: Any, store: Store, port: int
) -> None:
    """``ferry demo --serve``: the sandboxes stay up and the dashboard serves the run, its chart and dead letters
    (replay through the demo's own pipeline) on 127.0.0.1 until Ctrl-C."""
    from ferry.web import Dashboard
    from ferry.web.server import DashboardServer

    pipeline, env_file = _keep_files(flow, env)
    server = DashboardServer(Dashboard(store, {spec.name: spec}), "127.0.0.1", port)
    console.print(
        f"\nThe dashboard: {server.url}  (the sandboxes and the dashboard keep running; Ctrl-C stops them)\n"
        f"The same from a shell: . {shlex.quote(str(env_file))}; ferry dlq replay {shlex.quote(str(pipeline))}",
        highlight=False, markup=False,
    )
    server.serve_forever()
    console.print("stopping the dashboard and the sandboxes")


def _serve_until_interrupted(console: Console, flow: DemoFlow, env: dict[str, str]) -> None:
    """``ferry demo --keep``: the sandboxes stay up with the pipeline file and environment the run used, so its
    dead letters can be inspected, fixed and replayed; Ctrl-C stops them."""
    pipeline, env_file = _keep_files(flow, env)
    console.print(
        f"\nThe sandboxes keep running (Ctrl-C stops them). In another shell, to fix and replay dead letters:\n"
        f"  . {shlex.quote(str(env_file))}\n"
        f"  ferry dlq list --pipeline {flow.pipeline}\n"
        f"  ferry dlq replay {shlex.quote(str(pipeline))} --dry-run   # edit its mapping first; then without --dry-run",
        highlight=False, markup=False,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the sandboxes")
