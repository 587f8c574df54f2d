"""Errors in the org's own shapes.

`ApiError` is a whole-request failure (the REST array body `[{"message","errorCode"}]`).
`RecordError` is one record's failure inside a save (collections use `statusCode`,
Bulk formats it into `sf__Error`, a single-record REST call turns it into an ApiError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RecordError(Exception):
    status_code: str
    message: str
    fields: list[str] = field(default_factory=list)
    duplicate_result: dict[str, Any] | None = None  # DUPLICATES_DETECTED carries the matching records

    def as_collection_error(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}

    def as_bulk_error(self) -> str:
        # Real failedResults format: CODE:message:field1,field2 --
        return f"{self.status_code}:{self.message}:{','.join(self.fields)} --"

    def as_api_error(self, status: int = 400) -> ApiError:
        return ApiError(status, self.status_code, self.message, self.fields)

    def rest_body(self) -> list[dict[str, Any]]:
        """A single-record REST failure; a duplicate-rule hit leads with its duplicateResult, as the org's does."""
        if self.duplicate_result is not None:
            return [{"duplicateResult": self.duplicate_result, "errorCode": self.status_code, "message": self.message}]
        return [{"message": self.message, "errorCode": self.status_code, "fields": self.fields}]


@dataclass(slots=True)
class ApiError(Exception):
    status: int
    error_code: str
    message: str
    fields: list[str] | None = None

    def body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return [entry]


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def session_invalid() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def no_such_column(field_name: str, sobject: str) -> RecordError:
    return RecordError("INVALID_FIELD", f"No such column '{field_name}' on sobject of type {sobject}", [])
