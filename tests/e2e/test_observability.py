"""A real run against the Shopify and Salesforce sandboxes, watched: its metrics and its trace.

The scrape of ``/metrics`` (served by the ASGI app ``ferry serve`` and ``ferry dashboard`` mount) is parsed with
prometheus-client's own parser and its figures are compared with the run's stats; the trace (SDK with an
in-memory exporter) must let one order be followed from the Shopify page it was read in to the Salesforce call
that wrote it, with the id Salesforce gave it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from ferry.engine.runner import Runner
from ferry.engine.stats import RunStats
from ferry.observe import metrics, tracing
from ferry.store import Store
from tests.engine.world import EXT_IDS, World, world

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Watched:
    world: World
    stats: RunStats
    spans: list[ReadableSpan]
    before: Samples
    after: Samples


def _scrape() -> Samples:
    """GET /metrics from the ASGI app, parsed by prometheus-client's parser (a scrape must parse cleanly)."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=metrics.asgi_app())  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://ferry") as client:
            return await client.get("/")

    response = asyncio.run(get())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    tmp = tmp_path_factory.mktemp("observed")
    with world(tmp, customers=30, products=8, orders=40, shopify_api="rest") as w:
        spec = w.spec(w.pipeline_file("observed"))
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        before = _scrape()
        tracing.use_provider(provider)
        try:
            stats = asyncio.run(Runner(spec, Store(tmp / "ferry.db")).run())
        finally:
            tracing.use_provider(None)
        yield Watched(w, stats, list(exporter.get_finished_spans()), before, _scrape())


def _delta(w: Watched, name: str, **labels: str) -> float:
    """Sum over the samples of ``name`` whose labels include ``labels``, after minus before."""

    def total(samples: Samples) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))

    return total(w.after) - total(w.before)


def test_scrape_figures_are_the_runs_stats(watched: Watched) -> None:
    stats = watched.stats
    assert stats.status == "succeeded", stats.error
    pipeline = stats.pipeline
    assert sum(s.written for s in stats.objects.values()) > 0
    assert any(s.dead_lettered for s in stats.objects.values()), "the messy store has dead letters"
    for name, s in stats.objects.items():
        labels = {"pipeline": pipeline, "object": name}
        assert _delta(watched, "ferry_records_read_total", **labels) == s.read, name
        assert _delta(watched, "ferry_records_written_total", **labels) == s.written, name
        assert _delta(watched, "ferry_records_dead_lettered_total", **labels) == s.dead_lettered, name
        # A sandbox without faults: every attempt answered 2xx, each one counted by the sink too.
        assert _delta(watched, "ferry_api_calls_total", system="salesforce", endpoint=name, status="2xx") == \
            s.api_calls, name
    for stream, n in stats.source_records.items():
        assert _delta(watched, "ferry_source_records_staged_total", pipeline=pipeline, stream=stream) == n, stream
    assert _delta(watched, "ferry_api_calls_total", system="shopify") == stats.source_api_calls
    assert _delta(watched, "ferry_runs_total", pipeline=pipeline, status="succeeded") == 1
    assert _delta(watched, "ferry_run_duration_seconds_count", pipeline=pipeline, status="succeeded") == 1
    assert _delta(watched, "ferry_run_duration_seconds_sum", pipeline=pipeline) == pytest.approx(stats.seconds)
    assert stats.budget is not None
    assert watched.after[("ferry_api_budget_remaining", (("budget", "pipeline_share"), ("system", "salesforce")))] \
        == stats.budget["remaining"]
    assert watched.after[("ferry_api_budget_remaining", (("budget", "org_daily"), ("system", "salesforce")))] \
        == stats.budget["org_max"] - stats.budget["org_used"]
    bucket = watched.after[("ferry_api_budget_remaining", (("budget", "bucket"), ("system", "shopify")))]
    assert 0 <= bucket <= 40
    # Bounded labels: no record key or id ever becomes a label value.
    keys = {k for span in watched.spans for k in span.attributes.get("ferry.record_keys", ())}  # type: ignore[union-attr]
    assert keys
    assert not {v for (_, ls) in watched.after for _, v in ls} & keys


def _one(spans: list[ReadableSpan], name: str, **attributes: Any) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name and all(s.attributes.get(k) == v  # type: ignore[union-attr]
                                                       for k, v in attributes.items())]


def _has(span: ReadableSpan, attribute: str, value: str) -> bool:
    return value in (span.attributes or {}).get(attribute, ())  # type: ignore[operator]


