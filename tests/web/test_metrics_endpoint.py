"""`/metrics` on the stand-alone dashboard (`ferry dashboard`, `ferry demo --serve`): Prometheus' text format,
parsed with prometheus-client's own parser; behind the dashboard's token when one is required."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ferry.store import Store
from ferry.web import Dashboard, DashboardAccess, create_app
from tests.web.conftest import DemoWorld

TOKEN = "a-dashboard-token-for-metrics-0123456789"


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_the_dashboard_serves_metrics_that_parse(demo_world: DemoWorld) -> None:
    answer = httpx.get(demo_world.url + "/metrics", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    families = _families(answer.text)
    # The demo's runs ran in this process (the test session): their figures are in ferry's registry.
    written = sum(v for labels, v in families["ferry_records_written"]
                  if labels.get("pipeline") == "demo" and "object" in labels)
    assert written >= sum(o.written for o in demo_world.stats.objects.values()) > 0
    assert "ferry_api_calls" in families and "process_cpu_seconds" in families


def test_metrics_need_the_token_when_one_is_required(tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    try:
        client = TestClient(create_app(Dashboard(store, access=DashboardAccess(token=TOKEN))))
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer not-the-token-not-the-token"}).status_code \
            == 401
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and "ferry_runs" in _families(answer.text)
    finally:
        store.close()
