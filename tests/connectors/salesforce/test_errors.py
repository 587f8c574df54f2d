"""Salesforce answers → ferry error types (no network: responses built in memory)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from ferry.connectors.http import SessionExpired
from ferry.connectors.salesforce.errors import classify
from ferry.errors import AuthError, BudgetExhausted, PermanentError, TransientError

TOKEN = "00D000000000001!AQsecretsecret"


def _resp(status: int, code: str | None = None, message: str = "", headers: dict[str, str] | None = None
          ) -> httpx.Response:
    body = orjson.dumps([{"errorCode": code, "message": message}]) if code else b""
    request = httpx.Request("PATCH", "https://org.test/services/data/v62.0/composite/sobjects/Contact/Ext__c",
                            headers={"Authorization": f"Bearer {TOKEN}"})
    return httpx.Response(status, content=body, headers=headers, request=request)


def test_success() -> None:
    assert classify(_resp(200)) is None and classify(_resp(201)) is None and classify(_resp(204)) is None


def test_expired_session() -> None:
    err = classify(_resp(401, "INVALID_SESSION_ID", "Session expired or invalid"))
    assert isinstance(err, SessionExpired) and err.code == "INVALID_SESSION_ID"


def test_daily_budget_stops_the_run() -> None:
    err = classify(_resp(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
    assert isinstance(err, BudgetExhausted) and not err.transient


def test_concurrent_limit_is_retried_after_a_pause() -> None:
    err = classify(_resp(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."))
    assert isinstance(err, TransientError) and err.retry_after is not None and err.retry_after > 0


def test_lock_contention_is_transient_with_a_derived_pause() -> None:
    err = classify(_resp(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"))
    assert isinstance(err, TransientError) and err.retry_after is not None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(status: int) -> None:
    assert isinstance(classify(_resp(status, "SERVER_UNAVAILABLE", "down")), TransientError)


def test_429_honours_retry_after() -> None:
    err = classify(_resp(429, "REQUEST_LIMIT_EXCEEDED", "Too many", {"Retry-After": "3"}))
    assert isinstance(err, TransientError) and err.retry_after == 3.0


def test_validation_is_permanent_and_message_is_secret_free() -> None:
    err = classify(_resp(400, "INVALID_FIELD", "No such column 'Foo' on sobject of type Contact"))
    assert isinstance(err, PermanentError) and err.code == "INVALID_FIELD"
    assert str(err).startswith("PATCH /services/data/v62.0/composite/sobjects/Contact/Ext__c: HTTP 400 INVALID_FIELD")
    assert TOKEN not in str(err)


def test_multiple_matches_is_permanent() -> None:
    assert isinstance(classify(_resp(300)), PermanentError)


def test_other_401_is_auth_error() -> None:
    assert isinstance(classify(_resp(401, "INVALID_AUTH_HEADER", "bad header")), AuthError)
