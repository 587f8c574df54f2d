"""Tracing is off unless the OTLP variables are set, costs nothing measurable then, and records spans when on."""

from __future__ import annotations

import subprocess
import sys
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ferry.observe import tracing


def test_requested_only_by_the_standard_variables() -> None:
    assert not tracing.tracing_requested({})
    assert tracing.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})


def test_off_by_default_spans_do_not_record_and_the_sdk_is_not_imported() -> None:
    code = ("import sys; from ferry.observe import tracing; assert not tracing.configure_tracing(); "
            "s = tracing.span('x'); sp = s.__enter__(); assert not sp.is_recording(); s.__exit__(None, None, None); "
            "assert 'opentelemetry.sdk' not in sys.modules, 'SDK imported while off'")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_off_costs_about_a_function_call() -> None:
    tracing.use_provider(None)
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        with tracing.span("ferry.plan.chunk", {"ferry.records": 2000}) as span:
            tracing.set_keys(span, ())
    per_span = (time.perf_counter() - t0) / n
    assert per_span < 20e-6, f"{per_span * 1e6:.1f} us a span when off"  # a chunk of 2,000 records takes ~40 ms


def test_on_spans_nest_and_keys_are_capped() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        with tracing.span("outer", {"a": 1}), tracing.span("inner") as inner:
            tracing.set_keys(inner, range(tracing.MAX_KEYS + 7))
    finally:
        tracing.use_provider(None)
    inner_span, outer_span = exporter.get_finished_spans()
    assert inner_span.parent is not None and inner_span.parent.span_id == outer_span.context.span_id
    attrs = inner_span.attributes or {}
    assert len(attrs["ferry.record_keys"]) == tracing.MAX_KEYS  # type: ignore[arg-type]
    assert attrs["ferry.record_keys_omitted"] == 7


def test_configured_from_the_environment_exports_over_otlp(tmp_path: object) -> None:
    """With the endpoint set, a run's spans go out over OTLP/HTTP: a tiny collector on loopback receives them."""
    code = r'''
import http.server, threading, os, sys
got = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        got.append((self.path, self.headers.get("Content-Type"), self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{srv.server_port}"
from ferry.observe import tracing
assert tracing.configure_tracing()
with tracing.span("ferry.run", {"ferry.pipeline": "otlp-test"}):
    pass
tracing.shutdown_tracing()
assert got and got[0][0] == "/v1/traces" and got[0][1] == "application/x-protobuf", got
assert b"ferry.run" in got[0][2] and b"otlp-test" in got[0][2]
'''
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "NO_PROXY": "*"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
