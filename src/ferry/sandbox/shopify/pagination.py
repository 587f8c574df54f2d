"""Cursor pagination as Shopify does it: an opaque ``page_info`` and a strict ``Link`` header.

``page_info`` is base64url (no padding) of a small JSON document holding the resource, the
filters and the order of the first request, the direction and the boundary: the last (or first)
record's id and, when the order is by updated_at, its updated_at too. That is keyset pagination, as
Shopify's relative cursors are: the next page is what sorts strictly after (value, id), so a record
edited after its page was read sorts later and comes again. Clients must treat the token as opaque;
the sandbox rejects one that does not decode or belongs to another resource. A token without an
order (from before the sandbox had orders) means id order.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from ferry.sandbox.shopify.errors import ApiError, invalid_param
from ferry.sandbox.shopify.query import ID_ASC, ORDERS


@dataclass(frozen=True, slots=True)
class Cursor:
    resource: str
    filters: dict[str, Any]
    direction: str  # "next": records after ``boundary``; "previous": records before it
    boundary: int  # the id of the record the page ended (next) or started (previous) at
    order: str = ID_ASC  # one of query.ORDERS
    value: int | None = None  # that record's updated_at (epoch seconds) when the order is by updated_at

    @property
    def key(self) -> tuple[int, int]:
        """The boundary as the table's sort key: (sort value, id)."""
        return (self.boundary if self.value is None else self.value), self.boundary


def encode(cursor: Cursor) -> str:
    doc: dict[str, Any] = {"r": cursor.resource, "f": cursor.filters, "d": cursor.direction, "b": cursor.boundary}
    if cursor.order != ID_ASC:  # id-order tokens stay as they were before orders existed
        doc["o"] = cursor.order
    if cursor.value is not None:
        doc["v"] = cursor.value
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode("ascii")


def decode(token: str, resource: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = orjson.loads(raw)
        value = doc.get("v")
        cursor = Cursor(doc["r"], doc["f"], doc["d"], int(doc["b"]), doc.get("o", ID_ASC),
                        None if value is None else int(value))
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        raise invalid_param("page_info") from exc
    if cursor.resource != resource or cursor.direction not in ("next", "previous") or not isinstance(
        cursor.filters, dict
    ):
        raise invalid_param("page_info")
    if cursor.order not in ORDERS or cursor.order.startswith("updated_at") != (cursor.value is not None):
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
