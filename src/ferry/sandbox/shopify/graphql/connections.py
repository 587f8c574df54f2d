"""Relay connections as Shopify serves them: ``edges { cursor node }``, ``nodes``, ``pageInfo``.

Cursors are opaque base64 of ``{"last_id": <id>, "last_value": <sort value>}`` (the shape Shopify's own
cursors decode to). Root connections are keyset ranges over a ``Table`` (the very index the REST lists
use), so a record edited while a client pages in UPDATED_AT order moves to its new place and is met again.
Nested connections (line items, variants, refund line items) page over the parent's list.

Shopify requires ``first`` or ``last`` and caps both at 250 (reference §2.3, §3.2); in a bulk operation
every connection is read whole and ``first`` is ignored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import GraphQLError, GraphQLResolveInfo

from ferry.sandbox.shopify.graphql.search import SearchError, compile_search
from ferry.sandbox.shopify.tables import Table

MAX_PAGE = 250
Connection = dict[str, Any]


class BadRequest(GraphQLError):
    """An argument Shopify refuses at run time (HTTP 200, ``errors[].extensions.code``)."""

    def __init__(self, message: str, info: GraphQLResolveInfo | None = None, code: str = "BAD_REQUEST") -> None:
        super().__init__(message, nodes=info.field_nodes if info else None,
                         path=info.path.as_list() if info else None, extensions={"code": code})


@dataclass
class Window:
    first: int | None
    last: int | None
    after: str | None
    before: str | None
    reverse: bool


def window(info: GraphQLResolveInfo, args: dict[str, Any], *, bulk: bool) -> Window:
    first, last = args.get("first"), args.get("last")
    if bulk:  # a bulk operation reads every connection whole
        return Window(None, None, None, None, bool(args.get("reverse")))
    if first is None and last is None:
        raise BadRequest("you must provide one of first or last", info)
    if first is not None and last is not None:
        raise BadRequest("providing both first and last is not supported", info)
    for label, size in (("first", first), ("last", last)):
        if size is not None and not 0 <= size <= MAX_PAGE:
            # Message text unverified: Shopify's wording for an oversized page was not found in a primary source.
            raise BadRequest(f"Argument '{label}' on Field '{info.field_name}' has an invalid value ({size}). "
                             f"Expected a page size from 0 to {MAX_PAGE}.", info, "argumentLiteralsIncompatible")
    return Window(first, last, args.get("after"), args.get("before"), bool(args.get("reverse")))


def encode_cursor(last_id: int, last_value: int | None = None) -> str:
    doc = {"last_id": last_id, "last_value": last_id if last_value is None else last_value}
    return base64.b64encode(orjson.dumps(doc)).decode("ascii")


def decode_cursor(token: str, info: GraphQLResolveInfo) -> tuple[int, int]:
    """(last_value, last_id) of a cursor."""
    try:
        doc = orjson.loads(base64.b64decode(token + "=" * (-len(token) % 4)))
        return int(doc["last_value"]), int(doc["last_id"])
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise BadRequest("Invalid cursor for current pagination sort.", info) from None


def make_connection(items: Sequence[Any], cursors: Sequence[str], has_next: bool, has_prev: bool) -> Connection:
    return {
        "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, items, strict=True)],
        "nodes": list(items),
        "pageInfo": {"hasNextPage": has_next, "hasPreviousPage": has_prev,
                     "startCursor": cursors[0] if cursors else None, "endCursor": cursors[-1] if cursors else None},
    }


def list_connection(info: GraphQLResolveInfo, args: dict[str, Any], items: Sequence[Any],
                    key: Callable[[Any], int], *, bulk: bool) -> Connection:
    """A page of an in-memory list, in its own order (``reverse`` flips it); cursors carry the item's id."""
    w = window(info, args, bulk=bulk)
    seq = list(reversed(items)) if w.reverse else list(items)
    ids = [key(x) for x in seq]
    start, end = 0, len(seq)
    if w.after is not None:
        start = _index_after(ids, decode_cursor(w.after, info)[1])
    if w.before is not None:
        end = _index_of(ids, decode_cursor(w.before, info)[1], len(seq))
    lo, hi = start, max(start, end)
    if w.first is not None:
        hi = min(hi, lo + w.first)
    if w.last is not None:
        lo = max(lo, hi - w.last)
    page = seq[lo:hi]
    return make_connection(page, [encode_cursor(key(x)) for x in page], hi < len(seq), lo > 0)


