"""A Shopify stream read over the GraphQL Admin API: one Bulk Operation when much changed, else cost-paced pages.

Which one: a count query (``ordersCount(query: "updated_at:>='…'")``) against ``bulk_threshold``. Both give
records in the REST raw shape (``gql_shape``), so ``normalize.py`` stays the one normalizer.

``prepare_reads`` plans every stream of a run at once before the first is read: one count query with an
aliased count per stream, then the bulk operations of every stream that needs one started together in one
request where the API version lets several run at once (2026-01 and later: five), else the first one. Each
started operation's id goes into that stream's state, which the engine saves before any read: a crash
from there on finds the operations again instead of starting them twice.

Paged reads are ``reader.read_stream`` over this class as its ``PageReader``: updated_at order, keyset
cursors, the same never-skip rule and clock-margin cursor as the REST read. A page's "next link" is the
query's filter and the page's ``endCursor``.

A bulk read runs one operation through ``ferry.connectors.jobs`` and streams its JSONL in pages of
``page_size`` top-level objects. Its state (``{"cursor", "bulk": {"id", "since", "done", "newest"}}``) is
saved with each page, the first one (empty) right after the operation is created: a restarted run finds the
operation by id, waits for it if it still runs, skips the objects already staged, and never starts a second
one. The cursor after a bulk read stops at the operation's start less the clock margin: a change committed
while it ran is at least that new, so the next read meets it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import structlog

from ferry.connectors.jobs import resume_job, start_job
from ferry.connectors.shopify import gql_shape as shape
from ferry.connectors.shopify.gql_bulk import BulkBoard, BulkOutcome, BulkQueries, concurrent_queries
from ferry.connectors.shopify.gql_client import ShopifyGraphQL
from ferry.connectors.shopify.reader import (
    ORDERED,
    Progress,
    ReadState,
    ShopifyPage,
    moved_cursor,
    read_start,
    read_stream,
)
from ferry.core.contracts import SourcePage
from ferry.errors import PermanentError

log = structlog.get_logger("ferry.connectors.shopify.graphql")

MAX_COST = 1000  # Shopify's single-query cap on requested cost
_ROOT = {"customers": "customers", "products": "products", "orders": "orders"}
_COUNT = {"customers": "customersCount", "products": "productsCount", "orders": "ordersCount"}
# Per stream: the node selection, its nested connection (name, selection, first) and one node's requested cost
# by the linear rule (1 + objects + nested connection sized by its first), to size pages under MAX_COST.
_NODE = {"customers": shape.CUSTOMER, "products": shape.PRODUCT, "orders": shape.ORDER}
_CHILD: dict[str, tuple[str, str, int] | None] = {
    "customers": None,
    "products": ("variants", shape.VARIANT, 20),
    "orders": ("lineItems", shape.LINE, 5),
}
_NODE_COST = {"customers": 4, "products": 4 + (2 + 20 * 2), "orders": 18 + (2 + 5 * 9)}
_CHILD_TYPE = {"products": "Product", "orders": "Order"}
_WITHOUT = "without"  # a read state's entities its records were read without (orders: ["refund"])


@dataclass(slots=True)
class ReadPlan:
    stream: str
    mode: str  # "bulk" or "paged"
    expected: int | None  # records changed since the cursor, as the store counted them

    def as_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "mode": self.mode, "expected": self.expected}


class GraphQLReads:
    def __init__(
        self,
        client: ShopifyGraphQL,
        *,
        page_size: int,
        bulk_threshold: int,
        version: Callable[[str, dict[str, Any]], str],
        bulk_page_size: int = 2000,
        api_version: str = "2025-07",
    ) -> None:
        self.client = client
        self.page_size = page_size
        self.bulk_page_size = bulk_page_size
        self.bulk_threshold = bulk_threshold
        self.version = version
        self.shaper: shape.Shaper | None = None
        self.plans: dict[str, ReadPlan] = {}
        self.bulk_polls = 0
        self.api_version = api_version
        self.board = BulkBoard(client)  # every bulk operation of this run, polled together
        self.started: set[str] = set()  # operations this process started (no resume check needed)
        self._prepared: dict[str, ReadPlan] = {}  # plans ``prepare`` made, each for the read that follows it
        # Whether order reads carry refunds whole (their line items: node queries after the orders, ~1 point a
        # line at the plan's restore rate). ``select`` turns it off for a pipeline that maps no refund.
        self.refunds = True

    # ------------------------------------------------------------------ selection
    def select(self, entities: frozenset[str]) -> frozenset[str]:
        """Read for ``entities`` (``SelectsEntities``): without ``refund``, orders come with the order's own
        ``totalRefundedSet`` instead of their refunds, and no refund's line items are read. The entities left out."""
        self.refunds = "refund" in entities
        return frozenset() if self.refunds else frozenset({"refund"})

    def _node(self, stream: str) -> str:
        return shape.ORDER_WITHOUT_REFUNDS if stream == "orders" and not self.refunds else _NODE[stream]

    def _since_selection(self, stream: str, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """The state to read on from: none (from the beginning) when it was reached without refunds and refunds
        are selected now. Its orders were staged without them: only a read of every order brings them."""
        if stream == "orders" and self.refunds and _WITHOUT in (state or {}):
            log.info("read.selection_widened", stream=stream, now="refund", reading="every order again")
            return None
        return state

    # ------------------------------------------------------------------ the choice
    async def plan(self, stream: str, state: dict[str, Any] | None) -> ReadPlan:
        """Bulk or paged for the read ``state`` starts (one count query, which also gives the shop's zone)."""
        since = ReadState.parse(state).cursor
        document = f"""query Plan($q: String) {{ shop {{ ianaTimezone }}
          {_COUNT[stream]}(query: $q, limit: null) {{ count precision }} }}"""
        answer = await self.client.query(document, {"q": _filter(since)}, cost=2, label="count")
        self.shaper = shape.Shaper((answer.data.get("shop") or {}).get("ianaTimezone"))
        count = (answer.data.get(_COUNT[stream]) or {}).get("count")
        expected = int(count) if isinstance(count, int) else None
        mode = "bulk" if expected is None or expected > self.bulk_threshold else "paged"
        plan = self.plans[stream] = ReadPlan(stream, mode, expected)
        log.info("read.plan", stream=stream, mode=mode, expected=expected)
        return plan

    async def prepare(self, states: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
        """Plan the streams whose read starts now (one count query for all), start their bulk operations
        together where the version allows; the new state of each stream whose operation started, to be saved
        before any read. Streams continuing a saved read are left to ``read``."""
        states = {s: self._since_selection(s, st) for s, st in states.items()}
        fresh = [s for s, st in states.items() if (st or {}).get("read") is None and not (st or {}).get("bulk")]
        if not fresh:
            return {}
        cursors = {s: ReadState.parse(states[s]).cursor for s in fresh}
        params = ", ".join(f"$q{i}: String" for i in range(len(fresh)))
        counts = " ".join(f"c{i}: {_COUNT[s]}(query: $q{i}, limit: null) {{ count precision }}"
                          for i, s in enumerate(fresh))
        answer = await self.client.query(
            f"query Plan({params}) {{ shop {{ ianaTimezone }} {counts} }}",
            {f"q{i}": _filter(cursors[s]) for i, s in enumerate(fresh)}, cost=1 + len(fresh), label="count",
        )
        self.shaper = shape.Shaper((answer.data.get("shop") or {}).get("ianaTimezone"))
        for i, stream in enumerate(fresh):
            count = (answer.data.get(f"c{i}") or {}).get("count")
            expected = int(count) if isinstance(count, int) else None
            mode = "bulk" if expected is None or expected > self.bulk_threshold else "paged"
            self.plans[stream] = self._prepared[stream] = ReadPlan(stream, mode, expected)
            log.info("read.plan", stream=stream, mode=mode, expected=expected)
        bulk = [s for s in fresh if self.plans[s].mode == "bulk"][: concurrent_queries(self.api_version)]
        if not bulk:
            return {}
        documents = [bulk_query(s, cursors[s], node=self._node(s)) for s in bulk]
        ids = await self.board.start_many(documents) if len(bulk) > 1 else [await self._start_one(documents[0])]
        out: dict[str, dict[str, Any]] = {}
        for stream, job_id in zip(bulk, ids, strict=True):
            if job_id is not None:
                self.started.add(job_id)
                progress = {"id": job_id, "since": cursors[stream], "done": 0, "newest": None}
                out[stream] = self._tagged(stream, {"cursor": cursors[stream], "bulk": progress})
        return out

    def _tagged(self, stream: str, state: dict[str, Any]) -> dict[str, Any]:
        """A state of an orders read without refunds says so: a later run that selects them reads again."""
        return {**state, _WITHOUT: ["refund"]} if stream == "orders" and not self.refunds else state

    async def _start_one(self, document: str) -> str:
        return await start_job(BulkQueries(self.client, document, board=self.board))

    async def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        async for page in self._read(stream, self._since_selection(stream, state)):
            page.state = self._tagged(stream, page.state)
            yield page

    async def _read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        bulk = (state or {}).get("bulk")
        if isinstance(bulk, dict) and bulk.get("id"):
            self._prepared.pop(stream, None)
            await self._ensure_shaper()
            if stream not in self.plans or self.plans[stream].mode != "bulk":
                self.plans[stream] = ReadPlan(stream, "bulk", None)
            async for page in self._bulk(stream, state or {}, bulk):
                yield page
            return
        planned = self._prepared.pop(stream, None)
        if planned is None and (state or {}).get("read") is None:
            planned = await self.plan(stream, state)
        if planned is not None and planned.mode == "bulk" and (state or {}).get("read") is None:
            async for page in self._bulk(stream, state or {}, None):
                yield page
            return
        await self._ensure_shaper()
        self.plans.setdefault(stream, ReadPlan(stream, "paged", None))
        async for page in read_stream(self, stream, state, self.version):
            yield page

    async def _ensure_shaper(self) -> None:
        if self.shaper is None:
            answer = await self.client.query("{ shop { ianaTimezone } }", cost=1, label="shop")
            self.shaper = shape.Shaper((answer.data.get("shop") or {}).get("ianaTimezone"))

    # ------------------------------------------------------------------ bulk
    async def _bulk(
        self, stream: str, state: dict[str, Any], saved: dict[str, Any] | None
    ) -> AsyncIterator[SourcePage]:
        cursor = ReadState.parse(state).cursor
        since = saved.get("since") if saved else cursor
        expected = self.plans[stream].expected if stream in self.plans else None
        jobs = BulkQueries(self.client, bulk_query(stream, since, node=self._node(stream)), expected, board=self.board)
        outcome: BulkOutcome | None = None
        done = 0
        newest = saved.get("newest") if saved else None
        if saved and str(saved["id"]) in self.started:
            # Started by ``prepare`` in this process: wait for it like one just started.
            started = time.monotonic()
            outcome = await jobs.wait(str(saved["id"]), expected_rows=expected)
            log.info("read.bulk_finished", stream=stream, status=outcome.status, objects=outcome.object_count,
                     seconds=round(time.monotonic() - started, 2), polls=jobs.polls)
            if outcome.status != "COMPLETED":
                outcome = None  # failed or canceled: run it again from the same lower bound
            saved = None if outcome is None else saved
        elif saved:
            try:
                outcome = await resume_job(jobs, str(saved["id"]))
                done = int(saved.get("done") or 0)
                log.info("read.bulk_resume", stream=stream, id=saved["id"], done=done)
            except PermanentError:
                outcome = None  # the store no longer knows it (expired): run it again
            if outcome is not None and outcome.status != "COMPLETED":
                outcome, done = None, 0  # failed or canceled: run it again from the same lower bound
        if outcome is None:
            job_id = await start_job(jobs)
            progress = {"id": job_id, "since": since, "done": 0, "newest": newest}
            # Saved before anything else: a crash from here on finds this operation again.
            yield SourcePage([], {"cursor": cursor, "bulk": progress}, bool(saved))
            started = time.monotonic()
            outcome = await jobs.wait(job_id, expected_rows=expected)
            log.info("read.bulk_finished", stream=stream, status=outcome.status, objects=outcome.object_count,
                     seconds=round(time.monotonic() - started, 2), polls=jobs.polls)
        self.bulk_polls += jobs.polls
        async for page in self._bulk_pages(stream, jobs, outcome, since, cursor, done, newest):
            yield page

    async def _bulk_pages(
        self,
        stream: str,
        jobs: BulkQueries,
        outcome: BulkOutcome,
        since: str | None,
        cursor: str | None,
        done: int,
        newest: str | None,
    ) -> AsyncIterator[SourcePage]:
        """Pages of the result file. An order with refunds waits until a query's worth of refunds (the cost
        cap) waits, so their details take as few calls as they can; the state's ``done`` stops before the
        first one still waiting (a resume reads on from there; what it reads twice staging takes once)."""
        seen = 0
        ready: list[dict[str, Any]] = []
        waiting = _Waiting()
        async for node, children in _grouped(jobs.results(outcome)):
            seen += 1
            if seen <= done:
                continue  # staged before the crash
            if stream == "orders" and shape.refund_ids(node):
                waiting.add(seen, node, children)
                if waiting.cost >= MAX_COST - shape.refund_lines_cost(5):
                    ready += await self._orders_with_refunds(waiting.take())
            else:
                ready += await self._shape_all(stream, [(node, children)])
            if len(ready) >= self.bulk_page_size:
                newest = _newest(newest, (self.version(stream, r) for r in ready))
                progress = {"id": outcome.id, "since": since, "done": waiting.before(seen), "newest": newest}
                yield SourcePage(ready, {"cursor": cursor, "bulk": progress}, done > 0)
                ready = []
        ready += await self._orders_with_refunds(waiting.take())
        newest = _newest(newest, (self.version(stream, r) for r in ready))
        final = Progress(ORDERED, since, None, newest, read_start(_store_time(outcome.created_at)))
        yield SourcePage(ready, ReadState(moved_cursor(cursor, final)).as_json(), done > 0)

    async def _orders_with_refunds(
        self, groups: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        return await self._shape_all("orders", groups) if groups else []

    async def _shape_all(
        self, stream: str, groups: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        assert self.shaper is not None
        if stream == "customers":
            return [self.shaper.customer(node) for node, _ in groups]
        if stream == "products":
            return [self.shaper.product(node, children) for node, children in groups]
        wanted = [
            (rid, shape.refund_lines_bound(children)) for node, children in groups for rid in shape.refund_ids(node)
        ]
        details = await self.refund_details(wanted)
        return [self.shaper.order(node, children, details) for node, children in groups]

    # ------------------------------------------------------------------ paged (reader.PageReader)
    async def read_pages(
        self, stream: str, *, updated_at_min: str | None = None, resume_url: str | None = None
    ) -> AsyncIterator[ShopifyPage]:
        if resume_url:
            try:
                where = orjson.loads(resume_url)
                query, after = where["q"], where["after"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise PermanentError("saved page position is not one this reader wrote") from exc
        else:
            query, after = _filter(updated_at_min), None
        first = self._page_size(stream)
        while True:
            answer = await self.client.query(
                page_query(stream, node=self._node(stream)),
                {"q": query, "after": after, "first": first},
                cost=2 + first * _NODE_COST[stream],
                label=stream,
            )
            connection = answer.data.get(_ROOT[stream]) or {}
            groups = [(node, await self._children(stream, node)) for node in shape.nodes(connection)]
            info = connection.get("pageInfo") or {}
            after = info.get("endCursor")
            more = bool(info.get("hasNextPage")) and after is not None
            next_url = orjson.dumps({"q": query, "after": after}).decode() if more else None
            yield ShopifyPage(await self._shape_all(stream, groups), next_url, _store_time(answer.server_time))
            if not more:
                return

    def _page_size(self, stream: str) -> int:
        return max(1, min(self.page_size, (MAX_COST - 2) // _NODE_COST[stream]))

    async def _children(self, stream: str, node: dict[str, Any]) -> list[dict[str, Any]]:
        """A node's nested connection, all of it: the page came with its first ones, the rest is read here."""
        child = _CHILD[stream]
        if child is None:
            return []
        name, selection, _ = child
        connection = node.get(name) or {}
        items = shape.nodes(connection)
        info = connection.get("pageInfo") or {}
        after = info.get("endCursor")
        while info.get("hasNextPage") and after:
            document = f"""query More($id: ID!, $after: String) {{ node(id: $id) {{ ... on {_CHILD_TYPE[stream]} {{
              {name}(first: 50, after: $after) {{ pageInfo {{ hasNextPage endCursor }}
              nodes {{ {selection} }} }} }} }} }}"""
            answer = await self.client.query(
                document, {"id": node["id"], "after": after}, cost=2 + 50 * 9, label=stream
            )
            connection = (answer.data.get("node") or {}).get(name) or {}
            items += shape.nodes(connection)
            info = connection.get("pageInfo") or {}
            after = info.get("endCursor")
        return items

    async def refund_details(self, wanted: list[tuple[str, int]]) -> dict[Any, dict[str, Any]]:
        """Each refund's line items, by refund gid. ``wanted``: (refund gid, lines of its order), the most it
        can have; a refund with more (never seen) is read again alone with a full page."""
        out: dict[Any, dict[str, Any]] = {}
        batch: list[tuple[str, int]] = []
        for item in [*wanted, None]:
            cost = sum(shape.refund_lines_cost(n) for _, n in batch)
            if item is None or (batch and cost + shape.refund_lines_cost(item[1]) > MAX_COST):
                if batch:
                    out.update(await self._refund_batch(batch, cost))
                batch = []
            if item is not None:
                batch.append(item)
        short = [
            (rid, 250)
            for rid, node in out.items()
            if (node.get("refundLineItems") or {}).get("pageInfo", {}).get("hasNextPage")
        ]
        for item in short:
            out.update(await self._refund_batch([item], shape.refund_lines_cost(250)))
        return out

    async def _refund_batch(self, batch: list[tuple[str, int]], cost: int) -> dict[Any, dict[str, Any]]:
        params = ", ".join(f"$r{i}: ID!" for i in range(len(batch)))
        fields = " ".join(
            f"r{i}: node(id: $r{i}) {{ ... on Refund {{ id refundLineItems(first: {n}) {{ {shape.REFUND_LINES} }} }} }}"
            for i, (_, n) in enumerate(batch)
        )
        variables = {f"r{i}": rid for i, (rid, _) in enumerate(batch)}
        answer = await self.client.query(
            f"query Refunds({params}) {{ {fields} }}", variables, cost=cost, label="refunds"
        )
        return {node["id"]: node for node in answer.data.values() if isinstance(node, dict) and node.get("id")}

    # ------------------------------------------------------------------ one record
    async def fetch(self, stream: str, key: str) -> dict[str, Any] | None:
        await self._ensure_shaper()
        kind = {"customers": "Customer", "products": "Product", "orders": "Order"}[stream]
        child = _CHILD[stream]
        nested = (
            ""
            if child is None
            else (f"{child[0]}(first: {child[2]}) {{ pageInfo {{ hasNextPage endCursor }} nodes {{ {child[1]} }} }}")
        )
        document = f"query One($id: ID!) {{ node(id: $id) {{ ... on {kind} {{ {self._node(stream)} {nested} }} }} }}"
        answer = await self.client.query(
            document, {"id": f"gid://shopify/{kind}/{key}"}, cost=_NODE_COST[stream], label=stream
        )
        node = answer.data.get("node")
        if not isinstance(node, dict) or not node.get("id"):
            return None
        return (await self._shape_all(stream, [(node, await self._children(stream, node))]))[0]


def page_query(stream: str, *, node: str | None = None) -> str:
    """A page of ``stream``'s nodes (``node``: their selection, the stream's whole one by default)."""
    child = _CHILD[stream]
    nested = (
        ""
        if child is None
        else (f"{child[0]}(first: {child[2]}) {{ pageInfo {{ hasNextPage endCursor }} nodes {{ {child[1]} }} }}")
    )
    return f"""query Page($q: String, $after: String, $first: Int!) {{
  {_ROOT[stream]}(first: $first, after: $after, sortKey: UPDATED_AT, query: $q) {{
    pageInfo {{ hasNextPage endCursor }} nodes {{ {node or _NODE[stream]} {nested} }} }} }}"""


def bulk_query(stream: str, since: str | None, *, node: str | None = None) -> str:
    """The bulk operation's query: the stream's nodes (and nested connection) changed since ``since`` (``node``:
    their selection, the stream's whole one by default)."""
    child = _CHILD[stream]
    nested = "" if child is None else f"{child[0]} {{ edges {{ node {{ __typename {child[1]} }} }} }}"
    where = _filter(since)
    args = "sortKey: UPDATED_AT" + (f", query: {orjson.dumps(where).decode()}" if where else "")
    return f"{{ {_ROOT[stream]}({args}) {{ edges {{ node {{ __typename {node or _NODE[stream]} {nested} }} }} }} }}"


def _filter(since: str | None) -> str | None:
    """Shopify's search filter for "changed at or after ``since``" (inclusive: the never-skip rule's bound)."""
    return f"updated_at:>='{since}'" if since else None


async def _grouped(
    batches: AsyncIterator[list[Any]],
) -> AsyncIterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each top-level object with its nested lines. Grouped output (``groupObjects: true``) puts a parent's
    children right after it, so one parent at a time is held."""
    parent: dict[str, Any] | None = None
    children: list[dict[str, Any]] = []
    async for batch in batches:
        for line in batch:
            if not isinstance(line, dict):
                continue
            owner = line.get("__parentId")
            if owner is None:
                if parent is not None:
                    yield parent, children
                parent, children = line, []
            elif parent is not None and owner == parent.get("id"):
                children.append(line)
            else:
                raise PermanentError(f"bulk result: a nested object of {owner} is not under its parent")
    if parent is not None:
        yield parent, children


class _Waiting:
    """Orders of a bulk read waiting for their refunds' details, with the cost of asking for them."""

    def __init__(self) -> None:
        self.groups: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self.first: int | None = None  # position in the file of the first one waiting
        self.cost = 0

    def add(self, position: int, node: dict[str, Any], children: list[dict[str, Any]]) -> None:
        if self.first is None:
            self.first = position
        self.groups.append((node, children))
        self.cost += sum(shape.refund_lines_cost(shape.refund_lines_bound(children)) for _ in shape.refund_ids(node))

    def take(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        groups, self.groups, self.first, self.cost = self.groups, [], None, 0
        return groups

    def before(self, seen: int) -> int:
        """Top-level objects done for good: all seen, or those before the first one still waiting."""
        return seen if self.first is None else self.first - 1


def _newest(current: str | None, versions: Any) -> str | None:
    best = max(versions, default=None)
    if best is None or (current is not None and current >= best):
        return current
    return str(best)


def _store_time(value: str | None) -> str | None:
    """A Date header or a DateTime, as ``YYYY-MM-DDTHH:MM:SSZ``."""
    if not value:
        return None
    if "T" in value:
        return value
    try:
        return parsedate_to_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return None
