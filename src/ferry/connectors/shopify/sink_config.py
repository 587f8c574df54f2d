"""The ``target:`` block of a pipeline that writes to a Shopify store (GraphQL Admin API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ferry.connectors.shopify.config import ShopifyConfig

# Shopify charges a mutation 10 points and refuses a request over 1,000 (MAX_COST_EXCEEDED): 100 mutations a
# request at most, fewer to leave the bucket room for the lookups of a batch's taken emails.
MAX_MUTATIONS_PER_REQUEST = 100


class ShopifySinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["shopify"]
    url: str = Field(description="Store base URL, e.g. https://acme.myshopify.com (env SHOPIFY_URL)")
    access_token: SecretStr = Field(description="Admin API token with write_customers (env SHOPIFY_ACCESS_TOKEN)")
    api_version: str = "2025-07"
    ca_file: Path | None = None
    timeout_seconds: float = Field(30.0, gt=0)
    # Mutations sent in one request, each under its own alias (10 points each): 25 costs 250 of the Standard
    # plan's 2,000-point bucket, which refills at 100 points/s.
    batch_size: int = Field(25, ge=1, le=MAX_MUTATIONS_PER_REQUEST)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    def client_config(self) -> ShopifyConfig:
        """The connection settings in the shape the shared GraphQL client (``gql_client``) takes; validates them."""
        return ShopifyConfig.model_validate({
            "system": "shopify", "url": self.url, "access_token": self.access_token,
            "api_version": self.api_version, "ca_file": self.ca_file, "timeout_seconds": self.timeout_seconds})
