"""The dashboard in headless Chromium (Debian's /usr/bin/chromium through Playwright) against the demo's state:
the run's figures as the store has them, the chart's points, a dead letter, a replay of a fixed letter."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.store import LetterFilter, Store
from ferry.store.lease import PipelineLock
from ferry.web import Dashboard
from ferry.web.figures import run_totals
from ferry.web.server import DashboardServer
from tests.web.conftest import DemoWorld

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"
# FERRY_DASHBOARD_SCREENSHOTS=1 rewrites docs/img/dashboard-*.png from this run.
WRITE_SCREENSHOTS = os.environ.get("FERRY_DASHBOARD_SCREENSHOTS") == "1"


def _shot(page: Any, name: str, *, full: bool = True) -> None:
    if WRITE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=full)


def _cells(page: Any, row_selector: str) -> dict[str, str]:
    headers = [h.inner_text().strip() for h in page.query_selector_all("table.runs thead th")]
    cells = [c.inner_text().strip() for c in page.query_selector_all(f"{row_selector} td")]
    return dict(zip(headers, cells, strict=True))


def test_the_demo_run_appears_with_the_store_figures(demo_world: DemoWorld, page: Any) -> None:
    page.goto(demo_world.url + "/")
    row = demo_world.store.get_run(demo_world.stats.run_id)
    assert row is not None
    totals = run_totals(row)
    shown = _cells(page, "#runs-body tr:first-child")
    assert shown["run"] == str(row.id) and shown["pipeline"] == "demo" and shown["status"] == row.status
    assert len(page.query_selector_all("#runs-body tr")) == 2
    for column, key in (("read", "read"), ("written", "written"), ("created", "created"), ("updated", "updated"),
                        ("dead-lettered", "dead_lettered"), ("API calls", "api_calls")):
        assert shown[column].replace(",", "") == str(totals[key]), column
    # The run's own figures, as the runner counted them.
    assert totals["written"] == sum(o.written for o in demo_world.stats.objects.values()) > 0
    assert totals["updated"] == sum(o.updated for o in demo_world.stats.objects.values()) > 0
    _shot(page, "runs")
    page.click(f"#runs-body a[href='/runs/{row.id}']")
    objects = {tr.query_selector("td").inner_text(): tr for tr in page.query_selector_all("table.objects tbody tr")}
    assert set(objects) == set(demo_world.stats.objects)
    source = page.inner_text(".facts")
    for stream, n in demo_world.stats.source_records.items():
        assert f"{n:,} {stream}" in source
    for name, stats in demo_world.stats.objects.items():
        cells = [c.inner_text() for c in objects[name].query_selector_all("td")]
        assert cells[1:8] == [f"{n:,}" for n in (stats.read, stats.written, stats.created, stats.updated,
                                                stats.unchanged, stats.dead_lettered, stats.api_calls)]
        assert cells[8] == stats.strategy


def test_the_chart_renders_a_point_per_run_and_per_hour(demo_world: DemoWorld, page: Any) -> None:
    page.goto(demo_world.url + "/")
    charts = page.query_selector_all(".chart svg")
    assert len(charts) == 4
    runs = len(demo_world.store.list_runs(None, 1000))
    per_run = page.query_selector_all(".chart[data-series=runs] circle.point")
    assert len(per_run) == 2 * runs
    per_hour = page.query_selector_all(".chart[data-series=hours] circle.point")
    assert len(per_hour) == 2 * 24
    values = [float(p.get_attribute("data-value")) for p in page.query_selector_all(
        ".chart[data-series=runs][data-key=api_calls] circle.point")]
    oldest_first = sorted(demo_world.store.list_runs(None, 1000), key=lambda r: r.id)
    assert values == [run_totals(r)["api_calls"] for r in oldest_first] and min(values) > 0
    per_hour_calls = [float(p.get_attribute("data-value")) for p in page.query_selector_all(
        ".chart[data-series=hours][data-key=api_calls] circle.point")]
    assert sum(per_hour_calls) == sum(values)  # every run finished within the last 24 h
    budget = demo_world.stats.budget
    assert budget and budget["share"] == "5%"
    shown = page.inner_text(".budget[data-pipeline=demo]")
    assert page.inner_text(".budget[data-pipeline=demo] .spent").replace(",", "") == str(budget["spent_24h"])
    assert f"share 5% = {budget['allowed']:,} calls" in shown and f"{budget['remaining']:,} left" in shown


def test_a_running_run_refreshes_until_it_finishes(tmp_path: Path, browser: Any) -> None:
    """A run still running (its pipeline lock held) shows as running; when it finishes, the page follows."""
    store = Store(tmp_path / "ferry.db")
    server = DashboardServer(Dashboard(store), "127.0.0.1", 0)
    url = server.start()
    context = browser.new_context()
    try:
        with PipelineLock(tmp_path, "live"):
            run = store.start_run("live", pid=os.getpid())
            page = context.new_page()
            page.goto(url)
            assert page.inner_text("#runs-body [data-status]") == "running"
            page.goto(f"{url}runs/{run}")
            assert "records staged" in page.inner_text(".facts")
            page.goto(url)
            store.finish_run(run, "succeeded", {"objects": {"Account": {"read": 3, "written": 3, "created": 3,
                                                                          "api_calls": 1}}, "seconds": 1.5})
        page.wait_for_selector("#runs-body [data-status=succeeded]", timeout=10_000)
        assert _cells(page, "#runs-body tr:first-child")["written"] == "3"
    finally:
        context.close()
        server.stop()
        store.close()


def test_a_dead_letter_opens_with_its_errors_and_payloads(demo_world: DemoWorld, page: Any) -> None:
    letter = demo_world.store.find_dead_letters(LetterFilter(pipeline="demo", code="INVALID_EMAIL_ADDRESS"), 1)[0]
    page.goto(demo_world.url + "/letters?code=INVALID_EMAIL_ADDRESS")
    assert page.query_selector(".count").get_attribute("data-total") == str(
        demo_world.store.count_matching_letters(LetterFilter(pipeline=None, code="INVALID_EMAIL_ADDRESS")))
    _shot(page, "letters")
    page.click(f"table.letters a[href='/letters/{letter.id}']")
    assert page.title().startswith(f"Dead letter {letter.id}")
    assert letter.message in page.inner_text("p.message")
    assert letter.record_key in page.inner_text(".mapped")
    assert str(letter.source_key) in page.inner_text(".source")
    _shot(page, "letter")


def _fixable_contact(world: DemoWorld) -> Any:
    """An open Contact letter for a too-long first name whose Account went through (so a fix alone replays it)."""
    accounts = {d.source_key for d in world.store.find_dead_letters(LetterFilter(pipeline="demo", object="Account"))}
    for d in world.store.find_dead_letters(LetterFilter(pipeline="demo", object="Contact", code="STRING_TOO_LONG")):
        if d.fields == ["FirstName"] and d.source_key not in accounts:
            return d
    pytest.fail("the demo data has no Contact with only a too-long first name")


def test_a_fixed_letter_replays_from_the_page(demo_world: DemoWorld, page: Any) -> None:
    letter = _fixable_contact(demo_world)
    shop = demo_world.shop
    # Fix the record at the source, as a user would in the Shopify admin.
    fixed = httpx.put(
        f"{shop['url']}/admin/api/2025-07/customers/{letter.source_key}.json",
        json={"customer": {"first_name": "Adolph"}},
        headers={"X-Shopify-Access-Token": shop["access_token"]},
        verify=ssl.create_default_context(cafile=shop["ca_file"]), timeout=30,
    )
    assert fixed.status_code == 200, fixed.text
    page.goto(f"{demo_world.url}/letters/{letter.id}")
    page.click("button[value=replay]")
    assert "Replay 1 open dead letter?" in page.inner_text(".confirm-question")
    _shot(page, "confirm")
    page.click("#confirm")
    page.wait_for_selector("p.result")
    outcome = page.query_selector(f"table.outcomes tr:has(a[href='/letters/{letter.id}']) .outcome")
    assert outcome is not None and outcome.inner_text() == "replayed", page.inner_text("main")
    _shot(page, "replayed")
    after = demo_world.store.get_dead_letter(letter.id)
    assert after is not None and after.status == "resolved" and after.resolution == "replayed"
    page.goto(f"{demo_world.url}/letters/{letter.id}")
    assert page.inner_text(".facts .status") == "resolved"


def test_a_post_without_the_csrf_token_is_refused(demo_world: DemoWorld, page: Any) -> None:
    letter = demo_world.store.find_dead_letters(LetterFilter(pipeline="demo"), 1)[0]
    page.goto(f"{demo_world.url}/letters/{letter.id}")  # the browser has a session cookie now
    answer = page.request.post(f"{demo_world.url}/letters/action",
                               form={"action": "discard", "id": str(letter.id), "confirm": "1", "reason": "no"})
    assert answer.status == 403
    still = demo_world.store.get_dead_letter(letter.id)
    assert still is not None and still.status == "open"


def test_the_pipeline_page_shows_its_plan(demo_world: DemoWorld, page: Any) -> None:
    page.goto(f"{demo_world.url}/pipelines/demo")
    strategies = page.query_selector_all("p.strategy")
    assert len(strategies) == len(demo_world.spec.objects)
    assert "Account" in page.inner_text("main")
    _shot(page, "pipeline", full=False)


def test_a_filtered_set_is_discarded_after_confirmation(demo_world: DemoWorld, page: Any) -> None:
    chosen = LetterFilter(pipeline="demo", object="Product2")
    count = demo_world.store.count_matching_letters(chosen)
    assert count > 0
    page.goto(f"{demo_world.url}/letters?pipeline=demo&object=Product2")
    page.click("form#act button[value=discard]")  # nothing ticked: every open letter the filter matches
    assert f"Discard {count} open dead letter" in page.inner_text(".confirm-question")
    assert demo_world.store.count_matching_letters(chosen) == count  # nothing happens before the confirmation
    page.fill("input[name=reason]", "products are maintained by hand in this org")
    page.click("#confirm")
    assert f"Discarded {count} dead letter" in page.inner_text("p.result")
    assert demo_world.store.count_matching_letters(chosen) == 0
    discarded = demo_world.store.find_dead_letters(LetterFilter(pipeline="demo", object="Product2",
                                                                status="discarded"))
    assert len(discarded) == count and all("maintained by hand" in (d.resolution or "") for d in discarded)
