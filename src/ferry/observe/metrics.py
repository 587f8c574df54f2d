"""ferry's Prometheus metrics: one registry, the metric objects, and small functions the layers call.

Conventions (https://prometheus.io/docs/practices/naming/): ``ferry_`` prefix, units in the name
(``_seconds``), counters end in ``_total`` (prometheus-client appends it). Labels are bounded: pipeline and
object names come from the pipeline files, systems and endpoint families from the connectors' call labels,
error classes from ferry's error codes; a record's key, an id or a URL is never a label.

The registry is ferry's own (not prometheus-client's global one) so that what ``/metrics`` shows is exactly
ferry's figures, whoever else shares the process; the process and platform collectors are added to it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_asgi_app,
    write_to_textfile,
)

from ferry.observe.live import LIVE

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes...
PlatformCollector(registry=REGISTRY)  # python_info

_MAX_LABEL = 64  # a label value longer than this is cut: a bug must not turn into a cardinality explosion

RECORDS_READ = Counter(
    "ferry_records_read", "Target records produced from the source (valid or not), by pipeline and target object.",
    ["pipeline", "object"], registry=REGISTRY,
)
RECORDS_WRITTEN = Counter(
    "ferry_records_written", "Records the target accepted (created or updated), by pipeline and target object.",
    ["pipeline", "object"], registry=REGISTRY,
)
RECORDS_DEAD_LETTERED = Counter(
    "ferry_records_dead_lettered", "Records sent to the dead-letter queue, by pipeline and target object.",
    ["pipeline", "object"], registry=REGISTRY,
)
SOURCE_RECORDS_STAGED = Counter(
    "ferry_source_records_staged", "Source records read and staged durably, by pipeline and source stream.",
    ["pipeline", "stream"], registry=REGISTRY,
)
API_CALLS = Counter(
    "ferry_api_calls",
    "HTTP calls to remote systems (each attempt), by system, endpoint family (the connector's call label) and "
    "status class (2xx, 3xx, 4xx, 5xx, or network).",
    ["system", "endpoint", "status"], registry=REGISTRY,
)
API_CALL_DURATION = Histogram(
    "ferry_api_call_duration_seconds", "Duration of one HTTP attempt to a remote system.",
    ["system", "endpoint"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
API_RETRIES = Counter(
    "ferry_api_retries", "HTTP calls repeated after a transient error, by system and error class (ferry's error "
    "code: NETWORK, HTTP_429, HTTP_503, UNABLE_TO_LOCK_ROW...).",
    ["system", "error_class"], registry=REGISTRY,
)
API_BUDGET_REMAINING = Gauge(
    "ferry_api_budget_remaining",
    "API calls left in a remote budget: Salesforce's daily allocation (org_daily) and the pipeline's share of it "
    "(pipeline_share), Shopify's REST leaky bucket (bucket) and GraphQL cost points (graphql_points).",
    ["system", "budget"], registry=REGISTRY,
)
RUNS = Counter("ferry_runs", "Finished runs, by pipeline and final status.", ["pipeline", "status"], registry=REGISTRY)
RUN_DURATION = Histogram(
    "ferry_run_duration_seconds", "Wall time of a run, by pipeline and final status.", ["pipeline", "status"],
    registry=REGISTRY, buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
# Hooks for the real-time path (`ferry serve`): it calls the functions below.
WEBHOOK_ACK = Histogram(
    "ferry_webhook_ack_seconds", "From a webhook request's arrival to ferry's answer (verified and stored).",
    ["system"], registry=REGISTRY, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
END_TO_END = Histogram(
    "ferry_end_to_end_seconds", "From a source event's arrival to its record written in the target.",
    ["pipeline", "object"], registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
QUEUE_DEPTH = Gauge(
    "ferry_queue_depth", "Items waiting in a queue (event inbox, outbox), by pipeline and queue.",
    ["pipeline", "queue"], registry=REGISTRY,
)
# The work bus (distributed mode, ferry.bus): what happened to its messages, by event.
BUS_MESSAGES = Counter(
    "ferry_bus_messages", "Work-bus messages by event: published, duplicate (dedup by msg id), refused_full, acked, "
    "retried, redelivered, dead_lettered.",
    ["event"], registry=REGISTRY,
)


def bounded(value: str) -> str:
    return value if len(value) <= _MAX_LABEL else value[:_MAX_LABEL]


def status_class(status: int | None) -> str:
    """``2xx``... for an HTTP status, ``network`` when no answer came."""
    return "network" if status is None else f"{status // 100}xx"


def api_call(system: str, endpoint: str, status: int | None, seconds: float) -> None:
    API_CALLS.labels(system, bounded(endpoint), status_class(status)).inc()
    API_CALL_DURATION.labels(system, bounded(endpoint)).observe(seconds)


def api_retry(system: str, error_class: str) -> None:
    API_RETRIES.labels(system, bounded(error_class)).inc()


# (system, budget) -> (size of the budget when known, epoch seconds of the last report): beside the gauge, for
# the dashboard to draw a bar and say how old the figure is (a gauge keeps its last value after a run).
_BUDGET_SEEN: dict[tuple[str, str], tuple[float | None, float]] = {}


def budget_remaining(system: str, budget: str, remaining: float, *, limit: float | None = None) -> None:
    API_BUDGET_REMAINING.labels(system, budget).set(remaining)
    if limit is None:  # a reporter that does not know the size: the size last reported stands
        limit = _BUDGET_SEEN.get((system, budget), (None, 0.0))[0]
    _BUDGET_SEEN[(system, budget)] = (limit, time.time())


def source_staged(pipeline: str, stream: str, records: int) -> None:
    SOURCE_RECORDS_STAGED.labels(pipeline, stream).inc(records)


def records(pipeline: str, obj: str, *, read: int = 0, written: int = 0, dead_lettered: int = 0) -> None:
    """Add records of one target object. Zeros are added too: every object of a pipeline has its series from its
    first run on (a rate() over a series that appears late misses its first increase)."""
    RECORDS_READ.labels(pipeline, obj).inc(read)
    RECORDS_WRITTEN.labels(pipeline, obj).inc(written)
    RECORDS_DEAD_LETTERED.labels(pipeline, obj).inc(dead_lettered)


def run_finished(pipeline: str, status: str, seconds: float) -> None:
    RUNS.labels(pipeline, status).inc()
    RUN_DURATION.labels(pipeline, status).observe(seconds)


def webhook_acknowledged(system: str, seconds: float, *, pipeline: str | None = None, accepted: bool = True) -> None:
    """``ferry serve``: a webhook answered ``seconds`` after its request arrived. An accepted one (2xx) of a known
    pipeline also counts as an event in the dashboard's recent figures (``observe/live.py``)."""
    WEBHOOK_ACK.labels(system).observe(seconds)
    if pipeline is not None and accepted:
        LIVE.acknowledged(pipeline, system, seconds)


