"""structlog set-up: quiet by default, key=value lines on stderr with --verbose, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(token|secret|password|authorization|private_key|assertion|session)", re.I)


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: a log field whose name says it is a secret never reaches the output."""
    for key in list(event):
        if key != "event" and _SECRET_KEYS.search(key):
            event[key] = "***"
    return event


_KEY_VALUE = structlog.processors.KeyValueRenderer()


def render_quiet(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
    """The default (not --verbose) line: an event that carries a ``summary`` is that sentence, prefixed by its
    level (``warning: shopify: GET /x retried 4 time(s) after connection refused; gave up: ...``); any other
    event stays key=value."""
    summary = event.get("summary")
    if summary:
        return f"{event.get('level', 'warning')}: {summary}"
    return str(_KEY_VALUE(logger, name, event))


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.dev.ConsoleRenderer(colors=False) if verbose else render_quiet,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # sys.stderr is looked up per logger, not bound once: a stream swapped in by a caller (and later
        # closed, as test runners and CliRunner do) must not break every later log line.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
