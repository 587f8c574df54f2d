"""The ``source:`` block of a pipeline that reads a WooCommerce store (REST API ``wc/v3``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

WooCommerceStream = Literal["customers", "products", "orders"]
ALL_STREAMS: tuple[WooCommerceStream, ...] = ("customers", "products", "orders")
# WordPress core refuses per_page above 100 (rest_invalid_param), whatever the controller.
MAX_PAGE_SIZE = 100


class WooCommerceConfig(BaseModel):
    """Where the store is and how to sign in.

    Keys are a WooCommerce REST API key pair (WooCommerce > Settings > Advanced > REST API, read access).
    They are sent as HTTP Basic auth, which WooCommerce accepts only over HTTPS: a plain http URL would
    need OAuth 1.0a signatures in the query string, so it is refused here rather than leaking the secret.

    Times: every version and every ``modified_after`` ferry sends is UTC (``date_modified_gmt`` and
    ``dates_are_gmt=true``), so the store's own timezone setting never matters and is not configured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["woocommerce"]
    url: str = Field(description="Site base URL, e.g. https://shop.example.com (env WOOCOMMERCE_URL)")
    consumer_key: SecretStr = Field(description="REST API consumer key, ck_... (env WOOCOMMERCE_CONSUMER_KEY)")
    consumer_secret: SecretStr = Field(description="REST API consumer secret, cs_... (env WOOCOMMERCE_CONSUMER_SECRET)")
    api_version: Literal["wc/v3"] = "wc/v3"
    ca_file: Path | None = None
    streams: list[WooCommerceStream] = Field(default_factory=lambda: list(ALL_STREAMS))
    page_size: int = Field(MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    timeout_seconds: float = Field(30.0, gt=0)
    max_attempts: int = Field(6, ge=1, le=20)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `${WOOCOMMERCE_CA_FILE:-}` expands to "" when unset: that means "use the system trust store".
        return None if value in ("", None) else value

    @field_validator("url")
    @classmethod
    def _url_is_https_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value.endswith("/wp-json"):
            value = value[: -len("/wp-json")]
        if not value.startswith("https://"):
            raise ValueError(
                "must start with https:// (Basic auth is only accepted over HTTPS; set WOOCOMMERCE_URL, "
                "e.g. https://shop.example.com)"
            )
        return value

    @field_validator("consumer_key", "consumer_secret")
    @classmethod
    def _key_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty (set WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET)")
        return value
