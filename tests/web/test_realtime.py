"""The real-time panel inside `ferry serve`: the Shopify sandbox delivers signed webhooks to ferry serve (the
dashboard mounted at `/`, as `ferry serve` mounts it), which writes to the Salesforce sandbox; the panel then
shows events, events/s and latency percentiles, in JSON (/api/live) and in headless Chromium."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.engine.runner import Runner
from ferry.observe import live
from ferry.web import Dashboard
from ferry.web.app import build_dashboard
from tests.serve.world import ServeThread, World, make_world, start_serve, stop_world, wait_for
from tests.web.test_browser import _shot

EDITS = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("dash-realtime"), customers=20, products=5, orders=20)
    try:
        stats = asyncio.run(Runner(w.spec, w.store).run())
        assert stats.status == "succeeded", stats.error
        yield w
    finally:
        stop_world(w)


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[ServeThread]:
    live.LIVE.clear()  # figures of other tests' servers in this process: this module counts its own events
    dashboard = build_dashboard(Dashboard(world.store, {world.spec.name: world.spec}, realtime=True))
    server = start_serve([world.spec], world.store, world.serve_options(), routers=[dashboard])
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def delivered(world: World, served: ServeThread) -> dict[str, Any]:
    """EDITS customers edited in the shop; their webhooks acknowledged and their Contacts written."""
    for c in world.shop_records("customers")[:EDITS]:
        world.put("customers", c["id"], {"first_name": f"Live{c['id']}"})
    tls = ssl.create_default_context(cafile=str(world.shop_run.ca_file))
    http = httpx.Client(base_url=served.url, verify=tls, timeout=10)
    box: dict[str, Any] = {}

    def done() -> bool:
        box.update(http.get("/api/live").raise_for_status().json())
        p = box["pipelines"].get(world.spec.name, {})
        return p.get("events", 0) >= EDITS and p.get("objects", {}).get("Contact", {}).get("count", 0) >= EDITS

    wait_for(done, 60, f"{EDITS} events acknowledged and written")
    http.close()
    return box


def test_the_live_json_has_events_queue_depth_and_latency_percentiles(world: World, delivered: dict[str, Any]) -> None:
    assert delivered["realtime"] is True
    p = delivered["pipelines"][world.spec.name]
    assert p["events"] >= EDITS and p["events_per_second"] > 0
    ack, e2e = p["ack"], p["end_to_end"]
    assert 0 < ack["p50"] <= ack["p95"] <= ack["p99"] < 5  # Shopify's timeout is 5 s
    assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"] < 60
    assert e2e["p50"] > ack["p50"]  # written after it was acknowledged (the micro-batch window is 0.1 s)
    assert p["queue"] == {"inbox": 0, "outbox": 0}  # all written: the processor reported empty queues
    assert p["written_per_second"] > 0
    # The Shopify bucket as this process last saw it (the backfill read the shop: X-Shopify-Shop-Api-Call-Limit).
    bucket = [b for b in delivered["budgets"] if (b["system"], b["budget"]) == ("shopify", "bucket")]
    assert bucket and bucket[0]["limit"] == 100_000 and 0 <= bucket[0]["remaining"] <= bucket[0]["limit"]


def test_the_panel_in_a_browser_shows_non_zero_events_and_latencies(
    world: World, served: ServeThread, delivered: dict[str, Any], tmp_path: Path, browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, ignore_https_errors=True)
    page = context.new_page()
    try:
        for path in ("/pipelines", f"/pipelines/{world.spec.name}"):
            page.goto(served.url + path)
            page.wait_for_selector("#realtime[data-updated]", state="attached", timeout=15_000)  # polled once
            row = page.query_selector("table.live tbody tr")
            assert row is not None
            headers = [h.inner_text().strip() for h in page.query_selector_all("table.live thead th")]
            cells = dict(zip(headers, [c.inner_text().strip() for c in row.query_selector_all("td")], strict=True))
            assert cells["pipeline"] == world.spec.name
            assert int(cells["events (5 min)"].replace(",", "")) >= EDITS
            assert float(cells["events/s"]) > 0
            for column in ("ack p50", "ack p95", "ack p99", "end-to-end p50", "end-to-end p95", "end-to-end p99"):
                value, unit = cells[column].split()
                assert float(value) > 0 and unit in ("ms", "s"), (column, cells[column])
            assert cells["inbox queue"] == "0" and cells["outbox queue"] == "0"
        _shot(page, "realtime", full=False)
        # The pipeline's own page breaks end to end down per object written.
        objects = [r.query_selector("td").inner_text() for r in page.query_selector_all("table.live-objects tbody tr")]
        assert "Contact" in objects
    finally:
        context.close()


def test_the_stand_alone_dashboard_has_no_panel(world: World) -> None:
    from fastapi.testclient import TestClient

    from ferry.web import create_app

    with TestClient(create_app(Dashboard(world.store, {world.spec.name: world.spec}))) as client:
        page = client.get("/pipelines").text
        assert 'id="realtime"' not in page
        assert client.get("/api/live").json()["realtime"] is False
