"""The ``source:`` block of a pipeline that reads a Shopify store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

ShopifyStream = Literal["customers", "products", "orders"]
ALL_STREAMS: tuple[ShopifyStream, ...] = ("customers", "products", "orders")


class ShopifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["shopify"]
    url: str = Field(description="Store base URL, e.g. https://acme.myshopify.com (env SHOPIFY_URL)")
    access_token: SecretStr = Field(description="Admin API access token, shpat_... (env SHOPIFY_ACCESS_TOKEN)")
    # A supported version (Shopify supports each ~12 months; an older one falls forward to the oldest supported).
    # From 2026-01 a GraphQL backfill runs its streams' bulk operations at once (five per shop and app).
    api_version: str = "2026-10"
    ca_file: Path | None = None
    streams: list[ShopifyStream] = Field(default_factory=lambda: list(ALL_STREAMS))
    # The GraphQL Admin API (the default: bulk operations for backfills, cost-paced pages, only what the pipeline
    # maps; at 10,000 orders 8-9 Shopify calls instead of REST's 64, end to end within REST's range in the sandbox
    # but not yet reliably as fast, bench/RESULTS.md), or the REST Admin API, legacy since 2024-10.
    api: Literal["graphql", "rest"] = "graphql"
    page_size: int = Field(250, ge=1, le=250)
    # GraphQL: a read expecting more changed records than this runs as one Bulk Operation, fewer are paged
    # (a page costs ~35 points an order by Shopify's cost rule: 50 fit the Standard plan's 2,000-point bucket).
    bulk_threshold: int = Field(50, ge=0)
    # GraphQL: top-level records per staged page of a bulk read's result file (each page is saved with the read's
    # place in the file; larger pages mean fewer refund-detail queries and fewer saves).
    bulk_page_size: int = Field(2000, ge=1)
    # GraphQL, API 2026-01 and later (five bulk queries at once per shop and app): a bulk read of a large stream
    # runs as several operations over id ranges, on the slots the other streams leave, each of at least this
    # many records (connectors/shopify/gql_split.py).
    bulk_split_min: int = Field(2500, ge=1)
    timeout_seconds: float = Field(30.0, gt=0)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `${SHOPIFY_CA_FILE:-}` expands to "" when unset: that means "use the system trust store".
        return None if value in ("", None) else value

    @field_validator("url")
    @classmethod
    def _url_is_http_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (set SHOPIFY_URL, e.g. https://acme.myshopify.com)")
        return value

    @field_validator("access_token")
    @classmethod
    def _token_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty (set SHOPIFY_ACCESS_TOKEN)")
        return value

    @field_validator("api_version")
    @classmethod
    def _version_shape(cls, value: str) -> str:
        if value != "unstable" and not _looks_like_version(value):
            raise ValueError("must look like YYYY-MM, e.g. 2025-07")
        return value


def _looks_like_version(value: str) -> bool:
    year, _, month = value.partition("-")
    return len(year) == 4 and year.isdigit() and month in {"01", "04", "07", "10"}
