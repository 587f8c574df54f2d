"""One demo state for every dashboard test (session-scoped): the Shopify and Salesforce sandboxes running, the
Shopify → Salesforce example pipeline run once against them, and the dashboard serving that store."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import FLOWS
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.engine.runner import Runner
from ferry.engine.stats import RunStats
from ferry.observe import metrics
from ferry.store import Store
from ferry.web import Dashboard
from ferry.web.server import DashboardServer

SMALL = ["--seed", "7", "--customers", "40", "--products", "10", "--orders", "60"]
CHROMIUM = "/usr/bin/chromium"


@dataclass
class DemoWorld:
    home: Path
    store: Store
    spec: PipelineSpec
    stats: RunStats
    shop: dict[str, Any]
    env: dict[str, str]
    url: str
    # The API budget gauges as the demo runs left them: the live figures are process-wide, and other tests in
    # the same process (``ferry serve`` worlds, another shop) move them; ``restore_budgets`` puts these back.
    budgets: list[dict[str, Any]]

    def restore_budgets(self) -> None:
        for b in self.budgets:
            metrics.budget_remaining(str(b["system"]), str(b["budget"]), float(b["remaining"]), limit=b["limit"])


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoWorld]:
    home = tmp_path_factory.mktemp("dashboard-home")
    saved = os.environ.get("FERRY_HOME")
    os.environ["FERRY_HOME"] = str(home)
    started: list[SandboxProcess] = []
    server = None
    try:
        shop = start_sandbox("shopify", home / "sandbox", SMALL)
        started.append(shop)
        org = start_sandbox("salesforce", home / "sandbox", ["--seed", "7"])
        started.append(org)
        flow = FLOWS["shopify-to-salesforce"]
        env = flow.env(shop.info, org.info)
        # The example with a share of the org's API budget, so the budget bar has something to show.
        pipeline = home / "demo.yml"
        text = flow.example.read_text(encoding="utf-8").replace("name: shopify-to-salesforce", "name: demo")
        pipeline.write_text(text.replace('  api_version: "62.0"\n', '  api_version: "62.0"\n  api_budget: 5%\n'))
        spec = load_pipeline(pipeline, {**os.environ, **env})
        store = Store(home / "ferry.db")
        first = asyncio.run(Runner(spec, store).run())
        assert first.objects and first.budget
        # A second, incremental run after a few customers changed at the source: two points per run chart.
        _touch_customers(shop.info, 5)
        stats = asyncio.run(Runner(spec, store).run())
        server = DashboardServer(Dashboard(store, {spec.name: spec}), "127.0.0.1", 0)
        url = server.start()
        yield DemoWorld(home, store, spec, stats, shop.info, env, url.rstrip("/"), metrics.budgets_remaining())
    finally:
        if server is not None:
            server.stop()
        for s in reversed(started):
            s.stop()
        if saved is None:
            os.environ.pop("FERRY_HOME", None)
        else:
            os.environ["FERRY_HOME"] = saved


def _touch_customers(shop: dict[str, Any], n: int) -> None:
    """Change ``n`` customers' notes through the Shopify sandbox's Admin API, as a shop's staff would."""
    tls = ssl.create_default_context(cafile=shop["ca_file"])
    headers = {"X-Shopify-Access-Token": shop["access_token"]}
    api = f"{shop['url']}/admin/api/2025-07"
    with httpx.Client(verify=tls, headers=headers, timeout=30) as client:
        customers = client.get(f"{api}/customers.json", params={"limit": n}).raise_for_status().json()["customers"]
        for c in customers:
            client.put(f"{api}/customers/{c['id']}.json",
                       json={"customer": {"note": "changed for the dashboard's second run"}}).raise_for_status()


# Module scope, not session: sync Playwright runs an event loop for as long as it is open, and an async test
# of another module run meanwhile would find that loop running ("Runner.run() cannot be called ...").
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is not installed: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs it: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()
