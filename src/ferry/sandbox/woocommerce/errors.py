"""WordPress REST error responses: ``{"code": ..., "message": ..., "data": {"status": ...}}``.

Codes and messages are WordPress core's and WooCommerce's own (class-wp-rest-request.php,
rest-api.php, class-wc-rest-authentication.php, class-wc-rest-crud-controller.php,
class-wc-rest-controller.php); see docs/sandbox/woocommerce.md for where each was read.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

JSON = "application/json; charset=UTF-8"


class WpError(Exception):
    """A WP_Error a handler returns; rendered as WordPress renders it."""

    def __init__(self, code: str, message: str, status: int, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": {"status": self.status, **self.extra}}

    def response(self) -> Response:
        return json_response(self.body(), self.status, self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=orjson.dumps(body), status_code=status, headers=headers, media_type=JSON)


def no_route() -> WpError:
    return WpError("rest_no_route", "No route was found matching the URL and request method.", 404)


def invalid_id(post_type: str, status: int = 404) -> WpError:
    """``woocommerce_rest_{post_type}_invalid_id`` (GET/DELETE 404; an update of a missing id answers 400)."""
    return WpError(f"woocommerce_rest_{post_type}_invalid_id", "Invalid ID.", status)


def invalid_params(problems: dict[str, tuple[str, str, Any]]) -> WpError:
    """WP_REST_Request::has_valid_params: ``problems`` maps a parameter to (detail code, message, detail data)."""
    return WpError(
        "rest_invalid_param",
        f"Invalid parameter(s): {', '.join(problems)}",
        400,
        {
            "params": {name: message for name, (_, message, _) in problems.items()},
            "details": {name: {"code": code, "message": message, "data": data}
                        for name, (code, message, data) in problems.items()},
        },
    )


def missing_params(names: list[str]) -> WpError:
    return WpError("rest_missing_callback_param", f"Missing parameter(s): {', '.join(names)}", 400,
                   {"params": names})


def out_of_bounds(name: str, low: int, high: int) -> tuple[str, str, Any]:
    return "rest_out_of_bounds", f"{name} must be between {low} (inclusive) and {high} (inclusive)", None


def not_integer(name: str) -> tuple[str, str, Any]:
    return "rest_invalid_type", f"{name} is not of type integer.", {"param": name}


def not_boolean(name: str) -> tuple[str, str, Any]:
    return "rest_invalid_type", f"{name} is not of type boolean.", {"param": name}


def too_small(name: str, low: int) -> tuple[str, str, Any]:
    return "rest_out_of_bounds", f"{name} must be greater than or equal to {low}", None


def not_in_enum(name: str, allowed: tuple[str, ...]) -> tuple[str, str, Any]:
    # wp_sprintf's %l: "a, b, and c" (", and " between the last two; " and " when there are only two).
    listed = f"{allowed[0]} and {allowed[1]}" if len(allowed) == 2 else \
        ", ".join(allowed[:-1]) + f", and {allowed[-1]}"
    return "rest_not_in_enum", f"{name} is not one of {listed}.", None


def invalid_date(_: str) -> tuple[str, str, Any]:
    return "rest_invalid_date", "Invalid date.", None
