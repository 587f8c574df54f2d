"""The HTTP core: classification by type, what gets retried, Retry-After, refresh-once, secret-free messages.

httpx.MockTransport appears here only to raise synthetic transport errors (and answer the status
codes whose classification is under test); conversations with real systems are in the sandbox tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from ferry.connectors.http import (
    HttpCore,
    SessionExpired,
    classify_transport_error,
    default_classify,
    describe_failure,
    safe_target,
)
from ferry.errors import AuthError, ConfigError, FerryError, PermanentError, TransientError

SECRET = "shpat_supersecret_token_value"


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              url: str = f"https://shop.test/admin/api/2025-07/orders.json?access_token={SECRET}") -> httpx.Response:
    request = httpx.Request("GET", url, headers={"X-Shopify-Access-Token": SECRET})
    return httpx.Response(status, content=body, headers=headers, request=request)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _core(handler: Callable[[httpx.Request], httpx.Response], sleeps: Sleeps, **kw: object) -> HttpCore:
    return HttpCore("test", base_url="https://api.test", transport=httpx.MockTransport(handler), sleep=sleeps,
                    headers={"Authorization": f"Bearer {SECRET}"}, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------- classification


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses(status: int) -> None:
    err = default_classify(_response(status))
    assert isinstance(err, TransientError) and err.transient


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_other_4xx_are_permanent(status: int) -> None:
    err = default_classify(_response(status))
    assert isinstance(err, PermanentError) and not err.transient


def test_401_is_an_auth_error() -> None:
    assert isinstance(default_classify(_response(401, b'{"errors":"[API] Invalid API key"}')), AuthError)


def test_success_is_not_an_error() -> None:
    assert default_classify(_response(200, b"{}")) is None


def test_429_carries_retry_after() -> None:
    err = default_classify(_response(429, headers={"Retry-After": "2.0"}))
    assert isinstance(err, TransientError) and err.retry_after == 2.0


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ReadError("reset"),
     httpx.RemoteProtocolError("peer closed"), httpx.ConnectTimeout("slow"), httpx.WriteError("broken pipe")],
)
def test_network_errors_are_transient(exc: httpx.TransportError) -> None:
    assert classify_transport_error(exc, "GET", "https://x.test/a").transient


def test_untrusted_certificate_is_a_config_error_not_a_retry() -> None:
    err = classify_transport_error(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] self signed"), "GET",
                                   "https://x.test/a")
    assert isinstance(err, ConfigError) and "ca_file" in str(err)


# ----------------------------------------------------------------- messages never carry secrets


def test_messages_have_method_path_status_and_remote_code_but_no_query_or_headers() -> None:
    body = b'[{"errorCode":"INVALID_FIELD","message":"No such column \'Foo\'"}]'
    text = describe_failure(_response(400, body))
    assert text.startswith("GET /admin/api/2025-07/orders.json: HTTP 400 INVALID_FIELD: No such column")
    assert SECRET not in text and "access_token" not in text


def test_safe_target_drops_query_string() -> None:
    assert safe_target("post", f"https://x.test/services/oauth2/token?assertion={SECRET}") == \
        "POST /services/oauth2/token"


async def test_exhausted_network_retries_raise_without_secrets() -> None:
    sleeps = Sleeps()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused, headers were {request.headers}")

    async with _core(handler, sleeps, max_attempts=3) as core:
        with pytest.raises(TransientError) as info:
            await core.request("GET", f"/orders.json?token={SECRET}")
    assert SECRET not in str(info.value)
    assert len(sleeps.waits) == 2  # 3 attempts, 2 pauses


# ----------------------------------------------------------------- retry behaviour


async def test_transient_then_success_is_retried_with_jittered_backoff() -> None:
    sleeps = Sleeps()
    answers = iter([httpx.ReadTimeout("slow"), httpx.ConnectError("reset"), None])

    def handler(request: httpx.Request) -> httpx.Response:
        exc = next(answers)
        if exc is not None:
            raise exc
        return httpx.Response(200, json={"ok": True})

    async with _core(handler, sleeps, backoff_initial=0.5, backoff_max=30) as core:
        response = await core.request("GET", "/x", label="Contact")
    assert response.json() == {"ok": True}
    assert len(sleeps.waits) == 2 and 0 <= sleeps.waits[0] <= 0.5 and 0 <= sleeps.waits[1] <= 1.0
    assert core.calls == {"Contact": 1}  # only requests that reached the server are counted


async def test_retry_after_is_honoured() -> None:
    sleeps = Sleeps()
    statuses = iter([429, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        headers = {"Retry-After": "7"} if status == 429 else {}
        return httpx.Response(status, headers=headers, json={})

    async with _core(handler, sleeps) as core:
        await core.request("GET", "/x")
    assert sleeps.waits[0] == 7.0
    assert core.total_calls == 3


async def test_permanent_errors_are_not_retried() -> None:
    sleeps = Sleeps()
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return httpx.Response(400, json=[{"errorCode": "MALFORMED_ID", "message": "bad id"}])

    async with _core(handler, sleeps) as core:
        with pytest.raises(PermanentError) as info:
            await core.request("GET", "/x")
    assert len(seen) == 1 and sleeps.waits == [] and info.value.code == "MALFORMED_ID"


async def test_attempts_are_capped() -> None:
    sleeps = Sleeps()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    async with _core(handler, sleeps, max_attempts=4) as core:
        with pytest.raises(TransientError):
            await core.request("GET", "/x")
    assert core.total_calls == 4


async def test_non_idempotent_call_is_not_repeated_after_a_read_timeout() -> None:
    sleeps = Sleeps()
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        raise httpx.ReadTimeout("the server may have processed it")

    async with _core(handler, sleeps) as core:
        with pytest.raises(TransientError):
            await core.request("PUT", "/batches", content=b"a,b\n", idempotent=False)
    assert len(sent) == 1


async def test_non_idempotent_call_is_repeated_when_it_never_connected() -> None:
    sleeps = Sleeps()
    answers = iter([httpx.ConnectError("refused"), None])

    def handler(request: httpx.Request) -> httpx.Response:
        exc = next(answers)
        if exc:
            raise exc
        return httpx.Response(201)

    async with _core(handler, sleeps) as core:
        assert (await core.request("PUT", "/batches", content=b"x", idempotent=False)).status_code == 201


# ----------------------------------------------------------------- refresh once


class FakeAuth:
    def __init__(self) -> None:
        self.generation = 1
        self.refreshes = 0

    async def authorize(self) -> tuple[dict[str, str], int]:
        return {"Authorization": f"Bearer tok{self.generation}"}, self.generation

    async def refresh(self, stale_generation: int) -> None:
        if stale_generation == self.generation:
            self.generation += 1
            self.refreshes += 1


def _session_classifier(response: httpx.Response) -> FerryError | None:
    if response.status_code == 401:
        return SessionExpired("expired", code="INVALID_SESSION_ID")
    return default_classify(response)


async def test_expired_session_is_refreshed_once_and_the_call_repeated() -> None:
    sleeps = Sleeps()
    auth = FakeAuth()

    def handler(request: httpx.Request) -> httpx.Response:
        ok = request.headers["Authorization"] == "Bearer tok2"
        return httpx.Response(200 if ok else 401, json={})

    async with _core(handler, sleeps, classify=_session_classifier) as core:
        await core.request("GET", "/x", auth=auth)
    assert auth.refreshes == 1 and sleeps.waits == []


async def test_a_session_refused_after_refresh_is_an_auth_error() -> None:
    sleeps = Sleeps()
    auth = FakeAuth()

    async with _core(lambda r: httpx.Response(401, json={}), sleeps, classify=_session_classifier) as core:
        with pytest.raises(AuthError):
            await core.request("GET", "/x", auth=auth)
    assert auth.refreshes == 1


async def test_a_session_expiring_again_before_a_later_retry_gets_a_refresh_of_its_own() -> None:
    # The QuickBooks chaos run found it: 401 -> refresh -> the repeat times out (503 here) -> a backoff of
    # seconds -> the session expired again -> 401: not "still refused right after a fresh login".
    sleeps = Sleeps()
    auth = FakeAuth()
    answers = iter([401, 503, 401, 200])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(next(answers), json={})

    async with _core(handler, sleeps, classify=_session_classifier) as core:
        response = await core.request("GET", "/x", auth=auth)
    assert response.status_code == 200 and auth.refreshes == 2
    assert seen == ["Bearer tok1", "Bearer tok2", "Bearer tok2", "Bearer tok3"] and len(sleeps.waits) == 1


async def test_a_generated_body_refused_for_an_expired_session_is_sent_whole_after_the_refresh() -> None:
    # The chaos suite's WooCommerce pair found it: a Bulk API upload (CSV generated while sent) answered
    # 401 INVALID_SESSION_ID failed the whole run, since a generated body could not be sent twice.
    sleeps = Sleeps()
    auth = FakeAuth()
    bodies: list[bytes] = []
    pulled: list[int] = []

    async def csv_rows() -> AsyncIterator[bytes]:
        yield b"Name,Ext__c\n"
        for i in range(3000):  # past the spool's in-memory part: the rest goes to disk
            pulled.append(i)
            yield f"row {i},{i}\n".encode()

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        ok = request.headers["Authorization"] == "Bearer tok2"
        return httpx.Response(201 if ok else 401, json={})

    async with _core(handler, sleeps, classify=_session_classifier) as core:
        response = await core.request("PUT", "/batches", content=csv_rows(), auth=auth, idempotent=False)
    want = b"Name,Ext__c\n" + b"".join(f"row {i},{i}\n".encode() for i in range(3000))
    assert response.status_code == 201 and auth.refreshes == 1
    assert bodies == [want, want] and pulled == list(range(3000))  # the generator itself ran once


async def test_a_generated_body_is_still_never_retried_after_other_faults() -> None:
    sleeps = Sleeps()
    calls: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"a,b\n"

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.read())
        return httpx.Response(503)

    async with _core(handler, sleeps, classify=_session_classifier) as core:
        with pytest.raises(TransientError):
            await core.request("PUT", "/batches", content=body(), auth=FakeAuth(), idempotent=False)
    assert calls == [b"a,b\n"]


def test_ca_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        HttpCore("x", ca_file=tmp_path / "missing-ca.pem")


async def test_retry_log_lines_carry_no_secret() -> None:
    from structlog.testing import capture_logs

    sleeps = Sleeps()
    statuses = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses), json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}])

    with capture_logs() as logs:
        async with _core(handler, sleeps) as core:
            await core.request("GET", f"/x?access_token={SECRET}")
    assert logs and logs[0]["event"] == "http.retry" and logs[0]["target"] == "GET /x"
    assert SECRET not in repr(logs)


async def test_retries_are_summarized_in_one_line_naming_the_host_and_cause() -> None:
    from structlog.testing import capture_logs

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with capture_logs() as logs:
        async with _core(refused, Sleeps()) as core:
            with pytest.raises(TransientError, match=r"^GET /x on .+: connection refused"):
                await core.request("GET", "/x")
    summaries = [e for e in logs if e["event"] == "http.retried"]
    assert len(summaries) == 1 and summaries[0]["log_level"] == "warning", logs
    assert "retried 4 time(s) after connection refused" in summaries[0]["summary"]
    assert all(e["log_level"] == "debug" for e in logs if e["event"] == "http.retry")

    statuses = iter([503, 503, 200])

    def flaky(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses), json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}])

    with capture_logs() as logs:
        async with _core(flaky, Sleeps()) as core:
            await core.request("GET", "/x")
    [summary] = [e for e in logs if e["event"] == "http.retried"]
    assert summary["log_level"] == "info" and "then it succeeded" in summary["summary"]


def test_the_quiet_log_line_of_a_summary_is_its_sentence() -> None:
    from ferry.cli.logging import render_quiet

    assert render_quiet(None, "warning", {"event": "http.retried", "level": "warning", "summary": "x: y"}) == (
        "warning: x: y"
    )
    assert "event='other'" in render_quiet(None, "warning", {"event": "other", "level": "warning"})
