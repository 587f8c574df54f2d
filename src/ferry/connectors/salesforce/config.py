"""The ``target:`` block of a pipeline that writes to a Salesforce org."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

AuthFlow = Literal["jwt", "client_credentials", "refresh_token", "password"]

# What each flow needs, and the environment variable the example pipeline reads it from.
ENV_VARS = {
    "client_id": "SALESFORCE_CLIENT_ID",
    "client_secret": "SALESFORCE_CLIENT_SECRET",
    "username": "SALESFORCE_USERNAME",
    "private_key_file": "SALESFORCE_PRIVATE_KEY_FILE",
    "private_key": "SALESFORCE_PRIVATE_KEY",
    "refresh_token": "SALESFORCE_REFRESH_TOKEN",
    "password": "SALESFORCE_PASSWORD",
}
_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    # Each inner tuple is "one of these"; every tuple must be satisfied.
    "jwt": (("username",), ("private_key_file", "private_key")),
    "client_credentials": (("client_secret",),),
    "refresh_token": (("refresh_token",),),
    "password": (("username",), ("password",), ("client_secret",)),
}


@dataclass(frozen=True, slots=True)
class ApiBudget:
    """``api_budget: 20%`` (a share of the org's DailyApiRequests) or ``api_budget: 3000`` (calls).

    Either is a cap per rolling 24 hours (Salesforce's window), across all runs of the pipeline: the budget
    guard counts every call in the state DB's ledger (connectors/salesforce/budget.py)."""

    calls: int | None = None
    fraction: float | None = None

    def allowed(self, org_max: int | None) -> int | None:
        """Calls this pipeline may spend; None while the org's allocation is not yet known."""
        if self.calls is not None:
            return self.calls
        if org_max is None or self.fraction is None:
            return None
        return int(org_max * self.fraction)

    def __str__(self) -> str:
        return f"{self.calls:,} calls" if self.calls is not None else f"{(self.fraction or 0) * 100:g}%"


def parse_api_budget(value: Any) -> ApiBudget | None:
    if value is None or value == "" or isinstance(value, ApiBudget):
        return value or None
    if isinstance(value, bool):
        raise ValueError("api_budget must be a percentage such as '20%' or a number of API calls")
    if isinstance(value, int):
        if value < 1:
            raise ValueError("api_budget must allow at least 1 API call")
        return ApiBudget(calls=value)
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError(f"api_budget {text!r} is not a percentage such as '20%'") from None
        if not 0 < percent <= 100:
            raise ValueError(f"api_budget {text!r} must be more than 0% and at most 100%")
        return ApiBudget(fraction=percent / 100)
    if text.isdigit():
        return parse_api_budget(int(text))
    raise ValueError(f"api_budget {text!r} must be a percentage such as '20%' or a number of API calls")


class SalesforceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["salesforce"]
    login_url: str = Field(description="Token endpoint base: https://login.salesforce.com or My Domain")
    auth: AuthFlow = "jwt"
    client_id: str
    client_secret: SecretStr | None = None
    username: str | None = None
    private_key_file: Path | None = None
    private_key: SecretStr | None = None
    refresh_token: SecretStr | None = None
    password: SecretStr | None = None
    api_version: str = "62.0"
    ca_file: Path | None = None
    # Batches at least this large go through Bulk API 2.0. Unset: whenever Bulk needs fewer API calls
    # than Composite (about 7,000 records and up), since Composite has no job queue to wait for.
    bulk_threshold: int | None = Field(None, ge=1)
    collections_batch_size: int = Field(200, ge=1, le=200)
    # REST calls in flight; unset: min(10, long_running_limit).
    max_concurrency: int = Field(10, ge=1, le=25)
    timeout_seconds: float = Field(60.0, gt=0)
    bulk_poll_max_interval: float = Field(10.0, gt=0)
    # Download a Bulk job's successfulResults even when its counts prove every unlisted row succeeded: one
    # API call and one download more per job, for each written row's Salesforce id and created/updated flag.
    bulk_success_results: bool = False
    # Composite-wrapped Collections: up to 5 x 200 records in one API call. Off for orgs that refuse it.
    composite: bool = True
    # Salesforce allows 25 requests running 20 s or longer at once (5 on a Developer Edition org).
    long_running_limit: int = Field(25, ge=1, le=25)
    # This pipeline's share of the org's daily API requests: "20%" or a number of calls, per rolling 24 h
    # and across runs. None: no cap beyond the org's own allocation.
    api_budget: ApiBudget | None = None

    @field_validator("client_secret", "private_key", "refresh_token", "password", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("username", "private_key_file", "ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `${VAR:-}` expands to "" when the variable is unset.
        return None if value == "" else value

    @field_validator("api_budget", mode="before")
    @classmethod
    def _budget_shape(cls, value: Any) -> ApiBudget | None:
        return parse_api_budget(value)

    @field_validator("login_url")
    @classmethod
    def _https_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be a URL such as https://login.salesforce.com (set SALESFORCE_LOGIN_URL)")
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty (set SALESFORCE_CLIENT_ID to the connected app's consumer key)")
        return value.strip()

    @field_validator("api_version")
    @classmethod
    def _version_shape(cls, value: str) -> str:
        value = value.removeprefix("v")
        major, dot, minor = value.partition(".")
        if not (major.isdigit() and dot and minor.isdigit()):
            raise ValueError("must look like 62.0")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_concurrency(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_concurrency") in (None, ""):
            limit = data.get("long_running_limit") or 25
            data = {**data, "max_concurrency": min(10, int(limit))}
        return data

    @model_validator(mode="after")
    def _concurrency_within_long_running_limit(self) -> SalesforceConfig:
        # Every call in flight may turn into a long-running one; more than the org's limit would be refused.
        if self.max_concurrency > self.long_running_limit:
            raise ValueError(
                f"max_concurrency {self.max_concurrency} exceeds long_running_limit {self.long_running_limit} "
                "(Salesforce refuses more than that many requests running 20 s or longer; 5 on Developer Edition)"
            )
        return self

    @model_validator(mode="after")
    def _auth_has_what_it_needs(self) -> SalesforceConfig:
        for alternatives in _REQUIRED[self.auth]:
            if not any(getattr(self, name) is not None for name in alternatives):
                wanted = " or ".join(f"{name} (env {ENV_VARS[name]})" for name in alternatives)
                raise ValueError(f"auth '{self.auth}' needs {wanted}")
        return self

    @property
    def api_base(self) -> str:
        return f"/services/data/v{self.api_version}"
