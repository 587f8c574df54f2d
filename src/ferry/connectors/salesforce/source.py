"""Read from a Salesforce org: streamed REST query pages, streamed Bulk API 2.0 queries, watermarks.

``SalesforceSource.read(sobject, fields, since=watermark)`` is an async iterator of record batches,
ordered by ``(SystemModstamp, Id)`` and starting strictly after ``since``; ``source.watermark`` is the
last record handed out, so a caller checkpoints it once the batch is durable and passes it back next
time (for a Bulk read, whose rows are unordered, once the whole read is durable). Records sharing a
timestamp are ordered by Id, so none is skipped at a page or run boundary.

REST (``/query`` then ``nextRecordsUrl``) keeps one page in memory at a time. ``bulk=True`` (or
``bulk=None`` with at least ``bulk_read_threshold`` matching records, counted with one ``COUNT()``
query) reads through a Bulk API 2.0 query job instead: far fewer API calls for large reads, values as
CSV text.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.salesforce.budget import BudgetGuard
from ferry.connectors.salesforce.bulk_query import BulkQuery
from ferry.connectors.salesforce.client import SalesforceClient
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.select import Condition, Select, Watermark, after_watermark
from ferry.errors import PermanentError

MODSTAMP = "SystemModstamp"
BULK_READ_THRESHOLD = 50_000


async def query_pages(
    client: SalesforceClient, soql: str, *, label: str, all_rows: bool = False, batch_size: int | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """The pages of a REST query, one at a time (follows ``nextRecordsUrl``). ``all_rows``: ``/queryAll``,
    which also returns deleted records (``IsDeleted = true``) still in the recycle bin. ``batch_size``: records
    a page (``Sforce-Query-Options: batchSize=``, 200 to 2,000; Salesforce's default is 2,000)."""
    endpoint = "/queryAll" if all_rows else "/query"
    headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else None
    body = await client.json("GET", client.data_path(endpoint), label=label, params={"q": soql}, headers=headers)
    while True:
        yield [r for r in body.get("records", []) if isinstance(r, dict)]
        next_path = body.get("nextRecordsUrl")
        if body.get("done", True) or not next_path:
            return
        if not str(next_path).startswith("/services/data/"):
            raise PermanentError(f"unexpected nextRecordsUrl shape: {httpx.URL(str(next_path)).path}")
        body = await client.json("GET", str(next_path), label=label, headers=headers)


class SalesforceSource(AsyncResource):
    """``async with SalesforceSource(cfg) as src: async for batch in src.read("Contact", ["Email"]): ...``."""

    def __init__(
        self,
        config: SalesforceConfig,
        *,
        bulk_read_threshold: int = BULK_READ_THRESHOLD,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        client: SalesforceClient | None = None,
        budget: BudgetGuard | None = None,
        query_batch_size: int | None = None,
    ) -> None:
        self.config = config
        self.query_batch_size = query_batch_size  # REST records a page; None: Salesforce's default (2,000)
        self._own_client = client is None
        # Reads spend the org's DailyApiRequests too: a pipeline's guard (with its ledger) goes here.
        self._client = client or SalesforceClient(config, transport=transport, sleep=sleep, budget=budget)
        kwargs: dict[str, Any] = {"poll_max_interval": config.bulk_poll_max_interval}
        if sleep is not None:
            kwargs["sleep"] = sleep
        self.bulk = BulkQuery(self._client, **kwargs)
        self.bulk_read_threshold = bulk_read_threshold
        self.watermark: Watermark | None = None
        self.last_strategy: str | None = None

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    @property
    def api_calls(self) -> dict[str, int]:
        return self._client.api_calls

    def build(
        self,
        sobject: str,
        fields: Sequence[str],
        *,
        since: Watermark | None = None,
        where: Condition | None = None,
        ordered: bool = True,
    ) -> Select:
        """The query ``read`` sends: the fields plus Id and SystemModstamp, after the watermark, in order.

        Bulk API 2.0 queries are sent without ORDER BY: Salesforce documents that ORDER BY disables
        PK chunking (slow, and timeouts) and recent versions refuse it; rows then arrive unordered and
        the watermark is the maximum over all of them, valid once the whole read is done.
        """
        wanted = list(dict.fromkeys([*fields, "Id", MODSTAMP]))
        query = Select(sobject, wanted).where(where)
        if since is not None:
            query.where(after_watermark(since, MODSTAMP))
        return query.order_by(MODSTAMP, "Id") if ordered else query

    async def read(
        self,
        sobject: str,
        fields: Sequence[str],
        *,
        since: Watermark | None = None,
        where: Condition | None = None,
        bulk: bool | None = False,
        label: str | None = None,
        all_rows: bool = False,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches of records after ``since``; ``self.watermark`` follows the last record handed out.
        ``all_rows``: deleted records too (REST ``queryAll``, Bulk operation ``queryAll``)."""
        label = label or f"read:{sobject}"
        self.watermark = since
        if bulk is None:
            bulk = await self.count(sobject, where=where, since=since, label=label) >= self.bulk_read_threshold
        query = self.build(sobject, fields, since=since, where=where, ordered=not bulk)
        self.last_strategy = "bulk" if bulk else "rest"
        pages = (
            self.bulk.rows(query.soql(), label=label, all_rows=all_rows)
            if bulk
            else query_pages(self._client, query.soql(), label=label, all_rows=all_rows,
                             batch_size=self.query_batch_size)
        )
        async for batch in pages:
            last = _latest(batch)
            if last is not None:
                self.watermark = Watermark(*last) if self.watermark is None else self.watermark.advance(*last)
            yield batch

    async def count(
        self, sobject: str, *, where: Condition | None = None, since: Watermark | None = None, label: str = "count"
    ) -> int:
        query = f"SELECT COUNT() FROM {Select(sobject, ['Id']).sobject}"
        condition = where
        if since is not None:
            mark = after_watermark(since, MODSTAMP)
            condition = mark if condition is None else condition & mark
        if condition is not None:
            query += f" WHERE {condition.text}"
        body = await self._client.json("GET", self._client.data_path("/query"), label=label, params={"q": query})
        return int(body.get("totalSize") or 0)

    async def query(self, soql: str, *, label: str = "query") -> AsyncIterator[list[dict[str, Any]]]:
        """Any SOQL (build literals with ``select`` or ``soql_quote``), page by page."""
        async for page in query_pages(self._client, soql, label=label):
            yield page

    async def bulk_query(self, soql: str, *, label: str = "bulk-query") -> AsyncIterator[list[dict[str, str]]]:
        async for batch in self.bulk.rows(soql, label=label):
            yield batch


_MARK = operator.itemgetter(MODSTAMP, "Id")


def _latest(batch: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The batch's greatest (SystemModstamp, Id). Within one answer Salesforce formats every stamp the
    same way, so text order is time order; the watermark parses only this one stamp per batch."""
    try:
        stamp, record_id = max(map(_MARK, batch))
    except (KeyError, ValueError, TypeError):  # an empty batch, or rows without the two fields
        return None
    return (str(stamp), str(record_id)) if stamp and record_id else None
