"""Salesforce REST plumbing over the shared HTTP core: token, instance URL, limits header, call counts."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from ferry.connectors.http import Classifier, HttpCore
from ferry.connectors.salesforce.auth import TokenManager
from ferry.connectors.salesforce.budget import BudgetGuard, BudgetStop
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.errors import classify
from ferry.connectors.salesforce.gate import CallGate
from ferry.errors import BudgetExhausted, PermanentError
from ferry.observe import metrics

_API_USAGE = re.compile(r"(?:^|[^-])api-usage=(\d+)/(\d+)")
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_api_usage(header: str | None) -> tuple[int, int] | None:
    """``"api-usage=18/15000; per-app-api-usage=..."`` → ``(18, 15000)``."""
    if not header:
        return None
    match = _API_USAGE.search(header)
    return (int(match.group(1)), int(match.group(2))) if match else None


def api_name(name: str) -> str:
    """An sObject or field API name, checked before it goes into a URL path (no path tricks)."""
    if not _API_NAME.match(name):
        raise PermanentError(f"not a Salesforce API name: {name!r}", code="INVALID_API_NAME")
    return name


_RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def record_id(value: str) -> str:
    """A Salesforce record or job id (15 or 18 characters), checked before it goes into a URL path."""
    if not _RECORD_ID.match(value):
        raise PermanentError(f"not a Salesforce id: {value!r}", code="INVALID_ID")
    return value


class SalesforceClient:
    def __init__(
        self,
        config: SalesforceConfig,
        *,
        max_attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        budget: BudgetGuard | None = None,
    ) -> None:
        self.config = config
        self.api_usage: tuple[int, int] | None = None
        # A pipeline's guard is backed by the state DB's ledger (its share holds across runs); without
        # one, the guard counts only this client's calls.
        self.budget = budget or BudgetGuard(config.api_budget)
        self.gate = CallGate(config.max_concurrency, config.long_running_limit)
        self.http = HttpCore(
            "salesforce",
            timeout_seconds=config.timeout_seconds,
            ca_file=config.ca_file,
            max_attempts=max_attempts,
            # Room for every in-flight collection chunk plus the odd describe or poll.
            max_connections=config.max_concurrency * 2 + 2,
            classify=classify,
            # client=ferry shows up in CDC changeOrigin: it is how our own writes are recognised later.
            headers={"Accept": "application/json", "Sforce-Call-Options": "client=ferry"},
            on_response=self._observe,
            before_counted_call=self._spend,
            sleep=sleep,
            transport=transport,
        )
        self.auth = TokenManager(config, self.http)

    def _observe(self, response: httpx.Response) -> None:
        usage = parse_api_usage(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            self.api_usage = usage
            self.budget.observe(usage)
            metrics.budget_remaining("salesforce", "org_daily", usage[1] - usage[0], limit=usage[1])

    def _spend(self, _label: str) -> None:
        self.budget.spend()

    def data_path(self, suffix: str) -> str:
        return f"/services/data/v{self.config.api_version}{suffix}"

    @property
    def api_calls(self) -> dict[str, int]:
        return dict(self.http.calls)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        label: str,
        json: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        classify: Classifier | None = None,
        records: int | None = None,
    ) -> httpx.Response:
        """A call to the org; ``path`` starts with /services/... and is joined to the session's instance URL.
        ``records``: how many records a write carries (its trace span shows it)."""
        session = await self.auth.session()
        # The gate wraps the whole call (retries included) but not the token endpoint, which the
        # core reaches from inside it: a login never waits for a slot its own caller holds.
        await self.gate.acquire()
        response: httpx.Response | None = None
        try:
            response = await self.http.request(
                method,
                session.instance_url + path,
                label=label,
                json=json,
                content=content,
                params=params,
                headers=headers,
                auth=self.auth,
                idempotent=idempotent,
                classify=classify,
                records=records,
            )
            return response
        except BudgetStop:
            raise
        except BudgetExhausted as exc:  # the org itself refused: no later call of this run is sent
            raise self.budget.org_refused(exc) from None
        finally:
            self.gate.release(response)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        label: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A response whose body is read piece by piece (Bulk results), holding a gate slot meanwhile."""
        session = await self.auth.session()
        await self.gate.acquire()
        try:
            async with self.http.stream(
                method, session.instance_url + path, label=label, headers=headers, params=params, auth=self.auth
            ) as response:
                yield response
        except BudgetStop:
            raise
        except BudgetExhausted as exc:
            raise self.budget.org_refused(exc) from None
        finally:
            self.gate.release(None)

    async def json(self, method: str, path: str, *, label: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, label=label, **kwargs)
        if not response.content:
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PermanentError(f"{method} {httpx.URL(path).path}: response is not JSON") from None
