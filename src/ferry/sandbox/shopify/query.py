"""Parsing list and count query parameters into canonical, JSON-serializable filters.

Filters are stored inside ``page_info`` cursors, so they hold only ints, strings and lists.
Unknown parameters are ignored, as Shopify ignores them (except next to ``page_info``); a
parameter the sandbox knows but whose value it does not support (``order=title asc``) is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferry.sandbox.shopify.errors import invalid_param
from ferry.sandbox.shopify.times import parse

DEFAULT_LIMIT = 50
MAX_LIMIT = 250
ORDER_STATUSES = ("open", "closed", "cancelled", "any")
FINANCIAL_STATUSES = ("authorized", "pending", "paid", "partially_paid", "refunded", "voided", "partially_refunded")
_TIME_PARAMS = ("created_at_min", "created_at_max", "updated_at_min", "updated_at_max")
# Comma-separated equality filters each resource supports beyond the common ones.
_LIST_FILTERS = {"products": ("vendor", "product_type", "handle", "title")}
# ``order`` values the lists support, canonical form; "id asc" is the order when none is asked for.
ID_ASC = "id asc"
ORDERS = (ID_ASC, "id desc", "updated_at asc", "updated_at desc")


@dataclass(frozen=True, slots=True)
class ListRequest:
    filters: dict[str, Any]
    limit: int
    fields: str | None
    page_info: str | None
    order: str = ID_ASC  # one of ORDERS; with page_info, the cursor's own order applies


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_param("limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid_param("limit")
    return limit


def parse_list(resource: str, params: dict[str, str]) -> ListRequest:
    fields = params.get("fields") or None
    limit = parse_limit(params.get("limit"))
    page_info = params.get("page_info") or None
    filters = {} if page_info else parse_filters(resource, params)
    order = ID_ASC if page_info else parse_order(params.get("order"))
    return ListRequest(filters, limit, fields, page_info, order)


def parse_order(raw: str | None) -> str:
    """``updated_at asc`` (``+`` or ``%20`` arrive as a space), any case and spacing; a bare field sorts
    ascending, as in SQL. A field or direction the sandbox cannot sort by is a 400, never ignored: a client
    relying on the order (keyset reads in updated_at order) must not silently get id order instead."""
    if raw is None or not raw.strip():
        return ID_ASC
    parts = raw.lower().split()
    if len(parts) == 1:
        parts.append("asc")
    order = " ".join(parts)
    if order not in ORDERS:
        raise invalid_param("order")
    return order


def parse_filters(resource: str, params: dict[str, str]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if (since := params.get("since_id")) not in (None, ""):
        filters["since_id"] = _int(since, "since_id")
    if (ids := params.get("ids")) not in (None, ""):
        filters["ids"] = [_int(part, "ids") for part in ids.split(",") if part.strip()]
    for name in _TIME_PARAMS:
        if (value := params.get(name)) not in (None, ""):
            try:
                filters[name] = parse(value)
            except ValueError:
                raise invalid_param(name) from None
    if resource == "orders":
        filters.update(_order_filters(params))
    elif resource == "products" and (status := params.get("status")):
        filters["status"] = _csv(status)
    for name in _LIST_FILTERS.get(resource, ()):
        if (value := params.get(name)) not in (None, ""):
            filters[name] = _csv(value) if name == "handle" else [value]
    return filters


def _order_filters(params: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    status = params.get("status") or "open"  # Shopify's default hides closed and cancelled orders
    if status not in ORDER_STATUSES:
        raise invalid_param("status")
    if status != "any":
        out["status"] = status
    financial = params.get("financial_status") or "any"
    if financial == "unpaid":
        out["financial_status"] = ["pending", "authorized", "partially_paid"]
    elif financial != "any":
        values = _csv(financial)
        if any(v not in FINANCIAL_STATUSES for v in values):
            raise invalid_param("financial_status")
        out["financial_status"] = values
    return out


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _int(value: str, name: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise invalid_param(name) from None


def project(records: list[dict[str, Any]], fields: str | None) -> list[dict[str, Any]]:
    """Apply ``fields=a,b``: keep only those keys, in the record's own key order."""
    if not fields or not records:
        return records
    wanted = frozenset(_csv(fields))
    # Records of one resource share a key order; walking the few wanted keys beats walking ~80 record keys.
    order = [k for k in records[0] if k in wanted]
    out = []
    for rec in records:
        picked = {k: rec[k] for k in order if k in rec}
        if len(picked) < len(wanted) and len(rec) != len(records[0]):  # a record with extra or missing keys
            picked = {k: v for k, v in rec.items() if k in wanted}
        out.append(picked)
    return out
