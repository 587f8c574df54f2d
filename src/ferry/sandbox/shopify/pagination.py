"""Cursor pagination as Shopify does it: an opaque ``page_info`` and a strict ``Link`` header.

``page_info`` is base64url (no padding) of a small JSON document holding the resource, the
filters of the first request, the direction and the boundary id. Clients must treat it as
opaque; the sandbox rejects a token that does not decode or belongs to another resource.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from ferry.sandbox.shopify.errors import ApiError, invalid_param


@dataclass(frozen=True, slots=True)
class Cursor:
    resource: str
    filters: dict[str, Any]
    direction: str  # "next": records after ``boundary``; "previous": records before it
    boundary: int


def encode(cursor: Cursor) -> str:
    raw = orjson.dumps({"r": cursor.resource, "f": cursor.filters, "d": cursor.direction, "b": cursor.boundary})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(token: str, resource: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = orjson.loads(raw)
        cursor = Cursor(doc["r"], doc["f"], doc["d"], int(doc["b"]))
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise invalid_param("page_info") from exc
    if cursor.resource != resource or cursor.direction not in ("next", "previous") or not isinstance(
        cursor.filters, dict
    ):
        raise invalid_param("page_info")
    return cursor


def link_header(base_url: str, limit: int, fields: str | None, links: list[tuple[str, Cursor]]) -> str | None:
    """``<url>; rel="previous", <url>; rel="next"``, or None when there is no other page.

    ShopifyAPI splits this header on ``", "`` and ``"; "``, so URLs are fully percent-encoded
    (no raw comma or space can appear in them).
    """
    parts = []
    for rel, cursor in links:
        query: dict[str, str | int] = {"limit": limit, "page_info": encode(cursor)}
        if fields:
            query["fields"] = fields
        parts.append(f'<{base_url}?{urlencode(query)}>; rel="{rel}"')
    return ", ".join(parts) or None


def check_page_info_request(params: dict[str, str]) -> None:
    """A request with page_info may add only limit and fields; the other filters live in the cursor."""
    extra = sorted(set(params) - {"page_info", "limit", "fields"})
    if extra:
        detail = f"Invalid value. Filters cannot be combined with page_info: {', '.join(extra)}"
        raise ApiError(400, {"page_info": detail})