def event_delivered(pipeline: str, obj: str, seconds: float) -> None:
    """``ferry serve``: an event's record written ``seconds`` after the event arrived."""
    END_TO_END.labels(pipeline, obj).observe(seconds)
    LIVE.delivered(pipeline, obj, seconds)


def queue_depth(pipeline: str, queue: str, depth: int) -> None:
    QUEUE_DEPTH.labels(pipeline, queue).set(depth)


def queue_depths() -> dict[str, dict[str, float]]:
    """The ``ferry_queue_depth`` gauge as {pipeline: {queue: depth}} (what the dashboard's panel shows)."""
    out: dict[str, dict[str, float]] = {}
    for family in QUEUE_DEPTH.collect():
        for s in family.samples:
            out.setdefault(s.labels["pipeline"], {})[s.labels["queue"]] = s.value
    return out


def budgets_remaining() -> list[dict[str, object]]:
    """The ``ferry_api_budget_remaining`` gauge as rows {system, budget, remaining, limit, at}: what this process
    has seen (``at``: epoch seconds of the last report; ``limit``: the budget's size when the reporter knows it)."""
    out: list[dict[str, object]] = []
    for family in API_BUDGET_REMAINING.collect():
        for s in family.samples:
            key = (s.labels["system"], s.labels["budget"])
            limit, at = _BUDGET_SEEN.get(key, (None, None))
            out.append({"system": key[0], "budget": key[1], "remaining": s.value, "limit": limit, "at": at})
    return sorted(out, key=lambda r: (str(r["system"]), str(r["budget"])))


def bus_message(event: str, count: int = 1) -> None:
    """The work bus: ``count`` messages had ``event`` (published, duplicate, acked, dead_lettered...)."""
    BUS_MESSAGES.labels(event).inc(count)


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus' text format (what a scrape of ``/metrics`` returns)."""
    return generate_latest(registry)


def asgi_app(registry: CollectorRegistry = REGISTRY) -> object:
    """An ASGI app answering scrapes: ``fastapi_app.mount("/metrics", asgi_app())``."""
    return make_asgi_app(registry)


def write_textfile(path: Path, registry: CollectorRegistry = REGISTRY) -> None:
    """Write the metrics atomically for node_exporter's textfile collector (batch runs: ``--metrics-file``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def sample_values(registry: CollectorRegistry = REGISTRY) -> Mapping[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}: for tests and diagnostics."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


__all__ = [
    "REGISTRY",
    "api_call",
    "api_retry",
    "asgi_app",
    "budget_remaining",
    "bus_message",
    "event_delivered",
    "exposition",
    "queue_depth",
    "records",
    "run_finished",
    "source_staged",
    "webhook_acknowledged",
    "write_textfile",
]
