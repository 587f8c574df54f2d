"""Fixtures: a QuickBooks sandbox (an empty company but for its accounts) over HTTPS in a thread, and sinks
pointed at it by URL and CA file."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.connectors.quickbooks import QuickBooksConfig, QuickBooksSink
from ferry.core.contracts import SinkContext
from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.serve import RunningSandbox


@dataclass
class Books:
    sandbox: QuickBooksSandbox
    running: RunningSandbox
    tmp: Path

    @property
    def url(self) -> str:
        return self.running.url

    def config(self, token_file: Path | None = None, **extra: Any) -> QuickBooksConfig:
        return QuickBooksConfig.model_validate({
            "system": "quickbooks", "client_id": self.sandbox.client_id, "client_secret": self.sandbox.client_secret,
            "realm_id": self.sandbox.realm_id, "refresh_token": self.sandbox.refresh_token,
            "token_file": str(token_file or self.tmp / "qbo-token"), "api_url": self.url,
            "token_url": f"{self.url}/oauth2/v1/tokens/bearer", "ca_file": str(self.running.ca_file), **extra,
        })

    def sink(self, pipeline: str = "test", **extra: Any) -> QuickBooksSink:
        return QuickBooksSink(self.config(**extra), SinkContext(pipeline))

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        verify = ssl.create_default_context(cafile=str(self.running.ca_file))
        response = httpx.request(method, f"{self.url}/__sandbox/{path}", verify=verify, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def records(self, entity: str) -> list[dict[str, Any]]:
        return list(self.admin("GET", f"records/{entity}"))


@pytest.fixture(autouse=True)
def _short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lost answers (commit_then_reset) are retried by the HTTP core: every attempt is made, without sleeping its
    0.5 s-based backoff (~7 s a test); Retry-After (the rate limit tests) is honoured as ever."""
    monkeypatch.setenv("FERRY_HTTP_BACKOFF_INITIAL", "0.01")


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Books]:
    sandbox = QuickBooksSandbox(tmp_path / "sb", seed=3, customers=0, products=0, orders=0)
    running = sandbox.start()
    try:
        yield Books(sandbox, running, tmp_path)
    finally:
        running.stop()
