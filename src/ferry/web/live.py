"""The real-time figures the dashboard shows inside ``ferry serve``, read in-process from ``ferry.observe``:
events/s, queue depth, webhook-acknowledgement and end-to-end latency percentiles, and the API budgets this
process has seen (Salesforce's daily allocation, Shopify's leaky bucket).

Events/s and the percentiles come from the rolling windows of ``observe/live.py`` (the last 5 minutes, exact
percentiles; the Prometheus histograms' buckets are too coarse for that), queue depth and budgets from the
Prometheus gauges of ``observe/metrics.py`` (the same values ``/metrics`` shows).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ferry.observe import live, metrics


def pipeline_figures(name: str, queues: dict[str, float]) -> dict[str, Any]:
    series = live.LIVE.for_pipeline(name)
    acks = live.merged(series["acknowledged"].values())
    delivered = series["delivered"]
    end_to_end = live.merged(delivered.values())
    return {
        # An event is a webhook the pipeline accepted (2xx): events/s over the last minute.
        "events_per_second": acks["per_second"],
        "events": acks["count"],
        "queue": {"inbox": queues.get("inbox"), "outbox": queues.get("outbox")},
        "ack": {k: acks[k] for k in ("p50", "p95", "p99")},
        # Records written per second (every object), and the worst object's latency percentiles.
        "written_per_second": end_to_end["per_second"],
        "end_to_end": {k: end_to_end[k] for k in ("p50", "p95", "p99")},
        "objects": {obj: s for obj, s in sorted(delivered.items())},
    }


def realtime(pipelines: Iterable[str]) -> dict[str, Any]:
    """The ``/api/live`` document: every pipeline given, and any other this process has figures for."""
    depths = metrics.queue_depths()
    names = sorted(set(pipelines) | live.LIVE.pipelines() | set(depths))
    return {
        "window_seconds": live.WINDOW_SECONDS,
        "rate_seconds": live.RATE_SECONDS,
        "pipelines": {name: pipeline_figures(name, depths.get(name, {})) for name in names},
        "budgets": live_budgets(),
    }


def live_budgets() -> list[dict[str, Any]]:
    """The API budget gauges as this process last saw them, with the share used when the size is known."""
    rows = []
    for row in metrics.budgets_remaining():
        limit, remaining = row["limit"], row["remaining"]
        used = None
        if isinstance(limit, int | float) and limit > 0 and isinstance(remaining, int | float):
            used = min(1.0, max(0.0, (limit - remaining) / limit))
        rows.append({**row, "used_fraction": used})
    return rows
