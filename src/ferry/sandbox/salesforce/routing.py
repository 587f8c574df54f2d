"""A small router for everything under /services/data/vXX.X/.

The emulated API has its own dispatcher (instead of one FastAPI route per
resource) because Composite must run subrequests through exactly the same
handlers, in-process, without HTTP, auth or API-budget accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from ferry.sandbox.salesforce.errors import ApiError, not_found

JSON_TYPE = "application/json;charset=UTF-8"
CSV_TYPE = "text/csv"
_VERSION_PREFIX = "/services/data/v"
MIN_VERSION = 31
MAX_VERSION = 66


@dataclass(slots=True)
class Call:
    method: str
    version: str  # "62.0"
    segments: list[str]  # decoded path segments after /services/data/vXX.X/
    query: dict[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    in_composite: bool = False
    force_all_or_none: bool = False  # an outer Composite allOrNone overrides inner collection flags
    raw_query: str = ""  # the URL's query string as sent, for parameters that repeat (sobject=A&sobject=B)
    # A Composite subrequest's body as its request parsed it: not parsed again from ``body`` (a quarter of the
    # sandbox's CPU in a Composite upsert of 200 records). ``body`` stays: error messages quote it.
    parsed: Any = None

    def json(self) -> Any:
        if self.parsed is not None:
            return self.parsed
        if not self.body:
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body is empty or could not be parsed")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None


@dataclass(slots=True)
class Reply:
    status: int
    body: Any = None  # JSON-serialisable; None means no body (204) unless `raw` is set
    raw: bytes | None = None
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None  # a large body produced piece by piece (Bulk query results)

    def content(self) -> bytes:
        if self.stream is not None:
            return b"".join(self.stream)
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return orjson.dumps(self.body)


Handler = Callable[[Call, dict[str, str]], Reply]


@dataclass(slots=True)
class Route:
    method: str
    parts: tuple[str, ...]  # literal segments (lower-case) or "{name}"
    handler: Handler
    template: str
    counts_as_collection: bool = False  # Composite allows at most 5 collections/query subrequests

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.parts):
            return None
        params: dict[str, str] = {}
        for part, seg in zip(self.parts, segments, strict=True):
            if part.startswith("{"):
                params[part[1:-1]] = seg
            elif part != seg.lower():
                return None
        return params


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, *, collection: bool = False) -> None:
        parts = tuple(p if p.startswith("{") else p.lower() for p in template.split("/") if p)
        self.routes.append(Route(method, parts, handler, template, collection))

    def find(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
        path_matched = False
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method:
                return route, params
            path_matched = True
        if path_matched:
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are "
                           + ",".join(sorted({r.method for r in self.routes if r.match(segments) is not None})))
        raise not_found()

    def dispatch(self, call: Call) -> Reply:
        try:
            route, params = self.find(call.method, call.segments)
            return route.handler(call, params)
        except ApiError as err:
            return Reply(err.status, err.body())


def endpoint_name(method: str, route: Route | None) -> str:
    template = "/".join(route.parts) if route else "?"
    return f"{method} /services/data/vXX.X/{template}".rstrip("/")


def parse_version(text: str) -> str:
    """'v62.0' -> '62.0'; unknown or too old versions are the org's 404."""
    if not text.startswith("v"):
        raise not_found()
    try:
        number = float(text[1:])
    except ValueError:
        raise not_found() from None
    if not (MIN_VERSION <= number <= MAX_VERSION) or not number.is_integer():
        raise not_found()
    return f"{int(number)}.0"


def split_raw_path(raw_path: str) -> list[str]:
    """Segments decoded one by one, so an external id value containing %2F stays one segment."""
    return [unquote(seg) for seg in raw_path.split("/") if seg]


def parse_sub_url(url: str) -> tuple[str, list[str], dict[str, str]]:
    """A Composite subrequest URL -> (version, segments, query)."""
    parts = urlsplit(url)
    if not parts.path.startswith(_VERSION_PREFIX):
        raise ApiError(400, "INVALID_FIELD", f"The URL '{url}' must start with /services/data/vXX.X/")
    segments = split_raw_path(parts.path)[2:]
    version = parse_version(segments[0]) if segments else ""
    return version, segments[1:], dict(parse_qsl(parts.query, keep_blank_values=True))


def versions_list() -> list[dict[str, str]]:
    seasons = ("Summer", "Winter", "Spring")
    out = []
    for v in range(MIN_VERSION, MAX_VERSION + 1):
        year = 14 + (v - MIN_VERSION + 2) // 3
        out.append({"label": f"{seasons[(v - MIN_VERSION) % 3]} '{year:02d}", "url": f"/services/data/v{v}.0",
                    "version": f"{v}.0"})
    return out
