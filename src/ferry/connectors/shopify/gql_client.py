"""Shopify GraphQL Admin API over the shared HTTP core: one POST endpoint, paced by the query-cost bucket.

Every answer carries ``extensions.cost`` (requested and actual cost, and ``throttleStatus``: the points the
bucket holds now and its restore rate). The client keeps that picture and, before sending a query, waits
until the bucket has refilled enough for the query's expected cost, so a read slows itself down instead of
being answered ``THROTTLED`` (which it still survives: the body's code is classified transient, with the
wait the bucket needs as its Retry-After).

The bulk result file lives on storage outside the store (a signed URL); it is fetched by a second HTTP core
that carries no access token, so the token never travels to another host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ferry.connectors.http import HttpCore, default_classify, describe_failure
from ferry.connectors.shopify.config import ShopifyConfig
from ferry.errors import AuthError, FerryError, PermanentError, TransientError
from ferry.observe import metrics

# Codes the body of a 200 answer can carry (reference §1.5): worth another try, or not.
_TRANSIENT_CODES = frozenset({"THROTTLED", "INTERNAL_SERVER_ERROR"})
_AUTH_CODES = frozenset({"ACCESS_DENIED"})


@dataclass(slots=True)
class CostPacer:
    """The client's view of the store's points bucket, from the last ``throttleStatus`` it reported."""

    available: float | None = None  # unknown until the first answer
    maximum: float | None = None
    restore_rate: float = 50.0  # the lowest plan's rate until the store says otherwise
    at: float = 0.0
    waited_seconds: float = 0.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def observe(self, cost: Any) -> None:
        status = cost.get("throttleStatus") if isinstance(cost, dict) else None
        if not isinstance(status, dict):
            return
        try:
            self.available = float(status["currentlyAvailable"])
            self.maximum = float(status["maximumAvailable"])
            self.restore_rate = max(float(status["restoreRate"]), 1e-6)
        except (KeyError, TypeError, ValueError):
            return
        self.at = self.clock()
        metrics.budget_remaining("shopify", "graphql_points", self.available, limit=self.maximum)

    def level(self) -> float | None:
        if self.available is None:
            return None
        refilled = self.available + (self.clock() - self.at) * self.restore_rate
        return refilled if self.maximum is None else min(self.maximum, refilled)

    def wait_for(self, cost: int) -> float:
        """Seconds until the bucket holds ``cost`` points (0 when it does, or when nothing is known yet)."""
        level = self.level()
        # A margin of a quarter second of restore: our clock reads the status a little after the store did.
        need = cost + self.restore_rate * 0.25
        if level is None or level >= need or (self.maximum is not None and need > self.maximum >= cost > level):
            return 0.0 if level is None or level >= cost else (cost - level) / self.restore_rate
        return (need - level) / self.restore_rate

    async def acquire(self, cost: int) -> None:
        pause = self.wait_for(cost)
        if pause > 0:
            self.waited_seconds += pause
            await self.sleep(pause)
        if self.available is not None:
            # Taken now (the store charges it on arrival); the answer's status corrects the estimate.
            self.available, self.at = (self.level() or 0.0) - cost, self.clock()


@dataclass(slots=True)
class GraphQLAnswer:
    data: dict[str, Any]
    server_time: str | None  # the store's clock (Date header) when it answered


class ShopifyGraphQL:
    def __init__(
        self,
        config: ShopifyConfig,
        *,
        max_attempts: int = 6,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: CostPacer | None = None,
    ) -> None:
        self.config = config
        self.pacer = pacer or CostPacer()
        self.path = f"/admin/api/{config.api_version}/graphql.json"
        self.throttled_answers = 0  # THROTTLED answers seen (pacing should keep this at 0)
        self.http = HttpCore(
            "shopify",
            base_url=config.url,
            timeout_seconds=config.timeout_seconds,
            ca_file=config.ca_file,
            max_attempts=max_attempts,
            classify=self._classify,
            headers={
                "X-Shopify-Access-Token": config.access_token.get_secret_value(),
                "Accept": "application/json",
            },
            transport=transport,
        )
        # No token here: a bulk result URL is pre-signed storage, possibly on another host.
        self.files = HttpCore(
            "shopify-bulk-file",
            timeout_seconds=max(config.timeout_seconds, 300.0),
            ca_file=config.ca_file,
            max_attempts=max_attempts,
            transport=transport,
        )

    @property
    def api_calls(self) -> int:
        return self.http.total_calls + self.files.total_calls

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.files.aclose()

    async def query(
        self, document: str, variables: dict[str, Any] | None = None, *, cost: int = 1, label: str = "graphql"
    ) -> GraphQLAnswer:
        """``data`` of one query, after waiting for ``cost`` points (the query's requested cost)."""
        await self.pacer.acquire(cost)
        response = await self.http.request(
            "POST", self.path, json={"query": document, "variables": variables or {}}, label=label
        )
        body = _json(response)
        data = body.get("data")
        if not isinstance(data, dict):
            raise PermanentError(f"POST {self.path}: no data in the answer")
        return GraphQLAnswer(data, response.headers.get("Date"))

    async def lines(self, url: str) -> AsyncIterator[bytes]:
        """The lines of a bulk result file, as they arrive (never the whole file in memory)."""
        async with self.files.stream("GET", url, label="bulk_file") as response:
            async for line in response.aiter_lines():
                if line:
                    yield line.encode()

    def _classify(self, response: httpx.Response) -> FerryError | None:
        """HTTP status first; then the body of a 200, whose ``errors`` say THROTTLED and the like."""
        failure = default_classify(response)
        if failure is not None:
            return failure
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return PermanentError(describe_failure(response, None, "answer is not JSON"))
        cost = body.get("extensions", {}).get("cost") if isinstance(body, dict) else None
        self.pacer.observe(cost)
        errors = body.get("errors") if isinstance(body, dict) else None
        if not errors:
            return None
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        code = str((first.get("extensions") or {}).get("code") or "GRAPHQL_ERROR")
        message = str(first.get("message") or "GraphQL error")
        if code == "THROTTLED":
            self.throttled_answers += 1
            requested = (cost or {}).get("requestedQueryCost") if isinstance(cost, dict) else None
            wait = self.pacer.wait_for(int(requested or 1)) or 1.0
            return TransientError(f"GraphQL THROTTLED: {message}", retry_after=wait, code=code)
        if code in _TRANSIENT_CODES:
            return TransientError(f"GraphQL {code}: {message}", code=code)
        if code in _AUTH_CODES:
            return AuthError(f"GraphQL {code}: {message} (check the app's access scopes)", code=code)
        return PermanentError(f"GraphQL {code}: {message}", code=code)


def _json(response: httpx.Response) -> dict[str, Any]:
    body = orjson.loads(response.content)
    if not isinstance(body, dict):
        raise PermanentError(f"POST {response.request.url.path}: answer is not a JSON object")
    return body
