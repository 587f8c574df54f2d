"""structlog set-up: quiet by default, ``-v`` info, ``-vv`` debug; console or JSON lines on stderr; secrets redacted.

Levels: the default shows warnings and errors only, each retry storm summarized in one line by the HTTP core
(``warning: shopify: GET /x retried 4 time(s) after connection refused; gave up``); ``-v`` adds the progress of a
run (info); ``-vv`` adds every retry attempt and other chatter (debug). At the default level a call that gave up
is not a line of its own when the command then fails with that call's error: the CLI's ``error:`` line names the
host and the cause, and ``fold_retries`` adds how many times it was tried (``GaveUpNotes`` holds the summary back;
one not folded into an error line is written before the next line, after 5 s, or when the process ends).
``--log-format json`` writes one JSON object a line (for a log shipper) at the same levels. Every line logged
during a run carries ``run_id`` and ``pipeline`` (bound as structlog contextvars by the engine) and, when tracing
is on, ``trace_id``/``span_id``.

Secrets are kept out twice: a field whose name says it is a secret is masked, and the values of the secret
environment variables (tokens, client secrets, passwords, private keys) and passwords in URLs are cut out of
every string of a line that is about to be written.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

_SECRET_KEYS = re.compile(r"(token|secret|password|authorization|private_key|assertion|session)", re.I)
# Environment variables whose values are secrets (SHOPIFY_ACCESS_TOKEN, SALESFORCE_CLIENT_SECRET, WOO_CONSUMER_KEY,
# QUICKBOOKS_REFRESH_TOKEN, *_PASSWORD...). Short values are skipped: masking "1" everywhere would mangle lines.
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|CONSUMER_KEY|PRIVATE_KEY|API_KEY|CREDENTIAL)", re.I)
_MIN_SECRET_LEN = 6
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<password>[^/\s@]+)@", re.I)

FORMATS = ("console", "json")


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A log field whose name says it is a secret never reaches the output."""
    for key in list(event):
        if key != "event" and _SECRET_KEYS.search(key):
            event[key] = "***"
    return event


def secret_values(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The values of the environment's secret variables, longest first (a secret containing another is cut whole)."""
    env = os.environ if environ is None else environ
    found = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(found, key=len, reverse=True)


class ScrubSecretValues:
    """Cuts known secret values and URL passwords out of every string in a log line (last line of defence)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = list(secrets)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        if "@" in text:
            text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
        return text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            event[key] = self._clean(value)
        return event


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current trace and span ids (hex, as trace back-ends show them) when a span is being recorded."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
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


HOLD_SECONDS = 5.0  # a give-up not folded into an error line by then is written as its own line


class GaveUpNotes:
    """At the default level: holds back each ``http.retried`` summary of a call that gave up, so that the CLI's
    error line (which names the same call, host and cause) can say how many attempts it took instead of a second
    line saying it. A held summary is written as before when another line comes first, after ``HOLD_SECONDS``
    (``ferry serve`` lives on after a give-up) or when the process ends."""

    def __init__(self, hold_seconds: float = HOLD_SECONDS) -> None:
        self.hold_seconds = hold_seconds
        self.held: list[MutableMapping[str, Any]] = []
        self._lock = threading.Lock()
        self._exit_hook = False

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event.get("event") == "http.retried" and event.get("succeeded") is False and event.get("summary"):
            with self._lock:
                self.held.append(dict(event))
                if not self._exit_hook:
                    atexit.register(self.flush)
                    self._exit_hook = True
            timer = threading.Timer(self.hold_seconds, self.flush)
            timer.daemon = True
            timer.start()
            raise structlog.DropEvent
        self.flush()  # the held ones first: lines stay in the order they happened
        return event

    def flush(self) -> None:
        with self._lock:
            held, self.held = self.held, []
        for event in held:
            sys.stderr.write(render_quiet(None, "warning", event) + "\n")
        if held:
            sys.stderr.flush()

    def fold(self, message: str) -> str:
        """``message`` with the attempts of the held give-ups it is about (their call is named in it)."""
        with self._lock:
            matched = [h for h in self.held if str(h.get("target", "\0")) in message]
            self.held = [h for h in self.held if h not in matched]
        if not matched:
            return message
        tries = max(int(h.get("retries", 0)) for h in matched) + 1
        return f"{message} (tried {tries} times; -vv shows each attempt)"


GAVE_UP = GaveUpNotes()


def fold_retries(message: str) -> str:
    """The CLI's final error line with the retry summary of the call it names folded in (default level only:
    with -v or --log-format json the summary was written as its own line already)."""
    return GAVE_UP.fold(message)


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def level_of(verbosity: int) -> int:
    """0: warnings, 1 (-v): info, 2+ (-vv): debug."""
    return logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG


def configure_logging(verbosity: int | bool = 0, log_format: str = "console") -> None:
    """Set up structlog for the process. ``verbosity`` counts ``-v`` (True is one); ``log_format`` console|json."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(FORMATS)}")
    level = int(verbosity)
    renderer: Any
    fold: list[Any] = []
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    elif level >= 1:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = render_quiet
        fold = [GAVE_UP]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_ids,
            redact_secrets,
            ScrubSecretValues(secret_values()),
            *fold,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_of(level)),
        # sys.stderr is looked up per logger, not bound once: a stream swapped in by a caller (and later
        # closed, as test runners and CliRunner do) must not break every later log line.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
