"""Shopify Bulk Operations (queries) as a ``ferry.connectors.jobs.JobApi``: run, poll, stream the JSONL.

One bulk query at a time per shop and app: ``create`` that meets an operation in progress adopts it when it
runs this very query (a run that crashed before saving the id left it), and otherwise waits for it to end.
Polls are spaced by the operation's own progress (root objects done per second, against the expected
count), so a long operation costs a few polls, not one every second.
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
POLL = f"query Poll($id: ID!) {{ node(id: $id) {{ ... on BulkOperation {{ {_FIELDS} }} }} }}"
CURRENT = f"query Current {{ currentBulkOperation(type: QUERY) {{ {_FIELDS} }} }}"
CANCEL = "mutation Cancel($id: ID!) { bulkOperationCancel(id: $id) { userErrors { field message } } }"
ACTIVE = frozenset({"CREATED", "RUNNING", "CANCELING"})
MIN_POLL, MAX_POLL = 0.25, 30.0


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

    def __init__(self, client: ShopifyGraphQL, document: str, expected_roots: int | None = None) -> None:
        self.client = client
        self.document = document
        self.expected_roots = expected_roots
        self.polls = 0

    async def create(self) -> str:
        while True:
            answer = await self.client.query(RUN, {"query": self.document}, cost=10, label="bulk_run")
            payload = answer.data.get("bulkOperationRunQuery") or {}
            errors = payload.get("userErrors") or []
            op = payload.get("bulkOperation")
            if not errors and isinstance(op, dict):
                return str(op["id"])
            if not any(e.get("code") == "OPERATION_IN_PROGRESS" for e in errors):
                raise PermanentError(f"bulkOperationRunQuery refused: {errors[0].get('message') if errors else op}")
            current = await self._current()
            if current is not None and current.get("query", "").strip() == self.document.strip():
                log.info("bulk.adopt_running", id=current["id"])  # our own, left by a run that crashed
                return str(current["id"])
            # Another query of this app holds the shop's one slot: wait for it to end.
            await self.wait(str(current["id"])) if current is not None else await asyncio.sleep(1.0)

    async def upload(self, job_id: str, body: Any) -> None:
        raise PermanentError("a bulk query takes no data")

    async def close(self, job_id: str) -> None:
        return None  # a bulk query starts on its own

    async def phase(self, job_id: str) -> JobPhase:
        op = await self._poll(job_id)
        return JobPhase.RUNNING if op["status"] in ACTIVE else JobPhase.DONE

    async def wait(self, job_id: str, *, expected_rows: int | None = None, immediate: bool = False) -> BulkOutcome:
        started = time.monotonic()
        pause = 0.0 if immediate else MIN_POLL
        while True:
            if pause:
                await asyncio.sleep(pause)
            op = await self._poll(job_id)
            if op["status"] not in ACTIVE:
                return _outcome(op)
            pause = self._next_pause(op, time.monotonic() - started, expected_rows)

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
        self.polls += 1
        answer = await self.client.query(POLL, {"id": job_id}, cost=1, label="bulk_poll")
        op = answer.data.get("node")
        if not isinstance(op, dict) or "status" not in op:
            raise PermanentError(f"bulk operation {job_id} is unknown to the store")
        return op

    async def _current(self) -> dict[str, Any] | None:
        answer = await self.client.query(CURRENT, cost=1, label="bulk_poll")
        op = answer.data.get("currentBulkOperation")
        return op if isinstance(op, dict) and op.get("status") in ACTIVE else None

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
