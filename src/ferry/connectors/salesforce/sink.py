"""The Salesforce sink: describe, query, choose a write strategy, upsert by external id."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.salesforce.bulk import BulkIngest, JobCallback
from ferry.connectors.salesforce.client import SalesforceClient, api_name
from ferry.connectors.salesforce.collections import CollectionsUpsert, split_reference
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.describe import parse_describe
from ferry.connectors.types import MappedRecord, ObjectSchema, RecordResult, Strategy, StrategyChoice
from ferry.errors import PermanentError

BULK_CALLS_PER_JOB = 5  # create, upload, UploadComplete, successfulResults, failedResults (+ polls)


class SalesforceSink(AsyncResource):
    """``async with SalesforceSink(cfg) as sink: await sink.upsert("Contact", "Ext__c", records, strategy)``."""

    def __init__(
        self,
        config: SalesforceConfig,
        *,
        on_bulk_job: JobCallback | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self._client = SalesforceClient(config, transport=transport, sleep=sleep)
        self._collections = CollectionsUpsert(
            self._client, batch_size=config.collections_batch_size, max_concurrency=config.max_concurrency
        )
        self._bulk = BulkIngest(
            self._client,
            poll_max_interval=config.bulk_poll_max_interval,
            on_job=on_bulk_job,
            sleep=sleep or asyncio.sleep,
        )
        self._schemas: dict[str, ObjectSchema] = {}
        self._describe_locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ observability

    @property
    def api_calls(self) -> dict[str, int]:
        """API calls sent, by label (the target object unless the caller named another). OAuth is not counted:
        logins do not draw on the org's DailyApiRequests."""
        return self._client.api_calls

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """(used, max) of the org's daily allocation from the latest ``Sforce-Limit-Info`` header."""
        return self._client.api_usage

    @property
    def last_bulk_job_id(self) -> str | None:
        return self._bulk.last_job_id

    @property
    def logins(self) -> int:
        return self._client.auth.logins

    # ------------------------------------------------------------------ reads

    async def describe(self, sobject: str) -> ObjectSchema:
        """The object's schema, fetched once per sink (concurrent callers share one call)."""
        cached = self._schemas.get(sobject)
        if cached is not None:
            return cached
        lock = self._describe_locks.setdefault(sobject, asyncio.Lock())
        async with lock:
            if sobject not in self._schemas:
                body = await self._client.json(
                    "GET", self._client.data_path(f"/sobjects/{api_name(sobject)}/describe"), label="describe"
                )
                self._schemas[sobject] = parse_describe(body)
        return self._schemas[sobject]

    async def query(self, soql: str, *, label: str = "query") -> list[dict[str, Any]]:
        """All rows of a SOQL query (follows nextRecordsUrl). Build literals with ``soql.soql_quote``."""
        body = await self._client.json("GET", self._client.data_path("/query"), label=label, params={"q": soql})
        records: list[dict[str, Any]] = list(body.get("records", []))
        while not body.get("done", True) and body.get("nextRecordsUrl"):
            next_path = str(body["nextRecordsUrl"])
            if not next_path.startswith("/services/data/"):
                raise PermanentError(f"unexpected nextRecordsUrl shape: {httpx.URL(next_path).path}")
            body = await self._client.json("GET", next_path, label=label)
            records.extend(body.get("records", []))
        return records

    # ------------------------------------------------------------------ writes

    def choose_strategy(self, sobject: str, count: int) -> StrategyChoice:
        threshold = self.config.bulk_threshold
        if count >= threshold:
            jobs = 1
            return StrategyChoice(
                Strategy.BULK,
                f"{count:,} {sobject} records ≥ bulk_threshold {threshold:,}: Bulk API 2.0 "
                f"({jobs} job, {BULK_CALLS_PER_JOB} API calls + polls)",
            )
        size = self.config.collections_batch_size
        calls = max(1, math.ceil(count / size))
        return StrategyChoice(
            Strategy.COLLECTIONS,
            f"{count:,} {sobject} records < bulk_threshold {threshold:,}: sObject Collections "
            f"({calls:,} call{'s' if calls != 1 else ''} of ≤{size} records, "
            f"up to {self.config.max_concurrency} in flight)",
        )

    async def upsert(
        self,
        sobject: str,
        external_id_field: str,
        records: Sequence[MappedRecord],
        strategy: Strategy,
        *,
        label: str | None = None,
    ) -> list[RecordResult]:
        """One RecordResult per input record, in input order, keyed by the record's external id value."""
        if not records:
            return []
        label = label or sobject
        if strategy is Strategy.BULK:
            return await self._bulk.upsert(sobject, external_id_field, records, label=label)
        # SINGLE goes through Collections too: a collection of one is one API call, with the same result shape.
        schema = await self.describe(sobject) if _has_references(records) else None
        return await self._collections.upsert(sobject, external_id_field, records, schema, label=label)

    async def resume_bulk_job(
        self, job_id: str, external_id_field: str, records: Sequence[MappedRecord], *, label: str
    ) -> list[RecordResult] | None:
        """Collect the results of a job started before a crash; None means "it never got its data, upsert again"."""
        return await self._bulk.resume(job_id, external_id_field, records, label=label)


def _has_references(records: Sequence[MappedRecord]) -> bool:
    return any(split_reference(key) is not None for record in records for key in record)
