"""cli/logging.py: levels by -v count, console or JSON lines, run context, trace ids, secrets cut out."""

from __future__ import annotations

import json
import logging
import time

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from ferry.cli.logging import GaveUpNotes, ScrubSecretValues, configure_logging, level_of, secret_values
from ferry.observe import tracing


def test_levels_by_verbosity() -> None:
    assert level_of(0) == logging.WARNING and level_of(True) == logging.INFO
    assert level_of(1) == logging.INFO and level_of(2) == logging.DEBUG and level_of(5) == logging.DEBUG


def test_secret_values_come_from_secret_named_variables_only() -> None:
    env = {"SHOPIFY_ACCESS_TOKEN": "shpat_abcdef123", "QUICKBOOKS_CLIENT_SECRET": "s3cr3t-value",
           "WOOCOMMERCE_CONSUMER_KEY": "ck_0123456789", "DB_PASSWORD": "hunter22", "SHOPIFY_URL": "https://x",
           "SHORT_TOKEN": "abc"}
    assert set(secret_values(env)) == {"shpat_abcdef123", "s3cr3t-value", "ck_0123456789", "hunter22"}


def test_scrub_cuts_secret_values_and_url_passwords_everywhere_in_a_line() -> None:
    scrub = ScrubSecretValues(["shpat_abcdef123"])
    event = {"event": "x", "error": "GET /a?token=shpat_abcdef123 failed",
             "nested": {"url": "postgresql://ferry:pa55w0rd@db:5432/ferry", "list": ["shpat_abcdef123"]},
             "exc": ValueError("bad shpat_abcdef123"), "n": 3}
    out = scrub(None, "info", event)
    text = repr(out)
    assert "shpat_abcdef123" not in text and "pa55w0rd" not in text
    assert out["nested"]["url"] == "postgresql://ferry:***@db:5432/ferry" and out["n"] == 3


def test_json_lines_carry_the_bound_run_and_the_trace(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", "very-secret-value")
    configure_logging(1, "json")
    log = structlog.get_logger("t")
    tracing.use_provider(TracerProvider())
    try:
        with structlog.contextvars.bound_contextvars(run_id=7, pipeline="p"), tracing.span("ferry.run") as span:
            log.info("run.start", client_secret="x", note="sent very-secret-value")
            log.debug("hidden at -v")
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        tracing.use_provider(None)
        structlog.reset_defaults()  # other tests capture logs at every level
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    (line,) = lines
    assert line["run_id"] == 7 and line["pipeline"] == "p" and line["level"] == "info"
    assert line["trace_id"] == trace_id and line["client_secret"] == "***" and line["note"] == "sent ***"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging(0, "xml")


def _gave_up(target: str = "POST /services/oauth2/token") -> dict[str, object]:
    return {"event": "http.retried", "level": "warning", "succeeded": False, "retries": 4, "target": target,
            "summary": f"salesforce: {target} on 10.0.0.1:443 retried 4 time(s) after connection refused; gave up"}


def test_a_give_up_is_folded_into_the_error_line_about_its_call(capsys: pytest.CaptureFixture[str]) -> None:
    notes = GaveUpNotes()
    with pytest.raises(structlog.DropEvent):
        notes(None, "warning", _gave_up())
    folded = notes.fold("POST /services/oauth2/token on 10.0.0.1:443: connection refused")
    assert folded.endswith("connection refused (tried 5 times; -vv shows each attempt)")
    notes.flush()
    assert capsys.readouterr().err == ""  # folded: never a line of its own
    assert notes.fold("another error") == "another error"


def test_a_give_up_not_folded_is_written_before_the_next_line_or_after_the_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    notes = GaveUpNotes(hold_seconds=0.2)
    with pytest.raises(structlog.DropEvent):
        notes(None, "warning", _gave_up())
    event = {"event": "events.batch_failed", "level": "warning"}
    assert notes(None, "warning", event) is event
    assert capsys.readouterr().err.startswith("warning: salesforce: POST /services/oauth2/token on 10.0.0.1:443")
    with pytest.raises(structlog.DropEvent):
        notes(None, "warning", _gave_up("GET /x"))
    time.sleep(0.6)  # ferry serve lives on after a give-up: the line comes anyway
    assert "GET /x on 10.0.0.1:443 retried 4 time(s)" in capsys.readouterr().err
