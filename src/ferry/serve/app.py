"""The HTTP side of ``ferry serve`` (FastAPI): ``GET /healthz`` and ``POST /webhooks/{pipeline}/{system}``.

``GET /metrics`` is the Prometheus registry (``ferry.observe.metrics``). Other parts mount their own routes with
``build_app(..., routers=[...])`` or ``app.include_router`` (the dashboard at ``/``). While the process stops,
every request is answered 503 (the sender retries later; WooCommerce counts a failure, which ``register``
heals on the next start).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, Response

from ferry.observe import metrics
from ferry.serve.inbox import DEFAULT_MAX_BODY_BYTES, BodyTooLarge, Inbox, read_capped


class ServeState:
    """What the routes need: the inboxes by (pipeline, system), and whether the process is stopping."""

    def __init__(self, inboxes: Mapping[tuple[str, str], Inbox], max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.inboxes = dict(inboxes)
        self.max_body_bytes = max_body_bytes
        self.draining = False
        self.health: dict[str, Any] = {}  # extra figures for /healthz (registration, pipelines)
        self.probes: dict[str, Callable[[], Any]] = {}  # figures read when /healthz is asked (processors)
        # What is not working now, read when /healthz is asked: each check lists its problems (dicts with a
        # "reason"); any problem makes the status "degraded" (webhooks are still taken in and made durable).
        self.checks: dict[str, Callable[[], list[dict[str, Any]]]] = {}

    def problems(self) -> list[dict[str, Any]]:
        return [{"check": name, **problem} for name, check in self.checks.items() for problem in check()]


def build_app(state: ServeState, routers: Sequence[APIRouter] = ()) -> FastAPI:
    app = FastAPI(title="ferry serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.middleware("http")
    async def refuse_while_draining(request: Request, call_next: Any) -> Response:
        if state.draining:
            return JSONResponse({"error": "ferry serve is stopping; try again"}, status_code=503,
                                headers={"Retry-After": "5", "Connection": "close"})
        response: Response = await call_next(request)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        problems = state.problems()
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "webhooks": {f"{p}/{s}": dict(i.counts) for (p, s), i in state.inboxes.items()},
            **state.health,
            **{name: probe() for name, probe in state.probes.items()},
        }

    @app.post("/webhooks/{pipeline}/{system}")
    async def webhook(pipeline: str, system: str, request: Request) -> Response:
        arrived = time.monotonic()
        response = await _webhook(pipeline, system, request)
        if (pipeline, system) in state.inboxes:
            metrics.webhook_acknowledged(system, time.monotonic() - arrived, pipeline=pipeline,
                                         accepted=response.status_code < 300)
        return response

    async def _webhook(pipeline: str, system: str, request: Request) -> Response:
        inbox = state.inboxes.get((pipeline, system))
        if inbox is None:
            return JSONResponse({"error": f"no webhooks for {pipeline}/{system} here"}, status_code=404)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > state.max_body_bytes:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            body = await read_capped(request.stream(), state.max_body_bytes)
        except BodyTooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        result = await inbox.accept(headers, body)
        if result.status >= 400:
            return JSONResponse({"error": result.detail}, status_code=result.status)
        return JSONResponse({"outcome": result.outcome}, status_code=result.status)

    app.mount("/metrics", metrics.asgi_app())  # type: ignore[arg-type]  # Prometheus scrapes (docs/observability.md)
    for router in routers:
        app.include_router(router)
    return app
