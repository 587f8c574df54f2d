"""`ferry serve PIPELINE...`: load the pipelines, run ``ferry.serve.service.Service`` until a signal."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ferry.engine.pipeline import load_pipeline
from ferry.serve.service import ServeOptions, Service


def serve_pipelines(
    paths: Sequence[Path], options: ServeOptions, store: Any, console: Console, *, as_json: bool
) -> int:
    """Serve until SIGTERM/SIGINT; the exit code (128 + the signal after a clean stop)."""
    specs = [load_pipeline(path) for path in paths]
    dashboard, dashboard_off = _dashboard(specs, store, options.host)
    service = Service(specs, store, options, routers=[dashboard] if dashboard is not None else [])

    def announce(svc: Service) -> None:
        info: dict[str, Any] = {"url": svc.url, "public_url": svc.public_url, "webhooks": svc.webhook_urls(),
                "dashboard": dashboard is not None,
                "schedules": {p.spec.name: p.spec.schedule for p in svc.pipelines if p.schedule},
                "registered": svc.registered, "distributed": options.bus is not None}
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
            return
        console.print(f"[bold]ferry serve[/] listening on [cyan]{svc.url}[/] (Ctrl-C stops)")
        console.print(f"  dashboard: {dashboard_off or f'{svc.url}/'}", markup=False, highlight=False)
        if options.bus is not None:
            console.print("  events: handed to `ferry worker`s over the bus (distributed)", markup=False,
                          highlight=False)
        for name, url in svc.webhook_urls().items():
            console.print(f"  {name}: webhooks at {url}", markup=False, highlight=False)
        for name, cron in {p.spec.name: p.spec.schedule for p in svc.pipelines if p.schedule}.items():
            console.print(f"  {name}: schedule {cron}", markup=False, highlight=False)
        for name, outcome in svc.registered.items():
            console.print(f"  {name}: subscriptions {outcome}", markup=False, highlight=False)

    return asyncio.run(service.run(on_ready=announce))


def _dashboard(specs: Sequence[Any], store: Any, host: str) -> tuple[Any, str]:
    """The dashboard's routes, mounted at ``/`` beside the webhooks; on a non-loopback address without
    ``FERRY_DASHBOARD_TOKEN`` the webhooks are still served (each is authenticated by its signature) but the
    dashboard is not, and the returned text says why."""
    from ferry.errors import ConfigError
    from ferry.web import Dashboard, DashboardAccess
    from ferry.web.app import build_dashboard

    try:
        access = DashboardAccess.from_env(host)
    except ConfigError as exc:
        return None, f"off ({exc})"
    return build_dashboard(Dashboard(store, {spec.name: spec for spec in specs}, access, realtime=True)), ""
