"""The ``target:`` block of a pipeline that writes to a Salesforce org."""

from __future__ import annotations

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
    bulk_threshold: int = Field(2000, ge=1)
    collections_batch_size: int = Field(200, ge=1, le=200)
    max_concurrency: int = Field(4, ge=1, le=25)
    timeout_seconds: float = Field(60.0, gt=0)
    bulk_poll_max_interval: float = Field(10.0, gt=0)

    @field_validator("client_secret", "private_key", "refresh_token", "password", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("username", "private_key_file", "ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `${VAR:-}` expands to "" when the variable is unset.
        return None if value == "" else value

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
