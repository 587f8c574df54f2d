"""A Shopify stream read over the GraphQL Admin API: Bulk Operations when much changed, else cost-paced pages.

Which one: a count query (``ordersCount(query: "updated_at:>='…'")``) against ``bulk_threshold``. Both give
records in the REST raw shape (``gql_shape``), so ``normalize.py`` stays the one normalizer.

``prepare_reads`` plans every stream of a run at once before the first is read: one count query with an
aliased count per stream, then the bulk operations of every stream that needs one started together in one
request where the API version lets several run at once (2026-01 and later: five; a large stream takes the
free slots as several operations over id ranges, ``gql_split``), else the first one. Each started
operation's id goes into that stream's state, which the engine saves before any read: a crash from there on
finds the operations again instead of starting them twice.

Paged reads are ``reader.read_stream`` over this class as its ``PageReader``: updated_at order, keyset
cursors, the same never-skip rule and clock-margin cursor as the REST read. A page's "next link" is the
query's filter and the page's ``endCursor``.

A bulk read runs one operation through ``ferry.connectors.jobs`` and streams its JSONL in pages of
``page_size`` top-level objects. Its state (``{"cursor", "bulk": {"id", "since", "done", "newest"}}``) is
saved with each page, the first one (empty) right after the operation is created: a restarted run finds the
operation by id, waits for it if it still runs, skips the objects already staged, and never starts a second
one. The cursor after a bulk read stops at the operation's start less the clock margin: a change committed
while it ran is at least that new, so the next read meets it. A split read does the same part by part, in
range order (its state then also lists every part, the current one and the earliest start: ``gql_split``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import structlog

from ferry.connectors.jobs import resume_job, start_job
from ferry.connectors.shopify import gql_shape as shape
from ferry.connectors.shopify.gql_bulk import (
    BulkBoard,
    BulkOutcome,
    BulkQueries,
    concurrent_queries,
    running_field,
)
from ferry.connectors.shopify.gql_client import ShopifyGraphQL
from ferry.connectors.shopify.gql_split import BulkProgress, Part, id_ranges, legacy_id, share_slots
from ferry.connectors.shopify.normalize import mark_unsettled
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
    # A bulk read's operations, each an id range (``gql_split``); [None]: one operation over the whole stream.
    ranges: list[str | None] = field(default_factory=lambda: [None])

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": self.stream, "mode": self.mode, "expected": self.expected}
        if len(self.ranges) > 1:
            out["operations"] = len(self.ranges)
        return out


@dataclass(slots=True)
class _Count:
    expected: int | None
    first_id: int | None = None  # smallest and largest matching id (asked when a split is possible)
    last_id: int | None = None


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
        streams: Sequence[str] = (),
        bulk_split_min: int = 2500,
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
        self.streams = tuple(streams)  # the run's streams: each read in bulk holds one of the shop's slots
        self.bulk_split_min = bulk_split_min  # fewest records per operation of a split stream
        self.board = BulkBoard(client)  # every bulk operation of this run, polled together
        self.started: set[str] = set()  # operations this process started (no resume check needed)
        self.running: list[dict[str, Any]] = []  # the app's operations holding slots, as the last count saw them
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
        """Bulk or paged for the read ``state`` starts (one count query, which also gives the shop's zone). A bulk
        read may split (``gql_split``): this stream gets the slots the run's other streams leave, one each."""
        since = ReadState.parse(state).cursor
        count = (await self._count({stream: since}))[stream]
        others = sum(1 for s in self.streams if s != stream)
        return self._plan(stream, count, concurrent_queries(self.api_version) - others)

    async def _count(self, cursors: dict[str, str | None]) -> dict[str, _Count]:
        """One request: per stream its changed records since its cursor and, where the version lets a read
        split, the smallest and largest matching id (``first: 1`` sorted by id, each way)."""
        streams = list(cursors)
        splits = concurrent_queries(self.api_version) > 1
        params = ", ".join(f"$q{i}: String" for i in range(len(streams)))
        fields = []
        for i, s in enumerate(streams):
            fields.append(f"c{i}: {_COUNT[s]}(query: $q{i}, limit: null) {{ count precision }}")
            if splits:
                for alias, reverse in (("f", "false"), ("l", "true")):
                    fields.append(f"{alias}{i}: {_ROOT[s]}(first: 1, sortKey: ID, reverse: {reverse}, query: $q{i}) "
                                  f"{{ nodes {{ id }} }}")
        # The same request lists the app's bulk query operations that hold the shop's slots: ``prepare`` adopts
        # one a killed run started but never saved, instead of starting it twice (no extra call).
        fields.append(f"running: {running_field(self.api_version)}")
        answer = await self.client.query(
            f"query Plan({params}) {{ shop {{ ianaTimezone }} {' '.join(fields)} }}",
            {f"q{i}": _filter(cursors[s]) for i, s in enumerate(streams)},
            cost=3 + len(streams) * (5 if splits else 1), label="count",
        )
        self.shaper = shape.Shaper((answer.data.get("shop") or {}).get("ianaTimezone"))
        self.running = self.board.note_running(answer.data)
        out: dict[str, _Count] = {}
        for i, stream in enumerate(streams):
            count = (answer.data.get(f"c{i}") or {}).get("count")
            expected = int(count) if isinstance(count, int) else None
            out[stream] = _Count(expected, _edge_id(answer.data, f"f{i}"), _edge_id(answer.data, f"l{i}"))
        return out

    def _mode(self, expected: int | None) -> str:
        return "bulk" if expected is None or expected > self.bulk_threshold else "paged"

    def _plan(self, stream: str, count: _Count, slots: int) -> ReadPlan:
        """The stream's plan, a bulk read split over up to ``slots`` operations."""
        expected = count.expected
        mode = self._mode(expected)
        parts = share_slots({stream: expected}, slots, self.bulk_split_min)[stream] if mode == "bulk" else 1
        plan = self.plans[stream] = ReadPlan(stream, mode, expected, id_ranges(count.first_id, count.last_id, parts))
        log.info("read.plan", stream=stream, mode=mode, expected=expected, operations=len(plan.ranges))
        return plan

    async def prepare(self, states: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
        """Plan the streams whose read starts now (one count query for all), start their bulk operations
        together where the version allows (a large stream as several, ``gql_split``); the new state of each
        stream whose operations started, to be saved before any read. Streams continuing a saved read are left
        to ``read`` (their operations still hold slots)."""
        states = {s: self._since_selection(s, st) for s, st in states.items()}
        fresh = [s for s, st in states.items() if (st or {}).get("read") is None and not (st or {}).get("bulk")]
        if not fresh:
            return {}
        cursors = {s: ReadState.parse(states[s]).cursor for s in fresh}
        counts = await self._count(cursors)
        held = sum(_slots_held((st or {}).get("bulk")) for s, st in states.items() if s not in fresh)
        slots = concurrent_queries(self.api_version) - held
        bulk = [s for s in fresh if self._mode(counts[s].expected) == "bulk"]
        shares = share_slots({s: counts[s].expected for s in bulk}, slots, self.bulk_split_min)
        for stream in fresh:
            self._prepared[stream] = self._plan(stream, counts[stream], shares.get(stream, 1))
        # No free slot (saved reads' operations hold them all): each read starts its own when its turn comes.
        wanted = [(s, i) for s in bulk for i in range(len(self.plans[s].ranges))][: max(0, slots)]
        if not wanted:
            return {}
        documents = [self._bulk_document(s, cursors[s], self.plans[s].ranges[i]) for s, i in wanted]
        progress = {s: self._new_progress(s, cursors[s]) for s in bulk}
        adopted = self._adopt(documents)
        for j, job_id in adopted.items():
            stream, i = wanted[j]
            progress[stream].parts[i].id = job_id
        # Every operation still running holds a slot (saved reads', adopted ones, and any other of the app's):
        # start no more than are free, or the shop refuses the rest. Those start when their read's turn comes.
        free = concurrent_queries(self.api_version) - len(self.running)
        starting = [j for j in range(len(wanted)) if j not in adopted][: max(0, free)]
        ids: list[str | None] = []
        if len(starting) > 1:
            ids = await self.board.start_many([documents[j] for j in starting])
        elif starting:
            ids = [await self._start_one(documents[starting[0]])]
        for j, started in zip(starting, ids, strict=True):
            if started is not None:
                stream, i = wanted[j]
                self.started.add(started)
                progress[stream].parts[i].id = started
        return {
            s: self._tagged(s, {"cursor": cursors[s], "bulk": p.as_json()})
            for s, p in progress.items()
            if any(x.id for x in p.parts)
        }

    def _adopt(self, documents: list[str]) -> dict[int, str]:
        """Operations of the app still running that run one of ``documents`` (a run killed between starting them
        and saving their ids left them; the read state it resumes from builds the same documents): by the
        document's index, their ids. They are read as resumed ones, never started a second time."""
        by_query = {str(op.get("query", "")).strip(): str(op["id"]) for op in self.running}
        adopted = {j: by_query.pop(d.strip()) for j, d in enumerate(documents) if d.strip() in by_query}
        for job_id in adopted.values():
            log.info("bulk.adopt_running", id=job_id)
        return adopted

    def _new_progress(self, stream: str, cursor: str | None) -> BulkProgress:
        ranges = self.plans[stream].ranges if stream in self.plans else [None]
        return BulkProgress(cursor, [Part(None, r) for r in ranges])

    def _bulk_document(self, stream: str, since: str | None, id_range: str | None) -> str:
        """One bulk operation's query in the selection's shape (orders without refunds when none is mapped)."""
        return bulk_query(stream, since, id_range, node=self._node(stream))

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
        if isinstance(bulk, dict) and (bulk.get("id") or bulk.get("parts")):
            self._prepared.pop(stream, None)
            await self._ensure_shaper()
            if stream not in self.plans or self.plans[stream].mode != "bulk":
                self.plans[stream] = ReadPlan(stream, "bulk", None)
            async for page in self._bulk(stream, state or {}, BulkProgress.from_json(bulk)):
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
        self, stream: str, state: dict[str, Any], saved: BulkProgress | None
    ) -> AsyncIterator[SourcePage]:
        """Each operation of the read (one, or one per id range) in range order: found again, waited for, or
        started; then its result file in pages. Every operation known is tracked on the board first, so one
        poll answers for all of them."""
        cursor = ReadState.parse(state).cursor
        progress = saved if saved is not None else self._new_progress(stream, cursor)
        progress.resumed = saved is not None and any(p.id not in self.started for p in saved.parts if p.id)
        for part in progress.parts:
            if part.id is not None:
                self.board.track(part.id)
        expected = self.plans[stream].expected if stream in self.plans else None
        share = None if expected is None else -(-expected // len(progress.parts))
        missing = [p for p in progress.parts[progress.part + 1 :] if p.id is None]
        if missing and progress.current.id is None:
            # Not started ahead (no ``prepare``, or no slot then): start them together, as ``prepare`` does;
            # one Shopify refuses for want of a slot starts alone when its turn comes.
            ids = await self.board.start_many(
                [self._bulk_document(stream, progress.since, p.range) for p in [progress.current, *missing]]
            )
            for part, job_id in zip([progress.current, *missing], ids, strict=True):
                if job_id is not None:
                    part.id = job_id
                    self.started.add(job_id)
            if any(ids):  # saved before anything else: a crash from here on finds these operations again
                yield SourcePage([], {"cursor": cursor, "bulk": progress.as_json()}, progress.resumed)
        while True:
            part = progress.current
            document = self._bulk_document(stream, progress.since, part.range)
            jobs = BulkQueries(self.client, document, share, board=self.board)
            outcome = None if part.id is None else await self._known(stream, jobs, part.id, share)
            if outcome is None:
                progress.done = 0  # run it again, from the same lower bound
                part.id = await start_job(jobs)
                self.started.add(part.id)
                # Saved before anything else: a crash from here on finds this operation again.
                yield SourcePage([], {"cursor": cursor, "bulk": progress.as_json()}, progress.resumed)
                outcome = await self._waited(stream, jobs, part.id, share)
            progress.saw_start(outcome.created_at)
            async for page in self._bulk_pages(stream, jobs, outcome, progress, cursor):
                yield page
            if progress.last:
                self.bulk_polls += jobs.polls
                return
            self.bulk_polls += jobs.polls
            progress.next_part()

    async def _known(self, stream: str, jobs: BulkQueries, job_id: str, expected: int | None) -> BulkOutcome | None:
        """The outcome of an operation already started; None when it must run again (failed, canceled, or
        no longer known to the store)."""
        outcome: BulkOutcome | None
        if job_id in self.started:  # started in this process: wait for it like one just started
            outcome = await self._waited(stream, jobs, job_id, expected)
        else:
            try:
                outcome = await resume_job(jobs, job_id)
            except PermanentError:
                return None  # the store no longer knows it (expired): run it again
            log.info("read.bulk_resume", stream=stream, id=job_id)
        return outcome if outcome is not None and outcome.status == "COMPLETED" else None

    async def _waited(self, stream: str, jobs: BulkQueries, job_id: str, expected: int | None) -> BulkOutcome:
        started = time.monotonic()
        outcome = await jobs.wait(job_id, expected_rows=expected)
        log.info("read.bulk_finished", stream=stream, id=job_id, status=outcome.status,
                 objects=outcome.object_count, seconds=round(time.monotonic() - started, 2), polls=jobs.polls)
        return outcome

    async def _bulk_pages(
        self, stream: str, jobs: BulkQueries, outcome: BulkOutcome, progress: BulkProgress, cursor: str | None
    ) -> AsyncIterator[SourcePage]:
        """Pages of one operation's result file. An order with refunds waits until a query's worth of refunds
        (the cost cap) waits, so their details take as few calls as they can; the state's ``done`` stops before
        the first one still waiting (a resume reads on from there; what it reads twice staging takes once). The
        file's last page says where the read goes on: the next operation's file, or (the last) the moved cursor."""
        seen = 0
        done = progress.done
        resumed = progress.resumed
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
                progress.newest = _newest(progress.newest, (self.version(stream, r) for r in ready))
                _mark_unsettled(stream, ready, progress.started)
                progress.done = waiting.before(seen)
                yield SourcePage(ready, {"cursor": cursor, "bulk": progress.as_json()}, resumed)
                ready = []
        ready += await self._orders_with_refunds(waiting.take())
        progress.newest = _newest(progress.newest, (self.version(stream, r) for r in ready))
        _mark_unsettled(stream, ready, progress.started)
        if not progress.last:
            yield SourcePage(ready, {"cursor": cursor, "bulk": progress.next_json()}, resumed)
            return
        final = Progress(ORDERED, progress.since, None, progress.newest, read_start(_store_time(progress.started)))
        yield SourcePage(ready, ReadState(moved_cursor(cursor, final)).as_json(), resumed)

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


def bulk_query(stream: str, since: str | None, id_range: str | None = None, *, node: str | None = None) -> str:
    """The bulk operation's query: the stream's nodes (and nested connection) changed since ``since``, within
    ``id_range`` (search terms, ``gql_split``) when the read is split (``node``: their selection, the stream's
    whole one by default)."""
    child = _CHILD[stream]
    nested = "" if child is None else f"{child[0]} {{ edges {{ node {{ __typename {child[1]} }} }} }}"
    where = " ".join(t for t in (_filter(since), id_range) if t) or None
    args = "sortKey: UPDATED_AT" + (f", query: {orjson.dumps(where).decode()}" if where else "")
    return f"{{ {_ROOT[stream]}({args}) {{ edges {{ node {{ __typename {node or _NODE[stream]} {nested} }} }} }} }}"


def _edge_id(data: dict[str, Any], alias: str) -> int | None:
    """The numeric id of the one node a ``first: 1`` connection answered, if any."""
    nodes = (data.get(alias) or {}).get("nodes") or []
    return legacy_id(nodes[0].get("id")) if nodes and isinstance(nodes[0], dict) else None


def _slots_held(saved: Any) -> int:
    """Operations a saved bulk read may still have running: its current one and those after it."""
    if not isinstance(saved, dict):
        return 0
    progress = BulkProgress.from_json(saved)
    return sum(1 for p in progress.parts[progress.part :] if p.id)


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


def _mark_unsettled(stream: str, records: list[dict[str, Any]], started: str | None) -> None:
    """A bulk operation's records were taken no earlier than its createdAt (``started``: the earliest of the
    operations read so far): those stamped within the settle window before it are unsettled, seen then."""
    when = _store_time(started)
    seen = None  # now, when the operation's createdAt is unknown
    if when:
        with contextlib.suppress(ValueError):
            seen = dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    mark_unsettled(stream, records, seen=seen)


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
