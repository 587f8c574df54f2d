"""The dashboard's recent figures (observe/live.py): exact percentiles and rates over a rolling window."""

from __future__ import annotations

from ferry.observe import metrics
from ferry.observe.live import LiveFigures, RollingWindow, merged, percentile


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_percentiles_are_nearest_rank_of_what_is_in_the_window() -> None:
    clock = Clock()
    window = RollingWindow(seconds=300, clock=clock)
    for ms in range(1, 101):  # 1 ms .. 100 ms
        window.add(ms / 1000)
    s = window.summary()
    assert s["count"] == 100
    assert (s["p50"], s["p95"], s["p99"]) == (0.05, 0.095, 0.099)
    assert percentile([], 0.5) is None


def test_old_observations_leave_the_window_and_the_rate_is_over_the_last_minute() -> None:
    clock = Clock()
    window = RollingWindow(seconds=300, clock=clock)
    for _ in range(30):
        window.add(10.0)  # slow ones, long ago
    clock.now += 250
    for _ in range(120):
        window.add(0.2)
    s = window.summary(rate_seconds=60)
    assert s["count"] == 150 and s["per_second"] == 2.0  # 120 in the last minute
    clock.now += 100  # the slow ones are now 350 s old: gone
    s = window.summary(rate_seconds=60)
    assert s["count"] == 120 and s["p99"] == 0.2 and s["per_second"] == 0.0


def test_a_full_window_reports_the_rate_over_the_span_it_holds() -> None:
    clock = Clock()
    window = RollingWindow(seconds=300, max_samples=100, clock=clock)
    for _ in range(500):  # 500 events in 5 s: 100/s; only the newest 100 are kept
        window.add(0.01)
        clock.now += 0.01
    s = window.summary(rate_seconds=60)
    assert s["count"] == 100
    assert 95 <= s["per_second"] <= 105


def test_the_serve_hooks_feed_the_windows_by_pipeline() -> None:
    live = metrics.LIVE
    live.clear()
    metrics.webhook_acknowledged("shopify", 0.004, pipeline="p1")
    metrics.webhook_acknowledged("shopify", 0.002, pipeline="p1", accepted=False)  # a 401: not an event
    metrics.webhook_acknowledged("shopify", 0.003)  # no pipeline (an unknown address): histogram only
    metrics.event_delivered("p1", "Contact", 0.8)
    metrics.event_delivered("p1", "Account", 1.2)
    figures = live.for_pipeline("p1")
    assert figures["acknowledged"]["shopify"]["count"] == 1
    assert figures["acknowledged"]["shopify"]["p50"] == 0.004
    assert set(figures["delivered"]) == {"Contact", "Account"}
    both = merged(figures["delivered"].values())
    assert both["count"] == 2 and both["p99"] == 1.2
    assert live.pipelines() == {"p1"}
    live.clear()


def test_queue_depths_and_budgets_read_back_from_the_gauges() -> None:
    metrics.queue_depth("p2", "inbox", 7)
    metrics.budget_remaining("shopify", "bucket", 31, limit=40)
    assert metrics.queue_depths()["p2"]["inbox"] == 7
    row = next(r for r in metrics.budgets_remaining() if r["system"] == "shopify" and r["budget"] == "bucket")
    assert row["remaining"] == 31 and row["limit"] == 40 and row["at"]


def test_an_unrelated_pipeline_has_empty_figures() -> None:
    assert LiveFigures().for_pipeline("nobody") == {"acknowledged": {}, "delivered": {}}
