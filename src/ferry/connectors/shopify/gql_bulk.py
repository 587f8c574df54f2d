"""Shopify Bulk Operations (queries) as a ``ferry.connectors.jobs.JobApi``: run, poll, stream the JSONL.

Before API version 2026-01 one bulk query runs at a time per shop and app; from 2026-01 up to five
(``concurrent_queries``). ``start_many`` starts several in one request (aliased mutations) where the version
allows. ``create`` that meets the slots taken adopts an operation in progress that runs this very query (a run
killed between starting it and saving its id left it), and otherwise waits for the oldest to end. The reader's
``prepare`` lists those operations first (``running_field``, in its count request) so it adopts them instead
of starting duplicates that the shop would refuse for want of a slot.

Every operation of a read is polled through one ``BulkBoard``: a poll is one ``nodes(ids:)`` query answering
for all those still running, so waiting for the customers' operation also learns the products' and orders'
state, and a later wait on an operation already seen finished costs no call. Polls are spaced by the
operation's own progress (root objects done per second, against the expected count), so a long operation
costs a few polls, not one every second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from ferry.connectors.jobs import JobPhase
from ferry.connectors.shopify.gql_client import ShopifyGraphQL
from ferry.errors import PermanentError, TransientError

log = structlog.get_logger("ferry.connectors.shopify.bulk")

_FIELDS = "id status errorCode createdAt objectCount rootObjectCount url partialDataUrl query"
RUN = f"""mutation Run($query: String!) {{ bulkOperationRunQuery(query: $query, groupObjects: true) {{
  bulkOperation {{ {_FIELDS} }} userErrors {{ code field message }} }} }}"""
POLL_MANY = f"query Polls($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on BulkOperation {{ {_FIELDS} }} }} }}"
# The app's query operations that hold a slot (API 2026-01+: ``bulkOperations``; newest first, at most five run).
RUNNING_FILTER = "operation_type:query AND (status:created OR status:running OR status:canceling)"
RUNNING_FIELD = f"bulkOperations(first: 10, query: {orjson.dumps(RUNNING_FILTER).decode()}) {{ nodes {{ {_FIELDS} }} }}"
CANCEL = "mutation Cancel($id: ID!) { bulkOperationCancel(id: $id) { userErrors { field message } } }"
ACTIVE = frozenset({"CREATED", "RUNNING", "CANCELING"})
MIN_POLL, MAX_POLL = 0.25, 30.0
# The first poll of an operation that has not shown progress yet: early enough for a small one, late enough
# that the pace it shows (root objects done per second) predicts the end (a poll at 0.25 s sees the start-up,
# and a pace taken from it overshoots the end several times over).
FIRST_POLL = 1.0


def concurrent_queries(api_version: str) -> int:
    """Bulk query operations one app may run at once on a shop (shopify.dev, bulk-operations/queries: "In API
    versions 2026-01 and higher apps can run up to five bulk query operations at a time per shop")."""
    return 5 if api_version == "unstable" or api_version >= "2026-01" else 1


def running_field(api_version: str) -> str:
    """The query field that lists the app's bulk query operations holding a slot: ``bulkOperations`` from 2026-01
    (``currentBulkOperation`` is deprecated there, and names only the latest of up to five), before it
    ``currentBulkOperation`` (the latest: the only one that can run). Read with ``running_ops``."""
    if concurrent_queries(api_version) > 1:
        return RUNNING_FIELD
    return f"currentBulkOperation(type: QUERY) {{ {_FIELDS} }}"


def running_ops(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The operations still active in an answer to ``running_field`` (aliased ``running``), oldest first."""
    found = data.get("running")
    ops = (found.get("nodes") or []) if isinstance(found, dict) and "nodes" in found else [found]
    active = [op for op in ops if isinstance(op, dict) and op.get("status") in ACTIVE
              and op.get("type", "QUERY") == "QUERY"]
    return sorted(active, key=lambda op: str(op.get("createdAt") or ""))


def run_many(count: int) -> str:
    """One request starting ``count`` bulk queries: aliased ``bulkOperationRunQuery`` fields, ``$q0``...``$qN``
    (a mutation document may hold several root fields; each costs 10 points)."""
    params = ", ".join(f"$q{i}: String!" for i in range(count))
    fields = " ".join(
        f"b{i}: bulkOperationRunQuery(query: $q{i}, groupObjects: true) {{ bulkOperation {{ {_FIELDS} }} "
        f"userErrors {{ code field message }} }}"
        for i in range(count)
    )
    return f"mutation RunMany({params}) {{ {fields} }}"


class BulkBoard:
    """The state of every bulk operation one read knows, polled together (see the module docstring)."""

    def __init__(self, client: ShopifyGraphQL) -> None:
        self.client = client
        self.views: dict[str, dict[str, Any] | None] = {}
        self.seen_at: dict[str, float] = {}  # when each view was read (monotonic)
        self.began: dict[str, float] = {}  # when this process started (or first met) each operation
        self.polls = 0  # poll requests made (each answers for every operation still running)

    def track(self, job_id: str, view: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        self.began.setdefault(job_id, now)
        if view is not None or job_id not in self.views:
            self.views[job_id] = view
            self.seen_at[job_id] = now

    def finished(self, job_id: str) -> dict[str, Any] | None:
        """The operation's last seen state when it had ended then (no call needed), else None."""
        view = self.views.get(job_id)
        return view if view is not None and view.get("status") not in ACTIVE else None

    async def poll(self, job_id: str) -> dict[str, Any]:
        """One ``nodes(ids:)`` query for ``job_id`` and every other tracked operation still running."""
        self.track(job_id)
        ids = [job_id] + [i for i, v in self.views.items() if i != job_id and (v is None or v["status"] in ACTIVE)]
        self.polls += 1
        answer = await self.client.query(POLL_MANY, {"ids": ids}, cost=len(ids), label="bulk_poll")
        now = time.monotonic()
        for ident, node in zip(ids, answer.data.get("nodes") or [], strict=False):
            if isinstance(node, dict) and "status" in node:
                self.views[ident], self.seen_at[ident] = node, now
        log.debug("bulk.polled", ops={i: (v or {}).get("status") for i, v in self.views.items()})
        view = self.views.get(job_id)
        if view is None:
            raise PermanentError(f"bulk operation {job_id} is unknown to the store")
        return view

    async def running(self, api_version: str) -> list[dict[str, Any]]:
        """The app's bulk query operations holding the shop's slots now, oldest first (tracked on the board)."""
        answer = await self.client.query(f"query Running {{ running: {running_field(api_version)} }}", cost=2,
                                         label="bulk_poll")
        return self.note_running(answer.data)

    def note_running(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The active operations of an answer to ``running_field`` (aliased ``running``), tracked on the board."""
        ops = running_ops(data)
        for op in ops:
            self.track(str(op["id"]), op)
        return ops

    async def start_many(self, documents: list[str]) -> list[str | None]:
        """Start ``documents`` in one request; per document its operation id, or None when Shopify refused it
        (the read then starts it alone, which waits for a free slot)."""
        answer = await self.client.query(
            run_many(len(documents)), {f"q{i}": d for i, d in enumerate(documents)},
            cost=10 * len(documents), label="bulk_run",
        )
        ids: list[str | None] = []
        for i in range(len(documents)):
            payload = answer.data.get(f"b{i}") or {}
            op = payload.get("bulkOperation")
            if payload.get("userErrors") or not isinstance(op, dict):
                log.info("bulk.start_refused", errors=payload.get("userErrors"))
                ids.append(None)
                continue
            self.track(str(op["id"]), op)
            ids.append(str(op["id"]))
        return ids


@dataclass(slots=True)
class BulkOutcome:
    id: str
    status: str
    created_at: str | None
    url: str | None
    error_code: str | None
    object_count: int


class BulkQueries:
    """The job API of one bulk query (``document``), for about ``expected_roots`` top-level objects."""

    def __init__(
        self,
        client: ShopifyGraphQL,
        document: str,
        expected_roots: int | None = None,
        board: BulkBoard | None = None,
    ) -> None:
        self.client = client
        self.document = document
        self.expected_roots = expected_roots
        self.board = board if board is not None else BulkBoard(client)
        self.polls = 0

    async def create(self) -> str:
        while True:
            answer = await self.client.query(RUN, {"query": self.document}, cost=10, label="bulk_run")
            payload = answer.data.get("bulkOperationRunQuery") or {}
            errors = payload.get("userErrors") or []
            op = payload.get("bulkOperation")
            if not errors and isinstance(op, dict):
                self.board.track(str(op["id"]), op)
                return str(op["id"])
            if not any(e.get("code") == "OPERATION_IN_PROGRESS" for e in errors):
                raise PermanentError(f"bulkOperationRunQuery refused: {errors[0].get('message') if errors else op}")
            running = await self.board.running(self.client.config.api_version)
            same = next((op for op in running if op.get("query", "").strip() == self.document.strip()), None)
            if same is not None:
                log.info("bulk.adopt_running", id=same["id"])  # our own, left by a run that crashed
                return str(same["id"])
            # Other queries of this app hold the shop's slots: wait for the oldest to end.
            await self.wait(str(running[0]["id"])) if running else await asyncio.sleep(1.0)

    async def upload(self, job_id: str, body: Any) -> None:
        raise PermanentError("a bulk query takes no data")

    async def close(self, job_id: str) -> None:
        return None  # a bulk query starts on its own

    async def phase(self, job_id: str) -> JobPhase:
        op = await self._poll(job_id)
        return JobPhase.RUNNING if op["status"] in ACTIVE else JobPhase.DONE

    async def wait(self, job_id: str, *, expected_rows: int | None = None, immediate: bool = False) -> BulkOutcome:
        self.board.track(job_id)
        seen = self.board.views.get(job_id)
        if self.board.finished(job_id) is not None and seen is not None:
            return _outcome(seen)  # a poll for another operation already saw this one end
        if immediate:
            pause = 0.0
        elif seen is not None and int(seen.get("rootObjectCount") or 0):
            pause = self._pause_after(job_id, seen, expected_rows)  # a poll for another one saw it progress
        else:
            pause = FIRST_POLL
        while True:
            if pause:
                await asyncio.sleep(pause)
            op = await self._poll(job_id)
            if op["status"] not in ACTIVE:
                return _outcome(op)
            pause = self._pause_after(job_id, op, expected_rows)

    def _pause_after(self, job_id: str, op: dict[str, Any], expected: int | None) -> float:
        """Until the operation should be done at the pace its last seen state shows, less the time since."""
        began = self.board.began.get(job_id, time.monotonic())
        seen_at = self.board.seen_at.get(job_id, time.monotonic())
        pause = self._next_pause(op, seen_at - began, expected)
        return max(MIN_POLL, pause - (time.monotonic() - seen_at))

    def results(self, outcome: BulkOutcome) -> AsyncIterator[list[Any]]:
        return self.lines(outcome)

    async def lines(self, outcome: BulkOutcome) -> AsyncIterator[list[Any]]:
        """The result file's objects in batches of 1,000 lines, each parsed; none when nothing matched."""
        if outcome.status != "COMPLETED":
            raise TransientError(f"bulk operation {outcome.id} ended {outcome.status} ({outcome.error_code})")
        if outcome.url is None:
            return
        batch: list[Any] = []
        async for line in self.client.lines(outcome.url):
            batch.append(orjson.loads(line))
            if len(batch) >= 1000:
                yield batch
                batch = []
        if batch:
            yield batch

    async def abort(self, job_id: str) -> None:
        await self.client.query(CANCEL, {"id": job_id}, cost=10, label="bulk_cancel")

    async def _poll(self, job_id: str) -> dict[str, Any]:
        seen = self.board.finished(job_id)
        if seen is not None:
            return seen  # a poll for another operation already saw this one end
        self.polls += 1
        return await self.board.poll(job_id)

    def _next_pause(self, op: dict[str, Any], elapsed: float, expected: int | None) -> float:
        """Until the operation should be done at the pace it shows (a little after), within bounds."""
        done = int(op.get("rootObjectCount") or 0)
        expected = expected or self.expected_roots
        if not done or not expected or elapsed <= 0:
            return min(MAX_POLL, max(MIN_POLL, elapsed or MIN_POLL))
        remaining = max(expected - done, 0) / (done / elapsed)
        return min(MAX_POLL, max(MIN_POLL, remaining * 1.1 + MIN_POLL))


def _outcome(op: dict[str, Any]) -> BulkOutcome:
    return BulkOutcome(
        str(op["id"]),
        str(op["status"]),
        op.get("createdAt"),
        op.get("url"),
        op.get("errorCode"),
        int(op.get("objectCount") or 0),
    )
