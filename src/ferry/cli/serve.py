"""`ferry sandbox serve`: one sandbox in the foreground, announcing its URL, CA file and credentials."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from ferry.errors import ConfigError
from ferry.sandbox.serve import serve_forever
from ferry.sandbox.tls import TlsFiles

SYSTEMS = ("shopify", "salesforce", "woocommerce", "quickbooks")


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
    schema: Path | None = None,
    faults: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    timezone: str | None = None,
) -> Any:
    if system == "woocommerce":
        return _woocommerce(state_dir, seed=seed, customers=customers, products=products, orders=orders,
                            faults=faults, timezone=timezone)
    if system == "quickbooks":
        return _quickbooks(state_dir, seed=seed, customers=customers, products=products, orders=orders,
                           persist=persist, faults=faults)
    if system == "shopify":
        from ferry.sandbox.shopify import ShopifySandbox

        shop = ShopifySandbox(state_dir, seed=seed, customers=customers, products=products, orders=orders)
        if faults:
            try:
                shop.faults.configure(faults)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"Shopify sandbox faults: {exc}") from exc
        return shop
    if system == "salesforce":
        from ferry.sandbox.salesforce import SalesforceSandbox

        try:
            return SalesforceSandbox(state_dir, seed=seed, persist=persist, latency=latency, extra_schema=schema,
                                     faults=faults, **(limits or {}))
        except ValueError as exc:  # an unknown latency profile, a bad fault setting or a schema file error
            raise ConfigError(str(exc)) from exc
    raise ConfigError(f"unknown sandbox {system!r}: choose one of {', '.join(SYSTEMS)}")


def _woocommerce(state_dir: Path, *, seed: int, customers: int, products: int, orders: int,
                 faults: dict[str, Any] | None, timezone: str | None) -> Any:
    from ferry.sandbox.woocommerce import WooCommerceSandbox
    from ferry.sandbox.woocommerce.times import DEFAULT_TIMEZONE

    try:
        return WooCommerceSandbox(state_dir, seed=seed, customers=customers, products=products, orders=orders,
                                  timezone=timezone or DEFAULT_TIMEZONE, faults=faults)
    except (KeyError, TypeError, ValueError) as exc:  # a bad fault setting, or an unknown timezone name
        raise ConfigError(f"WooCommerce sandbox: {exc}") from exc  # (ZoneInfoNotFoundError is a KeyError)


def _quickbooks(state_dir: Path, *, seed: int, customers: int, products: int, orders: int, persist: bool,
                faults: dict[str, Any] | None) -> Any:
    from ferry.sandbox.quickbooks import QuickBooksSandbox

    try:
        return QuickBooksSandbox(state_dir, seed=seed, customers=customers, products=products, orders=orders,
                                 persist=persist, faults=faults)
    except (TypeError, ValueError) as exc:  # a bad fault setting
        raise ConfigError(f"QuickBooks sandbox: {exc}") from exc


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
    schema: Path | None = None,
    faults: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    plain_http: bool = False,
    timezone: str | None = None,
    env: bool = False,
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    sandbox = build_sandbox(
        system, seed=seed, customers=customers, products=products, orders=orders, state_dir=state_dir,
        persist=persist, latency=latency, schema=schema, faults=faults, limits=limits, timezone=timezone,
    )

    env_file = sandbox_env_file(state_dir, system)

    def announce(url: str, tls: TlsFiles) -> None:
        info = {"system": system, **sandbox.credentials(url), "url": url, "ca_file": str(tls.ca_file)}
        exports = export_lines(system, info)
        env_file.write_text(exports)  # `ferry sandbox env SYSTEM` prints it while this sandbox runs
        if env:
            sys.stdout.write(exports)
            sys.stdout.flush()
            return
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
            return
        console.print(f"[bold]{system} sandbox[/] listening on [cyan]{url}[/]")
        for k, v in info.items():
            if k not in ("system", "url"):
                console.print(f"  {k:18} {v}", markup=False, highlight=False)  # paths may hold brackets
        if "pubsub_endpoint" in info:
            console.print("  pubsub: gRPC eventbus.v1.PubSub at pubsub_endpoint, TLS with ca_file; "
                          "metadata accesstoken, instanceurl, tenantid")
        console.print("  admin: /__sandbox/records/{object}  /__sandbox/stats  /__sandbox/faults   (Ctrl-C stops)")

    try:
        serve_forever(sandbox.app, state_dir, port, announce, plain_http=plain_http)
    finally:
        env_file.unlink(missing_ok=True)


def sandbox_env_file(state_dir: Path, system: str) -> Path:
    return state_dir / f"{system}.env"


def export_lines(system: str, info: dict[str, Any]) -> str:
    """``export NAME=value`` lines with the variables the example pipelines read (ferry/examples/*.yml)."""
    from ferry.cli.demo import salesforce_env, shopify_env, woocommerce_env

    readers = {"shopify": shopify_env, "salesforce": salesforce_env, "woocommerce": woocommerce_env}
    reader = readers.get(system)
    if reader is None:
        return f"# no example pipeline reads a {system} sandbox's settings\n"
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in reader(info).items())


def print_sandbox_env(system: str, state_dir: Path) -> None:
    """The export lines of the sandbox of ``system`` running on ``state_dir`` (written when it started)."""
    if system not in SYSTEMS:
        raise ConfigError(f"unknown sandbox {system!r}: choose one of {', '.join(SYSTEMS)}")
    path = sandbox_env_file(state_dir, system)
    if not path.is_file():
        raise ConfigError(
            f"no {system} sandbox is running with the state directory {state_dir}: start one with "
            f"`ferry sandbox serve {system}` (or pass --state-dir)"
        )
    sys.stdout.write(path.read_text())


def limit_options(daily_api_limit: int | None, concurrent_limit: int | None, pubsub_port: int = -1
                  ) -> dict[str, Any]:
    """SalesforceSandbox keyword arguments for the org's limits and its Pub/Sub API port (-1: none)."""
    options: dict[str, Any] = {}
    if pubsub_port >= 0:
        options["pubsub_port"] = pubsub_port
    if daily_api_limit is not None:
        options["daily_api_limit"] = daily_api_limit
    if concurrent_limit is not None:
        options["concurrent_long_running_limit"] = concurrent_limit
    return options


def _rule_config(rule: Any) -> dict[str, Any]:
    """A parsed rule as the sandboxes' JSON form: only what the flag set. Each sandbox fills the rest with its own
    defaults, and one that refuses keys it does not know (Shopify, WooCommerce, QuickBooks) is never handed a
    Salesforce-only field the flag did not use (`body`)."""
    return {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule) if getattr(rule, f.name) != f.default}


def _processed_reset(spec: str) -> str:
    """``commit_then_reset[:RATE][,...]`` is ``reset[:RATE][,...],processed=true``: the call is processed (a
    write committed), then the connection is reset before the answer."""
    head, sep, rest = spec.partition(",")
    kind, colon, rate = head.partition(":")
    if kind.strip().lower() != "commit_then_reset":
        return spec
    return f"reset{colon}{rate}{sep}{rest}{',' if rest else ''},processed=true".replace(",,", ",")


def fault_config(
    specs: list[str],
    *,
    seed: int,
    lock_rate: float = 0.0,
    expire_session_every: int = 0,
    timeout_hold: float | None = None,
    faults_file: Path | None = None,
) -> dict[str, Any] | None:
    """The Salesforce fault configuration (faults.py's JSON form) from `sandbox serve`'s flags.

    A `--faults-file` (the `POST /__sandbox/faults` body) comes first; `--fault` rules are appended to its
    rules and the other flags, when given, override its settings. None when no fault flag was given.
    """
    from ferry.sandbox.salesforce.faults import parse_fault_spec

    config: dict[str, Any] = {}
    if faults_file is not None:
        try:
            config = json.loads(faults_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the faults file {faults_file}: {exc}") from exc
        if not isinstance(config, dict):
            raise ConfigError(f"the faults file {faults_file} must hold one JSON object")
    try:
        rules = [_rule_config(parse_fault_spec(_processed_reset(spec))) for spec in specs]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if rules:
        config["rules"] = [*config.get("rules", []), *rules]
    if lock_rate:
        config["lock_row_rate"] = lock_rate
    if expire_session_every:
        config["expire_session_every"] = expire_session_every
    if timeout_hold is not None:
        config["timeout_hold_seconds"] = timeout_hold
    if not config:
        return None
    config.setdefault("seed", seed)
    return config
