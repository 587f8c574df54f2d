"""Shopify's error responses: status code plus the ``{"errors": ...}`` body its REST API sends."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

JSON = "application/json; charset=utf-8"

UNAUTHORIZED = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED = "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."


class ApiError(Exception):
    """Raised by handlers; rendered as Shopify renders it."""

    def __init__(self, status: int, errors: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> Response:
        return json_response({"errors": self.errors}, self.status, self.headers)


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def invalid_param(name: str) -> ApiError:
    # Shopify answers 400 for a bad list parameter; the exact body text is unverified (see docs).
    return ApiError(400, {name: "Invalid value."})


def unprocessable(field: str, *messages: str) -> ApiError:
    return ApiError(422, {field: list(messages)})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=orjson.dumps(body), status_code=status, headers=headers, media_type=JSON)
