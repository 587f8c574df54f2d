"""Salesforce's errors, classified by what they mean for a retry.

Salesforce sends no ``Retry-After``; the pause comes from the error itself. The daily budget
(403 ``REQUEST_LIMIT_EXCEEDED`` "TotalRequests") is not retryable inside a run: it stops the run
at a checkpoint. The concurrent-request limit with the same code is retryable after a pause.
"""

from __future__ import annotations

import random

import httpx

from ferry.connectors.http import (
    TRANSIENT_STATUSES,
    SessionExpired,
    describe_failure,
    error_detail,
)
from ferry.connectors.retry import parse_retry_after
from ferry.errors import AuthError, BudgetExhausted, FerryError, PermanentError, RecordError, TransientError

INVALID_SESSION_ID = "INVALID_SESSION_ID"
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"

# Per-record codes worth resubmitting (the record itself is fine; the org was busy).
TRANSIENT_RECORD_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "API_TEMPORARILY_UNAVAILABLE",
    }
)
# Whole-request codes that are transient whatever their HTTP status, with the base pause they call for.
_TRANSIENT_CALL_PAUSES: dict[str, float | None] = {
    "UNABLE_TO_LOCK_ROW": 1.0,  # another transaction holds the row: a second or two usually frees it
    "SERVER_UNAVAILABLE": None,  # None: exponential backoff with jitter
    "API_TEMPORARILY_UNAVAILABLE": None,
}
CONCURRENT_LIMIT_PAUSE = 5.0  # long-running requests (>= 20 s) must drain before ours is accepted


def _jittered(base: float) -> float:
    # Many workers hit by the same lock or limit must not all come back at the same instant.
    return base * random.uniform(0.5, 1.5)


def is_daily_budget(message: str | None) -> bool:
    """The daily allocation says "TotalRequests"; the concurrent limit says "Concurrent…"."""
    text = (message or "").lower()
    return "concurrent" not in text


def classify(response: httpx.Response) -> FerryError | None:
    """None for success (2xx); otherwise the ferry error this Salesforce answer means."""
    status = response.status_code
    if status < 300:
        return None
    code, message = error_detail(response)
    text = describe_failure(response, code, message)
    if status == 300:
        return PermanentError(text + " (the external id matches more than one record)", code="MULTIPLE_CHOICES")
    if status == 401 and code in (INVALID_SESSION_ID, None):
        return SessionExpired(text, code=INVALID_SESSION_ID)
    if code == REQUEST_LIMIT_EXCEEDED:
        return _request_limit(response, text, message)
    if code in _TRANSIENT_CALL_PAUSES:
        pause = _TRANSIENT_CALL_PAUSES[code]
        return TransientError(text, retry_after=_jittered(pause) if pause else None, code=code)
    if status in TRANSIENT_STATUSES:
        return TransientError(
            text, retry_after=parse_retry_after(response.headers.get("Retry-After")), code=code or f"HTTP_{status}"
        )
    if status == 401:
        return AuthError(text, code=code or "HTTP_401")
    return PermanentError(text, code=code or f"HTTP_{status}")


def _request_limit(response: httpx.Response, text: str, message: str | None) -> FerryError:
    if response.status_code == 429:  # not what Salesforce sends, but proxies and emulators do
        asked = parse_retry_after(response.headers.get("Retry-After"))
        return TransientError(
            text,
            retry_after=asked if asked is not None else _jittered(CONCURRENT_LIMIT_PAUSE),
            code=REQUEST_LIMIT_EXCEEDED,
        )
    if is_daily_budget(message):
        return BudgetExhausted(
            text + " (the org's daily API allocation is spent; the run stops and resumes when the rolling "
            "24-hour window frees capacity)",
            resume_after="rolling 24h window",
        )
    return TransientError(text, retry_after=_jittered(CONCURRENT_LIMIT_PAUSE), code=REQUEST_LIMIT_EXCEEDED)


def record_error(code: str, message: str, fields: list[str] | None = None) -> RecordError:
    """One record's failure, marked transient when resubmitting the same record can succeed."""
    return RecordError(code=code, message=message, fields=list(fields or []), transient=code in TRANSIENT_RECORD_CODES)


def record_error_from_call(err: FerryError) -> RecordError:
    """A whole call failed: every record it carried gets this error (transient if the call was)."""
    code = getattr(err, "code", None) or type(err).__name__
    return RecordError(code=str(code), message=str(err), fields=[], transient=err.transient)
