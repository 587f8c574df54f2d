"""The metrics module alone: names, bounded labels, the ASGI app and the textfile, parsed by prometheus-client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ferry.observe import metrics


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _value(text: str, name: str, **labels: str) -> float:
    return sum(v for ls, v in _families(text).get(name, []) if labels.items() <= ls.items())


def test_hooks_for_serve_land_in_their_histograms_and_gauges() -> None:
    before = metrics.exposition().decode()
    metrics.webhook_acknowledged("shopify", 0.004)
    metrics.event_delivered("p-hooks", "Order", 1.5)
    metrics.queue_depth("p-hooks", "inbox", 17)
    after = metrics.exposition().decode()
    assert _value(after, "ferry_webhook_ack_seconds_count", system="shopify") - \
        _value(before, "ferry_webhook_ack_seconds_count", system="shopify") == 1
    assert _value(after, "ferry_webhook_ack_seconds_bucket", system="shopify", le="0.005") - \
        _value(before, "ferry_webhook_ack_seconds_bucket", system="shopify", le="0.005") == 1
    assert _value(after, "ferry_end_to_end_seconds_sum", pipeline="p-hooks", object="Order") == 1.5
    assert _value(after, "ferry_queue_depth", pipeline="p-hooks", queue="inbox") == 17


def test_names_follow_prometheus_conventions() -> None:
    names = {f.name for f in text_string_to_metric_families(metrics.exposition().decode())}
    ferry = {n for n in names if n.startswith("ferry_")}
    assert {"ferry_records_read", "ferry_records_written", "ferry_records_dead_lettered", "ferry_api_calls",
            "ferry_api_retries", "ferry_api_budget_remaining", "ferry_run_duration_seconds", "ferry_runs",
            "ferry_webhook_ack_seconds", "ferry_end_to_end_seconds", "ferry_queue_depth"} <= ferry
    assert "process_cpu_seconds" in names  # the process collector is on ferry's registry too


def test_label_values_are_bounded_and_statuses_grouped() -> None:
    metrics.api_call("quickbooks", "x" * 500, 503, 0.2)
    metrics.api_call("quickbooks", "lookup", None, 0.2)
    text = metrics.exposition().decode()
    assert _value(text, "ferry_api_calls_total", system="quickbooks", endpoint="x" * 64, status="5xx") >= 1
    assert _value(text, "ferry_api_calls_total", system="quickbooks", endpoint="lookup", status="network") >= 1
    assert "x" * 65 not in text


def test_asgi_app_answers_a_scrape() -> None:
    metrics.api_retry("woocommerce", "HTTP_429")

    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=metrics.asgi_app())  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/")

    response = asyncio.run(scrape())
    assert response.status_code == 200
    assert _value(response.text, "ferry_api_retries_total", system="woocommerce", error_class="HTTP_429") >= 1


def test_textfile_is_written_whole(tmp_path: Path) -> None:
    metrics.records("p-file", "Account", read=3, written=2, dead_lettered=1)
    path = tmp_path / "sub" / "ferry.prom"
    metrics.write_textfile(path)
    text = path.read_text()
    assert _value(text, "ferry_records_written_total", pipeline="p-file", object="Account") == 2
    assert _value(text, "ferry_records_dead_lettered_total", pipeline="p-file", object="Account") == 1
    assert not list(path.parent.glob("*.tmp*"))
