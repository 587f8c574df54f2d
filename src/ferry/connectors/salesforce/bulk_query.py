"""Bulk API 2.0 query, streamed: large reads in bounded memory.

``POST /jobs/query`` → poll ``GET /jobs/query/{id}`` with backoff (1 s doubling to a cap) until
``JobComplete`` → ``GET /jobs/query/{id}/results?maxRecords=N[&locator=L]`` page after page, following
the ``Sforce-Locator`` header until it says ``null``. Each page's CSV is read from the socket piece by
piece and handed out as rows in small batches, so ferry holds at most one network chunk plus one
batch of rows, never a whole page, let alone the whole result.

Values are CSV text as Salesforce sends it: an empty string for null, ``true``/``false``, ISO dates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

from ferry.connectors.retry import PollIntervals
from ferry.connectors.salesforce.client import SalesforceClient
from ferry.connectors.salesforce.csvio import stream_csv_rows
from ferry.errors import PermanentError, TransientError

log = structlog.get_logger("ferry.connectors.salesforce.bulk_query")

PAGE_RECORDS = 100_000  # maxRecords per results call: fewer calls, still one streamed page at a time
ROW_BATCH = 5_000  # rows handed to the caller at a time
TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})


class BulkQuery:
    def __init__(
        self,
        client: SalesforceClient,
        *,
        page_records: int = PAGE_RECORDS,
        row_batch: int = ROW_BATCH,
        poll_start: float = 1.0,
        poll_max_interval: float = 10.0,
        max_wait_seconds: float = 4 * 3600,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.page_records = page_records
        self.row_batch = row_batch
        self.poll_start, self.poll_max = poll_start, poll_max_interval
        self.max_wait_seconds = max_wait_seconds
        self._sleep = sleep
        self.polls = 0
        self.pages = 0
        self.last_job_id: str | None = None

    def _path(self, suffix: str = "") -> str:
        return self.client.data_path(f"/jobs/query{suffix}")

    async def rows(
        self, soql: str, *, label: str = "bulk-query", all_rows: bool = False
    ) -> AsyncIterator[list[dict[str, str]]]:
        """Batches of result rows (dicts of CSV text), streamed page by page."""
        spec = {
            "operation": "queryAll" if all_rows else "query",
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        info = await self.client.json("POST", self._path(), label=label, json=spec)
        job_id = str(info["id"])
        self.last_job_id = job_id
        log.info("bulk_query.job_created", job_id=job_id)
        await self._wait(job_id, label)
        locator: str | None = None
        while True:
            params: dict[str, Any] = {"maxRecords": self.page_records}
            if locator:
                params["locator"] = locator
            async with self.client.stream(
                "GET", self._path(f"/{job_id}/results"), label=label, params=params, headers={"Accept": "text/csv"}
            ) as response:
                self.pages += 1
                next_locator = response.headers.get("Sforce-Locator")
                async for batch in self._page_rows(response.aiter_text()):
                    yield batch
            if not next_locator or next_locator == "null":
                return
            locator = next_locator

    async def _page_rows(self, text: AsyncIterator[str]) -> AsyncIterator[list[dict[str, str]]]:
        rows = stream_csv_rows(text)
        header = await anext(rows, None)
        if header is None:
            return
        header = [h.lstrip("\ufeff") for h in header]
        batch: list[dict[str, str]] = []
        async for row in rows:
            batch.append(dict(zip(header, row, strict=False)))
            if len(batch) >= self.row_batch:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _wait(self, job_id: str, label: str) -> None:
        deadline = time.monotonic() + self.max_wait_seconds
        for pause in PollIntervals(self.poll_start, 2.0, self.poll_max):
            # A query job just created is rarely done: wait first, then look.
            await self._sleep(pause if self.polls else min(pause, 0.5))
            info = await self.client.json("GET", self._path(f"/{job_id}"), label=label)
            self.polls += 1
            state = info.get("state")
            if state == "JobComplete":
                return
            if state in TERMINAL:
                raise PermanentError(
                    f"Bulk query job {job_id} {str(state).lower()}: {info.get('errorMessage') or 'no message'}",
                    code="BULK_QUERY_FAILED",
                )
            if time.monotonic() + pause > deadline:
                raise TransientError(
                    f"Bulk query job {job_id} still {state} after {self.max_wait_seconds:.0f} s", code="BULK_TIMEOUT"
                )
        raise AssertionError("unreachable")  # pragma: no cover
