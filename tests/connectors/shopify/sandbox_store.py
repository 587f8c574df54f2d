"""A Shopify sandbox started in a thread for the source tests, and the connector config that reads it."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx

from ferry.connectors.shopify import ShopifyConfig, ShopifySource
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox


@dataclasses.dataclass
class SandboxStore:
    sandbox: Any
    running: RunningSandbox
    api: ClassVar[str] = "graphql"  # the source under test (the default); tests pass api="rest" to compare

    @classmethod
    def start(cls, path: Path, **counts: Any) -> Self:
        """A generated store (``customers``, ``products``, ``orders``...) served over HTTPS from a thread."""
        sandbox = ShopifySandbox(path, **counts)
        return cls(sandbox, start_in_thread(sandbox.app, path))

    def config(self, **overrides: Any) -> ShopifyConfig:
        creds = self.sandbox.credentials(self.running.url)
        base = {"system": "shopify", "url": creds["url"], "access_token": creds["access_token"],
                "ca_file": str(self.running.ca_file), "api": self.api}
        return ShopifyConfig.model_validate(base | overrides)

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.running.ca_file))

    def graphql_settings(self, body: dict[str, Any]) -> None:
        """The sandbox's GraphQL knobs (plan, points bucket, bulk pace): ``PATCH /__sandbox/graphql``."""
        httpx.patch(f"{self.config().url}/__sandbox/graphql", json=body, verify=self.tls()).raise_for_status()


async def read_all(
    source: ShopifySource, stream: str, state: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A stream read to its end: every record, and the state each page carried."""
    records: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    async for page in source.read(stream, state):
        records += page.records
        states.append(page.state)
    return records, states
