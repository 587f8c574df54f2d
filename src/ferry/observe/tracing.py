"""OpenTelemetry traces: off (the API's no-op tracer) unless the standard OTLP variables say where to send them.

A run is one trace: ``ferry.run`` → ``ferry.read.page`` (each source page staged) → ``ferry.plan.chunk`` (staged
records normalized, mapped, validated, into the outbox or the DLQ) → ``ferry.load`` (one target object) →
``ferry.write.batch`` (one batch handed to the sink, with its results) → one span per HTTP attempt (system,
endpoint family, method, path, status). Spans are per page, chunk, batch and call, never per record: the
per-record loop stays untouched. Span attributes carry record keys and target ids where they let a reader
follow one record (capped lists); never a header, a query string, a payload or a secret.

Turned on by ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the exporter reads the
other ``OTEL_EXPORTER_OTLP_*`` variables itself: headers, timeout, compression; ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` name the service); ``OTEL_SDK_DISABLED=true`` keeps it off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
MAX_KEYS = 500  # record keys listed on one span; the count beyond is in ferry.record_keys_omitted

# The API's tracer: a no-op until a provider is installed (configure_tracing, or use_provider in tests).
_tracer: Tracer = trace.NoOpTracer()
_enabled = False
_provider: TracerProvider | None = None


def tracing_requested(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure_tracing() -> bool:
    """Install the SDK with an OTLP/HTTP exporter when the environment asks for it; True if tracing is on.

    The SDK is imported only then: without the variables ferry pays for nothing but no-op calls."""
    if _enabled or not tracing_requested():
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES on top of this default.
    provider = TracerProvider(resource=Resource.create({"service.name": "ferry"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use_provider(provider)
    trace.set_tracer_provider(provider)  # for libraries that trace through the global provider
    return True


def use_provider(provider: TracerProvider | None) -> None:
    """Trace through ``provider`` from now on (None: back to the no-op). Tests install an in-memory exporter."""
    global _tracer, _enabled, _provider
    _provider = provider
    _enabled = provider is not None
    _tracer = provider.get_tracer("ferry") if provider is not None else trace.NoOpTracer()


def shutdown_tracing() -> None:
    """Flush what is buffered (a batch run ends before the exporter's next tick)."""
    if _provider is not None:
        _provider.force_flush()


def enabled() -> bool:
    return _enabled


@contextmanager
def span(name: str, attributes: dict[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    """A child of the current span for the block; errors leaving it are recorded on it."""
    if not _enabled:  # the common case: not even the no-op context switch
        yield _NO_SPAN
        return
    with _tracer.start_as_current_span(name, attributes=attributes, kind=kind) as current:
        yield current


def set_keys(target: Span, keys: Iterable[Any], attribute: str = "ferry.record_keys") -> None:
    """List record keys on ``target`` (capped at MAX_KEYS, the rest counted); nothing when not recording."""
    if not target.is_recording():
        return
    listed: list[str] = []
    omitted = 0
    for key in keys:
        if len(listed) < MAX_KEYS:
            listed.append(str(key))
        else:
            omitted += 1
    target.set_attribute(attribute, listed)
    if omitted:
        target.set_attribute(f"{attribute}_omitted", omitted)


_NO_SPAN: Span = trace.INVALID_SPAN

__all__ = ["Span", "SpanKind", "configure_tracing", "current_span", "enabled", "set_keys", "shutdown_tracing", "span",
           "tracing_requested", "use_provider"]


def current_span() -> Span:
    """The span the caller runs in (a non-recording one when tracing is off)."""
    return trace.get_current_span()
