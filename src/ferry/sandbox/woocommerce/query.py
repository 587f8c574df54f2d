"""List requests: WordPress's validation of collection parameters, WooCommerce's filters, order and paging.

Parameters are read as PHP reads a query string (the last of repeated keys wins; ``key[]`` collects a
list), validated against each controller's collection schema (``get_collection_params``) the way
``WP_REST_Request::has_valid_params`` does, and unknown parameters are ignored as WordPress ignores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ferry.sandbox.woocommerce import errors
from ferry.sandbox.woocommerce.store import Record
from ferry.sandbox.woocommerce.times import StoreTime

MAX_PER_PAGE = 100
POST_ORDERBY = ("date", "id", "include", "title", "slug", "modified")
ORDER_STATUSES = ("any", "trash", "pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed",
                  "checkout-draft")
PRODUCT_STATUSES = ("any", "future", "trash", "draft", "pending", "private", "publish")
CUSTOMER_ROLES = ("all", "administrator", "editor", "author", "contributor", "subscriber", "customer", "shop_manager")


@dataclass(frozen=True)
class Schema:
    """What a collection accepts: its orderby values, defaults and extra filters."""

    orderby: tuple[str, ...] = POST_ORDERBY
    default_orderby: str = "date"
    default_order: str = "desc"
    dated: bool = True  # after/before/modified_after/modified_before/dates_are_gmt
    statuses: tuple[str, ...] = ()
    int_filters: tuple[str, ...] = ()
    text_filters: tuple[str, ...] = ()
    status_enum: tuple[str, ...] = ()  # one ``status`` value from this list, the first being "every status"


SCHEMAS: dict[str, Schema] = {
    "orders": Schema(statuses=ORDER_STATUSES, int_filters=("customer", "product", "parent"), text_filters=("search",)),
    # The products controller appends price, popularity and rating to the posts' orderby enum.
    "products": Schema(orderby=(*POST_ORDERBY, "price", "popularity", "rating"),
                       statuses=PRODUCT_STATUSES, text_filters=("search", "sku", "type", "slug")),
    "coupons": Schema(text_filters=("search", "code")),
    "variations": Schema(orderby=(*POST_ORDERBY, "menu_order"), text_filters=("search", "sku")),
    "refunds": Schema(),
    "customers": Schema(orderby=("id", "include", "name", "registered_date"), default_orderby="name",
                        default_order="asc", dated=False, text_filters=("search", "email", "role")),
    # WC_REST_Webhooks_V1_Controller::get_collection_params (after/before only; status all|active|paused|disabled).
    "webhooks": Schema(orderby=("date", "id", "title"), text_filters=("search",),
                       status_enum=("all", "active", "paused", "disabled")),
}


@dataclass
class ListQuery:
    page: int = 1
    per_page: int = 10
    offset: int | None = None
    order: str = "desc"
    orderby: str = "date"
    include: list[int] = field(default_factory=list)
    exclude: list[int] = field(default_factory=list)
    dates_are_gmt: bool = False
    bounds: dict[str, str] = field(default_factory=dict)  # after/before/modified_after/modified_before -> digits
    statuses: list[str] = field(default_factory=list)
    ints: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


def php_params(items: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """``$_GET`` from a query string: the last repeated key wins; ``key[]`` (or ``key[n]``) collects a list."""
    out: dict[str, str | list[str]] = {}
    for key, value in items:
        if key.endswith("]") and "[" in key:
            base = key[: key.index("[")]
            current = out.get(base)
            out[base] = [*current, value] if isinstance(current, list) else [value]
        else:
            out[key] = value
    return out


def parse_list(resource: str, params: dict[str, str | list[str]], st: StoreTime) -> ListQuery:
    schema = SCHEMAS[resource]
    q = ListQuery(order=schema.default_order, orderby=schema.default_orderby)
    # Checked in the order get_collection_params() declares them: the order the error lists them in.
    problems: dict[str, tuple[str, str, Any]] = {}
    q.page = _int(params, "page", 1, problems, low=1) or 1
    q.per_page = _int(params, "per_page", 10, problems, low=1, high=MAX_PER_PAGE) or 10
    if schema.dated:
        for name in ("after", "before", "modified_after", "modified_before"):
            raw = params.get(name)
            if raw is None:
                continue
            bound = st.filter_bound(raw) if isinstance(raw, str) else None
            if bound is None:
                problems[name] = errors.invalid_date(name)
            else:
                q.bounds[name] = bound
        q.dates_are_gmt = _bool(params, "dates_are_gmt", problems)
    q.exclude = _ids(params.get("exclude"))
    q.include = _ids(params.get("include"))
    q.offset = _int(params, "offset", None, problems)
    q.order = _enum(params, "order", ("asc", "desc"), q.order, problems)
    q.orderby = _enum(params, "orderby", schema.orderby, q.orderby, problems)
    for name in schema.int_filters:
        number = _int(params, name, None, problems)
        if number is not None:
            q.ints[name] = number
    for name in schema.text_filters:
        text = params.get(name)
        if isinstance(text, str) and text != "":
            q.texts[name] = text
    if schema.statuses:
        q.statuses = _statuses(params.get("status"), schema.statuses, problems)
    if schema.status_enum:
        status = _enum(params, "status", schema.status_enum, schema.status_enum[0], problems)
        q.statuses = [] if status == schema.status_enum[0] else [status]
    if problems:
        raise errors.invalid_params(problems)
    return q


def _int(params: dict[str, Any], name: str, default: int | None, problems: dict[str, Any], *,
         low: int | None = None, high: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(str(raw).strip()) if str(raw).strip().lstrip("-").isdigit() else int(float(str(raw)))
        if float(str(raw)) != value:
            raise ValueError
    except ValueError:
        problems[name] = errors.not_integer(name)
        return default
    if low is not None and high is not None and not low <= value <= high:
        problems[name] = errors.out_of_bounds(name, low, high)
    elif low is not None and value < low:
        problems[name] = errors.too_small(name, low)
    return value


def _enum(params: dict[str, Any], name: str, allowed: tuple[str, ...], default: str, problems: dict[str, Any]) -> str:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in allowed:
        problems[name] = errors.not_in_enum(name, allowed)
        return default
    return str(raw)


def _bool(params: dict[str, Any], name: str, problems: dict[str, Any]) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    text = str(raw).lower()
    # rest_is_boolean(): these strings (and "") are booleans; anything else is a type error.
    if text in ("true", "1"):
        return True
    if text in ("false", "0", ""):
        return False
    problems[name] = errors.not_boolean(name)
    return False


def _ids(raw: str | list[str] | None) -> list[int]:
    """wp_parse_id_list: a comma/space separated list (or an array), absint of each, unique."""
    if raw is None:
        return []
    parts = raw if isinstance(raw, list) else raw.replace(",", " ").split()
    out: list[int] = []
    for part in parts:
        try:
            n = abs(int(float(part)))
        except ValueError:
            n = 0
        if n not in out:
            out.append(n)
    return out


def _statuses(raw: str | list[str] | None, allowed: tuple[str, ...], problems: dict[str, Any]) -> list[str]:
    if raw is None:
        return ["any"]
    values = raw if isinstance(raw, list) else [v for v in raw.replace(",", " ").split() if v]
    for k, value in enumerate(values):
        if value not in allowed:
            name = f"status[{k}]"
            problems["status"] = (errors.not_in_enum(name, allowed)[0], errors.not_in_enum(name, allowed)[1], None)
            return ["any"]
    return values or ["any"]


# -- applying a query -----------------------------------------------------------------------------------

def select(resource: str, records: list[Record], q: ListQuery) -> list[Record]:
    """The records a list request matches, in the order it asks for."""
    match = _matcher(resource, q)
    rows = [r for r in records if match(r)]
    if q.orderby == "include" and q.include:
        pos = {rid: k for k, rid in enumerate(q.include)}
        return sorted(rows, key=lambda r: pos.get(r["id"], len(pos)))
    key = _sort_key(resource, q.orderby)
    return sorted(rows, key=key, reverse=q.order == "desc")


def page_of(rows: list[Record], q: ListQuery) -> tuple[list[Record], int, int]:
    """(the page's records, X-WP-Total, X-WP-TotalPages); ``offset`` wins over ``page`` as in WP_Query."""
    total = len(rows)
    start = q.offset if q.offset is not None else (q.page - 1) * q.per_page
    return rows[start:start + q.per_page], total, math.ceil(total / q.per_page)


def link_header(base: str, params: list[tuple[str, str]], page: int, pages: int) -> str | None:
    """``Link`` as WC_REST_CRUD_Controller::get_items builds it: prev then next, the request's own query kept."""
    kept = [(k, v) for k, v in php_flat(params) if k != "page"]
    links = []
    if page > 1:
        links.append(f'<{base}?{urlencode([*kept, ("page", str(min(page - 1, pages)))])}>; rel="prev"')
    if pages > page:
        links.append(f'<{base}?{urlencode([*kept, ("page", str(page + 1))])}>; rel="next"')
    return ", ".join(links) or None


def php_flat(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The query as PHP sees it, in first-seen key order (repeated keys collapse to their last value)."""
    last: dict[str, str] = {}
    for k, v in items:
        last[k] = v
    return list(last.items())


_DATE_FIELDS = {"after": ("date_created", ">"), "before": ("date_created", "<"),
                "modified_after": ("date_modified", ">"), "modified_before": ("date_modified", "<")}


def _matcher(resource: str, q: ListQuery) -> Callable[[Record], bool]:
    include, exclude = set(q.include), set(q.exclude)
    statuses = set(q.statuses)
    checks: list[Callable[[Record], bool]] = []
    if include:
        checks.append(lambda r: r["id"] in include)
    if exclude:
        checks.append(lambda r: r["id"] not in exclude)
    for name, bound in q.bounds.items():
        column, op = _DATE_FIELDS[name]
        if resource == "refunds":
            column = "date_created"  # a refund's post_modified is never served; it is its creation time
        column = f"{column}_gmt" if q.dates_are_gmt else column
        checks.append(_date_check(column, op, bound))
    if statuses and "any" not in statuses:
        checks.append(lambda r: r.get("status") in statuses)
    elif statuses:
        checks.append(lambda r: r.get("status") not in ("trash", "auto-draft", "checkout-draft"))
    else:  # a collection without a status parameter (coupons) never lists what is in the trash
        checks.append(lambda r: r.get("status") != "trash")
    for name, number in q.ints.items():
        checks.append(_int_filter(name, number))
    for name, text in q.texts.items():
        checks.append(_text_filter(resource, name, text))
    if resource == "customers" and "role" not in q.texts:
        checks.append(lambda r: r.get("role") == "customer")
    return lambda r: all(check(r) for check in checks)


def _date_check(column: str, op: str, bound: str) -> Callable[[Record], bool]:
    if op == ">":
        return lambda r: r.get(column) is not None and r[column] > bound
    return lambda r: r.get(column) is not None and r[column] < bound


def _int_filter(name: str, value: int) -> Callable[[Record], bool]:
    if name == "customer":
        return lambda r: r.get("customer_id") == value
    if name == "product":
        return lambda r: any(li.get("product_id") == value for li in r.get("line_items", []))
    return lambda r: r.get("parent_id") == value


def _text_filter(resource: str, name: str, value: str) -> Callable[[Record], bool]:
    if name == "search":
        needle = value.lower()
        return lambda r: needle in _search_text(resource, r)
    if name == "role":
        return lambda r: value == "all" or r.get("role") == value
    if name == "email":
        return lambda r: str(r.get("email", "")).lower() == value.lower()
    return lambda r: str(r.get(name, "")) == value


def _search_text(resource: str, r: Record) -> str:
    if resource == "orders":
        b = r.get("billing", {})
        return " ".join(str(b.get(k, "")) for k in ("first_name", "last_name", "email", "company")).lower()
    if resource == "customers":
        return " ".join(str(r.get(k, "")) for k in ("email", "first_name", "last_name", "username")).lower()
    return " ".join(str(r.get(k, "")) for k in ("name", "sku", "code")).lower()


def _sort_key(resource: str, orderby: str) -> Callable[[Record], Any]:
    if orderby == "id":
        return lambda r: r["id"]
    if orderby in ("date", "registered_date") or (resource in ("orders", "refunds") and orderby in ("title", "slug")):
        # WP_Query orders by "post_date ID" (the local column); an order's title and slug are its date.
        return lambda r: (r.get("date_created") or "", r["id"])
    if orderby == "modified":
        return lambda r: (r.get("date_modified") or r.get("date_created") or "", r["id"])
    if orderby in ("title", "name"):
        return lambda r: (str(r.get("name") or r.get("code") or r.get("username") or ""), r["id"])
    if orderby == "slug":
        return lambda r: (str(r.get("slug") or r.get("code") or ""), r["id"])
    if orderby == "price":
        return lambda r: (float(r.get("price") or 0), r["id"])
    if orderby == "popularity":
        return lambda r: (r.get("total_sales", 0), r["id"])
    if orderby == "rating":
        return lambda r: (float(r.get("average_rating") or 0), r["id"])
    return lambda r: (r.get("menu_order", 0), r["id"])