def _index_after(ids: list[int], last_id: int) -> int:
    return ids.index(last_id) + 1 if last_id in ids else 0


def _index_of(ids: list[int], last_id: int, default: int) -> int:
    return ids.index(last_id) if last_id in ids else default


# ---------------------------------------------------------------------- root connections over a table
# Sort keys the sandbox can order by. CREATED_AT and PROCESSED_AT use id order: in this store ids grow with
# creation time (generated and API-created records alike), and processed_at equals created_at.
ORDER_OF_SORT_KEY = {"ID": "id", "RELEVANCE": "id", "CREATED_AT": "id", "PROCESSED_AT": "id",
                     "UPDATED_AT": "updated_at"}


@dataclass
class TablePage:
    positions: list[int]
    cursors: list[str]
    has_next: bool
    has_prev: bool


def table_page(info: GraphQLResolveInfo, args: dict[str, Any], table: Table, resource: str,
               warnings: list[dict[str, Any]], *, bulk_page: tuple[str | None, int] | None = None) -> TablePage:
    """One page of a root connection. ``bulk_page`` = (after, size) when a bulk operation drives the paging."""
    sort_key = args.get("sortKey") or "ID"
    base = ORDER_OF_SORT_KEY.get(sort_key)
    if base is None:
        raise BadRequest(f"The sandbox does not sort {info.field_name} by {sort_key}; "
                         f"use one of {', '.join(ORDER_OF_SORT_KEY)}.", info)
    order = f"{base} {'desc' if args.get('reverse') else 'asc'}"
    try:
        compiled = compile_search(args.get("query"), resource, table)
    except SearchError as exc:
        raise BadRequest(str(exc), info) from None
    if compiled.warnings:
        warnings.append({"path": info.path.as_list(), "query": args.get("query"), "warnings": compiled.warnings})
    match = compiled.predicate
    if bulk_page is not None:
        w = Window(bulk_page[1], None, bulk_page[0], None, bool(args.get("reverse")))
    else:
        w = window(info, args, bulk=False)
    if w.last is not None and w.before is None and w.after is None:
        flipped = f"{base} {'asc' if order.endswith('desc') else 'desc'}"
        found = table.after(flipped, match, None, w.last + 1)
        page = list(reversed(found[: w.last]))
        return _page(table, order, match, page, has_next=False, has_prev=len(found) > w.last)
    if w.before is not None:
        bound = decode_cursor(w.before, info)
        want = w.last if w.last is not None else MAX_PAGE
        found = table.before(order, match, bound, want + 1)
        page = found[-want:] if want else []
        has_next = True
        return _page(table, order, match, page, has_next=has_next, has_prev=len(found) > want)
    start = decode_cursor(w.after, info) if w.after is not None else table.first_bound(order, compiled.bounds)
    want = w.first if w.first is not None else MAX_PAGE
    found = table.after(order, match, start, want + 1)
    page = found[:want]
    has_prev = w.after is not None and bool(page) and bool(table.before(order, match, table.key(order, page[0]), 1))
    return _page(table, order, match, page, has_next=len(found) > want, has_prev=has_prev)


def _page(table: Table, order: str, match: Any, page: list[int], *, has_next: bool, has_prev: bool) -> TablePage:
    cursors = []
    for pos in page:
        value, rid = table.key(order, pos)
        cursors.append(encode_cursor(rid, value))
    return TablePage(page, cursors, has_next, has_prev)
