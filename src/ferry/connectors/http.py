"""The HTTP core every connector shares: one pooled ``httpx.AsyncClient``, timeouts, retries, classification.

What it guarantees:

* Every call has a connect/read/write/pool timeout and verifies TLS (a CA file may be given, never "off").
* Failures become ferry errors by *type*: network faults and 429/500/502/503/504 are ``TransientError``,
  other 4xx are ``PermanentError`` (401 ``AuthError``). A connector plugs in its own classifier for what
  only it knows (Salesforce's ``UNABLE_TO_LOCK_ROW``, its daily budget, its expired session).
* Only transient errors are retried, with exponential backoff and full jitter, a capped number of
  attempts, and ``Retry-After`` honoured when the error carries one.
* An expired session is refreshed once (through the connector's ``Authenticator``) and the call repeated,
  a generated (streamed) body included: it is spooled as it is sent, so the repeat sends it whole.
* Error messages and log lines are built from method, path (never the query string, which may carry
  tokens), status and the remote system's own error code and message. Headers never appear.
* Calls are counted per label (for example the target object) so the engine can report API usage; every
  attempt is also a Prometheus sample (system, endpoint family = the label, status class) and, when tracing is
  on, a span (ferry/observe).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, Protocol

import httpx
import orjson
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ferry.connectors.retry import parse_retry_after, wait_retry_after_or_jitter
from ferry.errors import AuthError, ConfigError, FerryError, PermanentError, TransientError
from ferry.observe import metrics, tracing

log = structlog.get_logger("ferry.connectors.http")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# A request that may have reached the server is only repeated when repeating it is harmless. For the
# others, retry only when the server certainly did not act: it refused the connection or said "not now".
SAFE_FOR_ANY_METHOD_STATUSES = frozenset({429, 503})
_MAX_DETAIL = 300

Classifier = Callable[[httpx.Response], FerryError | None]


class SessionExpired(TransientError):
    """The bearer token was refused as expired or invalid; the core refreshes it once and repeats the call."""


class Authenticator(Protocol):
    """How a connector lends the core its credentials without the core ever seeing a secret in a message."""

    async def authorize(self) -> tuple[dict[str, str], int]:
        """The auth headers for the next request and the token generation they belong to."""
        ...

    async def refresh(self, stale_generation: int) -> None:
        """Get a new token unless another caller already replaced ``stale_generation``."""
        ...


# --------------------------------------------------------------------------- messages


def safe_target(method: str, url: httpx.URL | str) -> str:
    """``"GET /admin/api/2025-07/orders.json"``: method and path only; query strings may carry secrets."""
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    return f"{method.upper()} {parsed.path}"


def error_detail(response: httpx.Response) -> tuple[str | None, str | None]:
    """The remote system's own (code, message) from the usual error body shapes, or (None, None).

    Salesforce REST: ``[{"errorCode","message"}]``; Collections: ``statusCode``; OAuth:
    ``{"error","error_description"}``; Shopify: ``{"errors": "..." | {field: [...]}}``.
    """
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None, None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        code = first.get("errorCode") or first.get("statusCode")
        return _str_or_none(code), _clip(first.get("message"))
    if isinstance(body, dict):
        if "error" in body:
            return _str_or_none(body.get("error")), _clip(body.get("error_description"))
        if "errors" in body:
            return None, _clip(body["errors"])
    return None, None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _clip(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def describe_failure(response: httpx.Response, code: str | None = None, message: str | None = None) -> str:
    """``"PATCH /services/.../Contact/Ext__c: HTTP 400 INVALID_FIELD: No such column 'x'"``."""
    if code is None and message is None:
        code, message = error_detail(response)
    text = f"{safe_target(response.request.method, response.request.url)}: HTTP {response.status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    return text


# --------------------------------------------------------------------------- classification


def default_classify(response: httpx.Response) -> FerryError | None:
    """None for success; otherwise the ferry error the status means."""
    status = response.status_code
    if status < 400:
        return None
    code, message = error_detail(response)
    text = describe_failure(response, code, message)
    if status in TRANSIENT_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return TransientError(text, retry_after=retry_after, code=code or f"HTTP_{status}")
    if status == 401:
        return AuthError(text + " (check the access token / credentials)", code=code or "HTTP_401")
    return PermanentError(text, code=code or f"HTTP_{status}")


def _host_of(exc: httpx.TransportError, url: httpx.URL | str) -> str:
    """``host:port`` the call went to: from the request httpx built (the URL may be relative to a base URL)."""
    try:
        parsed = exc.request.url
    except RuntimeError:  # no request attached (a hand-made error)
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    if not parsed.host:
        return "?"
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_TIMEOUTS = {
    httpx.ConnectTimeout: "timed out connecting",
    httpx.ReadTimeout: "timed out waiting for the answer",
    httpx.WriteTimeout: "timed out sending the request",
    httpx.PoolTimeout: "timed out waiting for a free connection of the pool",
}


def network_cause(exc: httpx.TransportError) -> str:
    """What went wrong on the wire, in words: refused, DNS, TLS, timeout, reset (from the exception chain)."""
    for kind, words in _TIMEOUTS.items():
        if isinstance(exc, kind):
            return words
    text = " ".join(str(e) for e in _causes(exc)).lower()
    chain = list(_causes(exc))
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
        hint in text for hint in ("name or service not known", "nodename nor servname", "name resolution",
                                  "getaddrinfo", "no address associated")
    ):
        return "DNS lookup failed (no such host?)"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in text or "tls" in text:
        return f"TLS handshake failed ({_clip(str(exc)) or type(exc).__name__})"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return "connection refused (nothing listening on that port?)"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in chain) or "reset" in text:
        return "connection reset by the server"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection without an answer"
    if any(isinstance(e, TimeoutError) for e in chain):
        return "timed out"
    return f"network error {type(exc).__name__}" + (f" ({_clip(str(exc))})" if str(exc) else "")


def classify_transport_error(exc: httpx.TransportError, method: str, url: httpx.URL | str) -> FerryError:
    """Network failures are transient, except those retrying cannot fix (bad TLS trust, our own bugs). The
    message names the host and the cause: ``GET /x on shop.test:443: connection refused``."""
    target = f"{safe_target(method, url)} on {_host_of(exc, url)}"
    kind = type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return ConfigError(f"{target}: TLS certificate not trusted; set ca_file to the server's CA bundle")
    if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
        return PermanentError(f"{target}: {kind}", code="HTTP_CLIENT")
    return TransientError(f"{target}: {network_cause(exc)}", code="NETWORK")


def _certainly_not_processed(exc: FerryError, transport: httpx.TransportError | None, status: int | None) -> bool:
    if transport is not None:
        return isinstance(transport, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return status in SAFE_FOR_ANY_METHOD_STATUSES or isinstance(exc, SessionExpired)


def _cause_text(err: BaseException | None) -> str:
    """An error's words without the call's target (the summary names the target once)."""
    text = str(err)
    head, sep, tail = text.partition(": ")
    return tail if sep and head.split(" ")[0].isupper() else text


class _NotRetryable(Exception):
    """Carries a transient error that must not be repeated (non-idempotent call possibly processed)."""

    def __init__(self, error: FerryError) -> None:
        super().__init__(str(error))
        self.error = error


# --------------------------------------------------------------------------- TLS


def ssl_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    """Verification is always on; a CA file adds trust for a private CA (sandboxes, corporate proxies)."""
    if ca_file is None:
        return True
    path = Path(ca_file)
    if not path.is_file():
        raise ConfigError(f"ca_file {path} does not exist")
    return ssl.create_default_context(cafile=str(path))


# --------------------------------------------------------------------------- the core


BACKOFF_INITIAL_ENV = "FERRY_HTTP_BACKOFF_INITIAL"


def default_backoff_initial() -> float:
    """0.5 s, or ``$FERRY_HTTP_BACKOFF_INITIAL`` (a test hook: the CLI tests of a refused host make every attempt
    as a user would, without sleeping ~4 s of backoff per run). A server's ``Retry-After`` is still honoured."""
    raw = os.environ.get(BACKOFF_INITIAL_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else 0.5
    except ValueError:
        raise ConfigError(f"{BACKOFF_INITIAL_ENV}={raw!r}: not a number of seconds") from None


class HttpCore:
    """One connection pool, one retry policy, one call counter per connector instance."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str = "",
        timeout_seconds: float = 30.0,
        ca_file: Path | None = None,
        max_attempts: int = 5,
        backoff_initial: float | None = None,
        backoff_max: float = 30.0,
        max_connections: int = 20,
        classify: Classifier = default_classify,
        headers: Mapping[str, str] | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
        before_request: Callable[[], Awaitable[None]] | None = None,
        after_request: Callable[[httpx.Response | None], None] | None = None,
        before_counted_call: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.max_attempts = max(1, max_attempts)
        initial = default_backoff_initial() if backoff_initial is None else backoff_initial
        self._wait = wait_retry_after_or_jitter(initial, backoff_max)
        self._classify = classify
        self._on_response = on_response
        self._before_request = before_request
        self._after_request = after_request
        # Runs before every attempt that counts against the remote API budget (label given); raising
        # here (a budget guard) stops the call before anything is sent.
        self._before_counted_call = before_counted_call
        # Tests pass a fake sleep to check the waits without waiting them.
        self._sleep: Callable[[float], Awaitable[None]] = sleep or asyncio.sleep
        timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 15.0), pool=timeout_seconds)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=limits,
            verify=ssl_context(ca_file),
            headers=dict(headers or {}),
            transport=transport,
            follow_redirects=False,
        )
        self.calls: Counter[str] = Counter()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> HttpCore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        label: str = "other",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | AsyncIterable[bytes] | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Authenticator | None = None,
        classify: Classifier | None = None,
        idempotent: bool = True,
        count: bool = True,
        stream: bool = False,
        records: int | None = None,
    ) -> httpx.Response:
        """Send with retries; return the successful response or raise the classified ferry error.

        ``records``: how many records the call carries (a write batch), for its trace span only.

        ``content`` may be an async iterable of bytes (an upload generated while it is sent); such a
        body cannot be replayed, so that call is never retried. With ``stream=True`` the body of a
        successful response is not read: use ``stream()``, which also closes it.
        """
        body = orjson.dumps(json) if json is not None else content
        send_headers = dict(headers or {})
        if json is not None:
            send_headers.setdefault("Content-Type", "application/json")
        call = _Call(
            self,
            method,
            url,
            label,
            params,
            body,
            data,
            send_headers,
            auth,
            classify or self._classify,
            idempotent,
            count,
            stream,
            records,
        )
        retries: list[str] = []  # the error of each attempt that was retried
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, FerryError) and e.transient),
            before_sleep=self._log_retry(method, url, retries),
            reraise=True,
            sleep=self._sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await call.once()
                    self._summarize_retries(method, url, retries, None)
                    return response
        except _NotRetryable as wrapped:
            self._summarize_retries(method, url, retries, wrapped.error)
            raise wrapped.error from None
        except FerryError as exc:
            self._summarize_retries(method, url, retries, exc)
            raise
        finally:
            if call.spool is not None:
                call.spool.close()
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    @asynccontextmanager
    async def stream(self, method: str, url: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """``async with core.stream("GET", url) as r: async for chunk in r.aiter_text(): ...``.

        Retries and classification apply until a successful status arrives; the body is then read
        by the caller, piece by piece (bounded memory), and the response is always closed.
        """
        response = await self.request(method, url, stream=True, **kwargs)
        try:
            yield response
        finally:
            await response.aclose()

    def _summarize_retries(self, method: str, url: str, retries: list[str], error: FerryError | None) -> None:
        """One line for a call that needed retries, however many (each retry is an info line: --verbose)."""
        if not retries:
            return
        causes = Counter(retries)
        why = "; ".join(f"{text} (x{n})" if n > 1 else text for text, n in causes.most_common(2))
        if error is None:
            outcome = "then it succeeded"
        else:  # the last cause is already in the line: say only what differs
            outcome = "gave up" if _cause_text(error) == retries[-1] else f"gave up: {_cause_text(error)}"
        # Gave up: a warning (the default level shows it); recovered: info, seen with --verbose.
        (log.warning if error is not None else log.info)(
            "http.retried",
            summary=f"{self.name}: {safe_target(method, url)} on {self._host(url)} retried {len(retries)} time(s) "
            f"after {why}; {outcome}",
            connector=self.name,
            target=safe_target(method, url),
            retries=len(retries),
            succeeded=error is None,
        )

    def _host(self, url: str) -> str:
        """``host:port`` a call goes to (the URL may be relative to the client's base URL); no user or password."""
        parsed = httpx.URL(url)
        if not parsed.host:
            parsed = self.client.base_url
        if not parsed.host:
            return "?"
        return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host

    def _log_retry(self, method: str, url: str, retries: list[str]) -> Callable[[RetryCallState], None]:
        target = safe_target(method, url)

        def before_sleep(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            retries.append(_cause_text(err))
            metrics.api_retry(self.name, getattr(err, "code", None) or type(err).__name__)
            # Each attempt only at debug (-vv): the default level shows one summary line per call (above).
            log.debug(
                "http.retry",
                connector=self.name,
                target=target,
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 3),
                error=str(err),
                code=getattr(err, "code", None),
            )

        return before_sleep


def _describe_call(
    span: tracing.Span, system: str, label: str, request: httpx.Request, records: int | None
) -> None:
    """The attempt's span attributes: where it went, never the query string or a header (secrets live there)."""
    span.set_attribute("ferry.system", system)
    span.set_attribute("ferry.endpoint", label)
    span.set_attribute("http.request.method", request.method)
    span.set_attribute("url.path", request.url.path)
    span.set_attribute("server.address", request.url.host)
    if request.url.port:
        span.set_attribute("server.port", request.url.port)
    if records is not None:
        span.set_attribute("ferry.records", records)


class _SpooledBody:
    """A generated request body kept as it is sent, so that it can be sent again from its first byte.

    The source iterator is pulled once, in step with the sending; every chunk is written to a spooled
    temporary file (memory up to ``in_memory`` bytes, then an unlinked file on disk) before it is handed on,
    so an attempt cut short loses nothing. A later attempt sends the spooled bytes, then pulls the rest.
    """

    def __init__(self, source: AsyncIterable[bytes], in_memory: int = 1 << 20) -> None:
        self._source = aiter(source)
        self._spool = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115 - close(), once sent

    async def attempt(self) -> AsyncIterator[bytes]:
        size = self._spool.seek(0, 2)
        self._spool.seek(0)
        while self._spool.tell() < size:
            yield self._spool.read(min(1 << 16, size - self._spool.tell()))
        async for chunk in self._source:
            self._spool.seek(0, 2)
            self._spool.write(chunk)
            yield chunk

    def close(self) -> None:
        self._spool.close()


class _Call:
    """One logical call: its attempts share the refresh-once budget."""

    def __init__(
        self,
        core: HttpCore,
        method: str,
        url: str,
        label: str,
        params: Mapping[str, Any] | None,
        content: bytes | str | AsyncIterable[bytes] | None,
        data: Mapping[str, str] | None,
        headers: dict[str, str],
        auth: Authenticator | None,
        classify: Classifier,
        idempotent: bool,
        count: bool,
        stream: bool = False,
        records: int | None = None,
    ) -> None:
        self.core = core
        self.method = method.upper()
        self.url = url
        self.label = label
        self.params = params
        self.content = content
        self.data = data
        self.headers = headers
        self.auth = auth
        self.classify = classify
        self.idempotent = idempotent
        self.count = count
        self.stream = stream
        self.records = records
        # A generated body is consumed by the first attempt: it is never retried. One exception: a session
        # refused (401) before the server acted on anything; the refreshed call sends the spooled body again.
        self.replayable = content is None or isinstance(content, bytes | str)
        self.spool = _SpooledBody(content) if auth is not None and isinstance(content, AsyncIterable) else None

    async def once(self) -> httpx.Response:
        """One attempt, plus at most one immediate repeat after a session refresh.

        "Still refused" means refused *right after* the refresh: a 401 on a later attempt (the retry of a 503
        or a timeout, seconds later: the session may well have expired again meanwhile) gets its own refresh."""
        refreshed = False
        while True:
            response, generation = await self._send()
            if self.stream and response.status_code >= 300:
                await response.aread()  # an error body is small; the classifier reads it
            error = self.classify(response)
            if error is None:
                return response
            if self.stream:
                await response.aclose()
            if isinstance(error, SessionExpired) and self.auth is not None and (self.replayable or self.spool):
                if refreshed:
                    raise AuthError(f"{error} (still refused right after a fresh login)", code=error.code)
                # Marked only once the refresh worked: a token endpoint outage is retried like any other fault.
                await self.auth.refresh(generation)
                refreshed = True
                continue
            self._raise(error, None, response.status_code)

    async def _send(self) -> tuple[httpx.Response, int]:
        # Before before_request: a refusal here must not leave a throttle slot taken.
        if self.count and self.core._before_counted_call is not None:
            self.core._before_counted_call(self.label)
        if self.core._before_request is not None:
            await self.core._before_request()
        headers = dict(self.headers)
        generation = 0
        if self.auth is not None:
            auth_headers, generation = await self.auth.authorize()
            headers.update(auth_headers)
        response: httpx.Response | None = None
        started = time.perf_counter()
        with tracing.span(f"{self.core.name} {self.method} {self.label}", kind=tracing.SpanKind.CLIENT) as span:
            try:
                request = self.core.client.build_request(
                    self.method,
                    self.url,
                    params=self.params,
                    content=self.spool.attempt() if self.spool is not None else self.content,
                    data=self.data,
                    headers=headers,
                )
                if span.is_recording():
                    _describe_call(span, self.core.name, self.label, request, self.records)
                response = await self.core.client.send(request, stream=self.stream)
            except httpx.TransportError as exc:
                span.set_attribute("error.type", type(exc).__name__)
                self._raise(classify_transport_error(exc, self.method, self.url), exc, None)
            finally:
                # Paired with before_request even when the call failed (a throttle tracks calls in flight).
                if self.core._after_request is not None:
                    self.core._after_request(response)
                metrics.api_call(self.core.name, self.label, response.status_code if response is not None else None,
                                 time.perf_counter() - started)
            span.set_attribute("http.response.status_code", response.status_code)
        if self.count:
            self.core.calls[self.label] += 1
        if self.core._on_response is not None:
            self.core._on_response(response)
        return response, generation

    def _raise(self, error: FerryError, transport: httpx.TransportError | None, status: int | None) -> NoReturn:
        if error.transient and not self.replayable:
            raise _NotRetryable(error) from None
        if error.transient and not self.idempotent and not _certainly_not_processed(error, transport, status):
            raise _NotRetryable(error) from None
        raise error from None
