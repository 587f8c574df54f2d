"""`ferry sandbox serve`: one sandbox in the foreground, announcing its URL, CA file and credentials."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from ferry.errors import ConfigError
from ferry.sandbox.serve import serve_forever
from ferry.sandbox.tls import TlsFiles

SYSTEMS = ("shopify", "salesforce")


def build_sandbox(
    system: str,
    *,
    seed: int,
    customers: int,
    products: int,
    orders: int,
    state_dir: Path,
    persist: bool = False,
    latency: str = "off",
    shopify_faults: dict[str, Any] | None = None,
) -> Any:
    if system == "shopify":
        from ferry.sandbox.shopify import ShopifySandbox

        shop = ShopifySandbox(state_dir, seed=seed, customers=customers, products=products, orders=orders)
        if shopify_faults:
            shop.faults.configure(shopify_faults)
        return shop
    if system == "salesforce":
        from ferry.sandbox.salesforce import SalesforceSandbox

        try:
            return SalesforceSandbox(state_dir, seed=seed, persist=persist, latency=latency)
        except ValueError as exc:  # an unknown latency profile
            raise ConfigError(str(exc)) from exc
    raise ConfigError(f"unknown sandbox {system!r}: choose one of {', '.join(SYSTEMS)}")


def serve_sandbox(
    system: str,
    *,
    port: int,
    seed: int,
    customers: int,
    products: int,
    orders: int,
    state_dir: Path,
    as_json: bool,
    console: Console,
    persist: bool = False,
    latency: str = "off",
    shopify_faults: dict[str, Any] | None = None,
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    sandbox = build_sandbox(
        system, seed=seed, customers=customers, products=products, orders=orders, state_dir=state_dir,
        persist=persist, latency=latency, shopify_faults=shopify_faults,
    )

    def announce(url: str, tls: TlsFiles) -> None:
        info = {"system": system, **sandbox.credentials(url), "url": url, "ca_file": str(tls.ca_file)}
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
            return
        console.print(f"[bold]{system} sandbox[/] listening on [cyan]{url}[/]")
        for k, v in info.items():
            if k not in ("system", "url"):
                console.print(f"  {k:18} {v}")
        console.print("  admin: /__sandbox/records/{object}  /__sandbox/stats   (Ctrl-C stops)")

    serve_forever(sandbox.app, state_dir, port, announce)


def shopify_fault_config(
    *, seed: int, error_rate: float, throttle_rate: float, throttle_burst: int, retry_after: float,
    reset_rate: float, timeout_rate: float, timeout_seconds: float,
) -> dict[str, Any] | None:
    """The Shopify sandbox's fault rules from `sandbox serve shopify --fault-...` flags (None: no faults)."""
    rules: list[dict[str, Any]] = []
    if timeout_rate:
        rules.append({"timeout_seconds": timeout_seconds, "rate": timeout_rate})
    if reset_rate:
        rules.append({"reset": True, "rate": reset_rate})
    if error_rate:
        rules.append({"status": 503, "rate": error_rate})
    if throttle_rate:
        rules.append({"status": 429, "rate": throttle_rate, "burst": throttle_burst, "retry_after": retry_after})
    return {"seed": seed, "rules": rules} if rules else None