def test_one_order_is_followed_from_its_shopify_page_to_its_salesforce_write(watched: Watched) -> None:
    spans = watched.spans
    by_id = {s.context.span_id: s for s in spans}
    (run,) = _one(spans, "ferry.run", **{"ferry.pipeline": "observed"})
    assert run.attributes["ferry.status"] == "succeeded"  # type: ignore[index]
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}, "one run, one trace"

    def ancestors(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    order = watched.world.records("Order")[0]
    key, salesforce_id = order[EXT_IDS["Order"]], order["Id"]
    source_key = f"orders/{key}"
    # Read: the Shopify page it came in, under the stream's read, under the run; the page's GET a sibling.
    (page,) = [s for s in _one(spans, "ferry.read.page", **{"ferry.stream": "orders"})
               if _has(s, "ferry.source_keys", source_key)]
    assert ancestors(page) == ["ferry.read", "ferry.run"]
    gets = [s for s in spans if s.parent is not None and s.parent.span_id == page.parent.span_id  # type: ignore[union-attr]
            and s.attributes.get("ferry.system") == "shopify"]  # type: ignore[union-attr]
    assert gets and all(s.attributes["http.response.status_code"] == 200 for s in gets)  # type: ignore[index]
    # Plan: normalized, mapped and queued for Order in one chunk.
    (chunk,) = [s for s in _one(spans, "ferry.plan.chunk") if _has(s, "ferry.source_keys", source_key)]
    assert _has(chunk, "ferry.outbox.Order", key)
    # Write: the batch that carried it, the Salesforce id it got, and the call(s) that carried the batch.
    (batch,) = [s for s in _one(spans, "ferry.write.batch", **{"ferry.object": "Order"})
                if _has(s, "ferry.record_keys", key)]
    assert ancestors(batch) == ["ferry.load", "ferry.run"]
    keys = list(batch.attributes["ferry.record_keys"])  # type: ignore[index, arg-type]
    assert batch.attributes["ferry.target_ids"][keys.index(key)] == salesforce_id  # type: ignore[index]
    calls = [s for s in spans if s.parent is not None and s.parent.span_id == batch.context.span_id]
    assert calls, "the batch's API calls are its children"
    for call in calls:
        attrs = call.attributes or {}
        assert attrs["ferry.system"] == "salesforce" and attrs["ferry.endpoint"] == "Order"
        assert 200 <= int(attrs["http.response.status_code"]) < 300  # type: ignore[call-overload]
        assert str(attrs["url.path"]).startswith("/services/data/")
    assert sum(int(c.attributes["ferry.records"]) for c in calls) == batch.attributes["ferry.records"]  # type: ignore[index, arg-type]


def test_no_span_carries_a_secret(watched: Watched) -> None:
    env = watched.world.env()
    secrets = [env[k] for k in env if any(w in k for w in ("TOKEN", "SECRET"))]
    secrets.append(Path(env["SALESFORCE_PRIVATE_KEY_FILE"]).read_text().splitlines()[1])
    assert all(len(s) >= 8 for s in secrets)
    text = repr([(s.name, dict(s.attributes or {}), [e.attributes for e in s.events]) for s in watched.spans])
    assert not [s for s in secrets if s in text]


def test_a_bulk_jobs_pages_and_calls_are_on_its_load_span(watched: Watched, tmp_path: Path) -> None:
    w = watched.world
    spec = w.spec(w.pipeline_file("observed-bulk", lambda s: s["target"].update(bulk_threshold=5)))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        stats = asyncio.run(Runner(spec, Store(tmp_path / "ferry.db")).run())
    finally:
        tracing.use_provider(None)
    assert "bulk" in stats.objects["Order"].strategy.split("+"), stats.objects["Order"]
    spans = list(exporter.get_finished_spans())
    # The Orders of registered customers go in the job; the guests' few, after their Accounts, on REST.
    (load,) = _one(spans, "ferry.load", **{"ferry.object": "Order", "ferry.strategy": "bulk"})
    pages = [e for e in load.events if e.name == "ferry.job.page"]
    uploaded = [k for e in pages for k in (e.attributes or {})["ferry.record_keys"]]  # type: ignore[union-attr]
    # Every Order sent went either in the job or on REST beside it (the guests', once the Accounts' part is over).
    order_loads = [dict(s.attributes or {}) for s in _one(spans, "ferry.load", **{"ferry.object": "Order"})]
    beside = sum(int(a["ferry.records"]) for a in order_loads if a.get("ferry.strategy") != "bulk")  # type: ignore[call-overload]
    assert len(uploaded) + beside == stats.objects["Order"].written + stats.objects["Order"].dead_lettered - \
        _dead_before_load(spans, "Order")
    assert len(set(uploaded)) == len(uploaded)
    calls = [s for s in spans if s.parent is not None and s.parent.span_id == load.context.span_id]
    methods = {(s.attributes or {}).get("http.request.method") for s in calls}
    assert {"POST", "PUT", "PATCH", "GET"} <= methods, methods  # create, upload, close, poll and results
    assert all((s.attributes or {}).get("ferry.system") == "salesforce" for s in calls)


def _dead_before_load(spans: list[ReadableSpan], obj: str) -> int:
    """Records of ``obj`` dead-lettered while planning (never uploaded)."""
    return sum(len((s.attributes or {}).get(f"ferry.dead_lettered.{obj}", ())) for s in _one(spans, "ferry.plan.chunk"))  # type: ignore[arg-type]
