"""The ``target:`` block of a pipeline that writes to a QuickBooks Online company."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

INTUIT_API_URL = "https://quickbooks.api.intuit.com"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"


class QuickBooksConfig(BaseModel):
    """OAuth 2.0 (client id and secret, a refresh token, the company's realm id) and how to write.

    The refresh token rotates: Intuit may answer a refresh with a new one, and the old one stops working
    soon after. The newest is kept in ``token_file`` (created with mode 0600, replaced atomically), which is
    read before ``refresh_token``: the environment only seeds the first run. Why a file and not ferry's
    state DB: the token belongs to the app's connection to the company, not to one pipeline, and two
    pipelines writing the same company must share the newest one (a rotated token invalidates the other's
    copy); the state DB is per pipeline and may be reset (``ferry reset``), which must never lose it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["quickbooks"]
    client_id: str
    client_secret: SecretStr
    realm_id: str = Field(description="The company id (env QUICKBOOKS_REALM_ID)")
    refresh_token: SecretStr | None = Field(None, description="The first refresh token (env QUICKBOOKS_REFRESH_TOKEN)")
    token_file: Path = Field(description="Where the newest refresh token is kept (env QUICKBOOKS_TOKEN_FILE)")
    api_url: str = INTUIT_API_URL
    token_url: str = INTUIT_TOKEN_URL
    minor_version: int = Field(75, ge=75)  # Intuit answers as 75 whatever is asked since 2025-08
    ca_file: Path | None = None
    timeout_seconds: float = Field(60.0, gt=0)
    # Intuit's limits per realm: 500 requests a minute, 10 a second, 10 in flight; batch calls 40 a minute per
    # realm and app (120 per realm across apps; ferry is one app). Calls are paced under these before they are
    # sent, so a 429 is the exception. When the minute's batch calls are spent, a batch whose next slot is
    # further off than its records' single calls would take is written one record a call instead.
    per_minute: int = Field(500, ge=1)
    per_second: int = Field(10, ge=1)
    max_concurrency: int = Field(4, ge=1, le=10)
    batch_per_minute: int = Field(40, ge=1, le=40)
    # Count every call to the company in ferry's state store too, so that several processes (pipelines, a
    # replay) writing one company stay under per_minute together (connectors/quickbooks/pace.py).
    shared_pacing: bool = True
    batch_size: int = Field(30, ge=1, le=30)
    # Look records up by their lookup field (the mapping's external_id) before creating them: one query per
    # batch of creates. Off by default: QuickBooks refuses a duplicate DisplayName/Name/DocNumber and the sink
    # then finds the record anyway, at no cost. On for a company that allows duplicate DocNumbers.
    lookup_before_create: bool = False
    # How far back the sink looks for a record whose create answer was lost, by the source key its name holds,
    # for objects whose mapping sets ``SourceKey`` (connectors/quickbooks/names.py): one query per object per
    # run (1,000 rows a call). 0 turns it off.
    lost_create_window_hours: float = Field(72.0, ge=0)

    @field_validator("refresh_token", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("api_url", "token_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be a URL such as https://quickbooks.api.intuit.com")
        return value

    @field_validator("client_id", "realm_id")
    @classmethod
    def _present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty (set QUICKBOOKS_CLIENT_ID / QUICKBOOKS_REALM_ID)")
        return value.strip()

    @property
    def company_path(self) -> str:
        return f"{self.api_url}/v3/company/{self.realm_id}"
