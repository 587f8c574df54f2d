"""The Salesforce sink (``ferry.core.contracts.Sink``): describe, SOQL constants, write costs, upsert by external id."""

from __future__ import annotations

import asyncio
import difflib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from ferry.connectors.jobs import JournaledPages
from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.salesforce.budget import BudgetGuard, pipeline_guard
from ferry.connectors.salesforce.bulk import BulkIngest, JobCallback, RecordChunks
from ferry.connectors.salesforce.client import SalesforceClient, api_name
from ferry.connectors.salesforce.collections import CollectionsUpsert, missing_key_result, split_reference
from ferry.connectors.salesforce.composite import RECORDS_PER_SUBREQUEST, SUBREQUESTS_PER_CALL, CompositeUpsert
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.csvio import key_text
from ferry.connectors.salesforce.describe import parse_describe
from ferry.connectors.salesforce.dialect import SALESFORCE
from ferry.connectors.salesforce.planner import WritePlanner
from ferry.connectors.salesforce.select import Select, in_
from ferry.connectors.salesforce.single import upsert_one
from ferry.connectors.salesforce.source import query_pages
from ferry.connectors.salesforce.strategy import Strategy
from ferry.connectors.salesforce.together import Part, TogetherUpsert
from ferry.core.contracts import (
    ChildAdoption,
    JobJournal,
    JobPage,
    SinkCapabilities,
    SinkContext,
    TogetherLimits,
    UpsertPart,
)
from ferry.core.dialect import Dialect
from ferry.core.records import MappedRecord
from ferry.core.results import JobSucceeded, RecordResult, StreamAnswer
from ferry.core.schema import ObjectSchema
from ferry.core.writes import StrategyChoice, WriteCost, choose_write
from ferry.errors import ConfigError, PermanentError

LOCK_RETRY_BATCHES = (50, 10)  # smaller, serial batches for rows another transaction had locked
_DESCRIBES_PER_CALL = 25  # subrequests in one Composite call
_QUERIES_PER_CALL = 5  # query subrequests in one Composite call (with sObject Collections, 5 at most)
_COLLECTION_RECORDS = 200  # sObject Collections' limit per call (adopt)
_ADOPT_PARENTS_PER_QUERY = 300  # parent Ids in one child query's IN list (the SOQL text stays well under 100k)
_LOCKED_PAGE = 10_000  # locked rows of a Bulk job read back from the journal and sent again at a time
log = structlog.get_logger("ferry.connectors.salesforce.sink")


class SalesforceSink(AsyncResource):
    """``async with SalesforceSink(cfg) as sink: await sink.upsert("Contact", "Ext__c", records, strategy)``.

    Implements ``ferry.core.contracts.Sink``; besides it offers Salesforce's own: ``describe_object``, ``query``,
    ``bulk_stream`` (a Bulk upsert without a journal), the org's API usage and Composite's state."""

    system = "salesforce"
    capabilities = SinkCapabilities(native_upsert=True, remote_jobs=True)
    dialect: Dialect = SALESFORCE

    def __init__(
        self,
        config: SalesforceConfig,
        context: SinkContext | None = None,
        *,
        on_bulk_job: JobCallback | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        budget: BudgetGuard | None = None,
    ) -> None:
        """``context`` (the engine's): the pipeline's API budget share is kept in its ledger, across runs.
        ``budget`` (tests) replaces the guard built from it."""
        self.config = config
        if budget is None and context is not None:
            budget = pipeline_guard(config.api_budget, context.ledger, context.pipeline, clock=context.clock)
        self._client = SalesforceClient(config, transport=transport, sleep=sleep, budget=budget)
        self._collections = CollectionsUpsert(
            self._client, batch_size=config.collections_batch_size, max_concurrency=config.max_concurrency
        )
        self._bulk = BulkIngest(
            self._client,
            poll_max_interval=config.bulk_poll_max_interval,
            on_job=on_bulk_job,
            sleep=sleep or asyncio.sleep,
            success_results=config.bulk_success_results,
        )
        self._composite = CompositeUpsert(self._client, self._collections)
        self._together = TogetherUpsert(self._client, self._collections, self._composite)
        self._planner = WritePlanner(config)
        self._sleep = sleep or asyncio.sleep
        self._schemas: dict[str, ObjectSchema] = {}
        self._describe_locks: dict[str, asyncio.Lock] = {}
        self._prefetched: dict[str, list[dict[str, Any]]] = {}  # query rows fetched with the describes
        self.lock_retries = 0

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

    def budget_left(self) -> int | None:
        """API calls left before the budget guard stops the run (share and org allocation), if known."""
        return self._client.budget.remaining()

    def budget_status(self) -> dict[str, Any]:
        """The share, what the last 24 h spent of it (earlier runs included), what is left."""
        return self._client.budget.status().as_dict()

    @property
    def composite_refused(self) -> str | None:
        """Why Composite was given up for this run (the org refused it), or None."""
        return self._composite.disabled_reason

    @property
    def long_running_calls(self) -> int:
        """Calls that ran 20 s or longer (Salesforce's long-running request limit counts those)."""
        return self._client.gate.long_calls

    @property
    def last_bulk_job_id(self) -> str | None:
        return self._bulk.last_job_id

    @property
    def logins(self) -> int:
        return self._client.auth.logins

    # ------------------------------------------------------------------ reads

    async def describe_object(self, sobject: str) -> ObjectSchema:
        """The object's schema, fetched once per sink (concurrent callers share one call)."""
        cached = self._schemas.get(sobject)
        if cached is not None:
            return cached
        lock = self._describe_locks.setdefault(sobject, asyncio.Lock())
        async with lock:
            if sobject not in self._schemas:
                try:
                    body = await self._client.json(
                        "GET", self._client.data_path(f"/sobjects/{api_name(sobject)}/describe"), label="describe"
                    )
                except PermanentError as exc:
                    if exc.code not in ("NOT_FOUND", "HTTP_404"):
                        raise
                    raise await self._unknown_object(sobject, exc) from None
                self._schemas[sobject] = parse_describe(body)
        return self._schemas[sobject]

    async def _unknown_object(self, sobject: str, exc: PermanentError) -> ConfigError:
        """The pipeline names an object the org does not have: say which, and the closest the org has (one
        describeGlobal call, on this error path only)."""
        hint = ""
        try:
            body = await self._client.json("GET", self._client.data_path("/sobjects"), label="describe")
            names = [o["name"] for o in body.get("sobjects", []) if isinstance(o, dict) and "name" in o]
            close = difflib.get_close_matches(sobject, names, n=1, cutoff=0.6) or difflib.get_close_matches(
                sobject.lower(), [n.lower() for n in names], n=1, cutoff=0.6
            )
            if close:
                match = next((n for n in names if n.lower() == close[0].lower()), close[0])
                hint = f"; did you mean {match}?"
        except PermanentError:  # no list to suggest from: the error without a suggestion
            pass
        return ConfigError(
            f"objects: {sobject}: the Salesforce org has no object {sobject} ({exc}){hint}", code="NOT_FOUND"
        )

    async def describe(self, sobjects: Sequence[str], queries: Sequence[str] = ()) -> dict[str, ObjectSchema]:
        """Every object's schema, the uncached ones fetched in ONE API call: a Composite of describe subrequests
        (Salesforce: any sObject resource may be a subrequest, 25 a call, "the entire series of requests counts
        as a single call toward your API limits"). A subrequest that fails, or a Composite the org refuses, falls
        back to ``describe_object`` for that object, which raises the org's own error.

        ``queries`` (small SOQL, e.g. a mapping's constants) ride in the same call, up to 5 (Composite's limit on
        query subrequests); the next ``query`` of each SOQL text gets the rows fetched here, once. A query whose
        subrequest failed or whose answer has more pages is simply asked again by ``query``."""
        wanted = [name for name in dict.fromkeys(sobjects) if name not in self._schemas]
        asked = list(dict.fromkeys(queries))[:_QUERIES_PER_CALL]
        if len(wanted) + len(asked) > 1 and self.config.composite:
            for start in range(0, max(len(wanted), 1), _DESCRIBES_PER_CALL - len(asked)):
                await self._describe_in_one_call(wanted[start : start + _DESCRIBES_PER_CALL - len(asked)], asked)
                asked = []
        return {name: await self.describe_object(name) for name in sobjects}

    async def _describe_in_one_call(self, sobjects: Sequence[str], queries: Sequence[str] = ()) -> None:
        path = self._client.data_path
        subrequests = [
            {"method": "GET", "url": path(f"/sobjects/{api_name(name)}/describe"), "referenceId": f"describe{i}"}
            for i, name in enumerate(sobjects)
        ] + [
            {"method": "GET", "url": path("/query") + "?q=" + quote(soql, safe=""), "referenceId": f"query{i}"}
            for i, soql in enumerate(queries)
        ]
        payload = {"allOrNone": False, "compositeRequest": subrequests}
        try:
            body = await self._client.json("POST", self._client.data_path("/composite"), label="describe", json=payload)
        except PermanentError as exc:  # e.g. Composite blocked by a proxy: one call per object instead
            log.info("salesforce.describe_composite_refused", error=str(exc))
            return
        answers = body.get("compositeResponse", []) if isinstance(body, dict) else []
        by_ref = {a.get("referenceId"): a for a in answers if isinstance(a, dict)}
        for i, name in enumerate(sobjects):
            answer = by_ref.get(f"describe{i}")
            if answer and answer.get("httpStatusCode") == 200 and isinstance(answer.get("body"), dict):
                self._schemas.setdefault(name, parse_describe(answer["body"]))
        for i, soql in enumerate(queries):
            answer = by_ref.get(f"query{i}")
            result = answer.get("body") if answer and answer.get("httpStatusCode") == 200 else None
            if isinstance(result, dict) and result.get("done", True) and isinstance(result.get("records"), list):
                self._prefetched[soql] = [r for r in result["records"] if isinstance(r, dict)]

    async def query(self, soql: str, *, label: str = "query") -> list[dict[str, Any]]:
        """All rows of a small SOQL query (mapping constants). Build literals with ``select`` / ``soql_quote``;
        stream large reads with ``SalesforceSource``."""
        prefetched = self._prefetched.pop(soql, None)
        if prefetched is not None:  # fetched with the describes (describe), a moment ago
            return prefetched
        return [row async for page in query_pages(self._client, soql, label=label) for row in page]

    async def constant(self, query: str) -> Any:
        """The one value a mapping constant's SOQL selects (each row's ``attributes`` is Salesforce's, not data)."""
        rows = await self.query(query)
        if len(rows) != 1:
            raise ConfigError(f"mapping query must return exactly one row, got {len(rows)}: {query}")
        values = [v for k, v in rows[0].items() if k != "attributes"]
        if len(values) != 1:
            raise ConfigError(f"mapping query must select exactly one field: {query}")
        return values[0]

    # ------------------------------------------------------------------ writes

    def write_costs(self, obj: str, count: int) -> list[WriteCost]:
        """Each write API's cost for ``count`` records (``planner.WritePlanner``), lowest latency first."""
        return self._planner.costs(obj, count, composite_refused=self._composite.disabled_reason)

    def choose_strategy(self, sobject: str, count: int, *, latency_sensitive: bool = False) -> StrategyChoice:
        """The engine planner's choice over ``write_costs`` with this sink's budget, and its reason."""
        return choose_write(
            self.write_costs(sobject, count),
            remaining_calls=self.budget_left(),
            latency_sensitive=latency_sensitive,
        )

    def missing_key_result(self, payload: MappedRecord, external_id: str) -> RecordResult | None:
        return missing_key_result(payload, external_id)

    async def upsert(
        self,
        sobject: str,
        external_id_field: str,
        records: Sequence[MappedRecord],
        strategy: str,
        *,
        target_ids: Sequence[str | None] | None = None,
        label: str | None = None,
    ) -> list[RecordResult]:
        """One RecordResult per input record, in input order, keyed by the record's external id value.

        Salesforce upserts by the external id itself: ``target_ids`` is not needed. Records refused with
        UNABLE_TO_LOCK_ROW are sent again at once in smaller, serial Collections batches (50, then 10);
        those still locked come back transient for the caller's own retry.
        """
        if not records:
            return []
        label = label or sobject
        strategy = Strategy(strategy)
        schema = await self.describe_object(sobject) if _has_references(records) else None
        if strategy is Strategy.BULK:
            results = await self._bulk.upsert(sobject, external_id_field, records, label=label)
        elif strategy is Strategy.SINGLE and len(records) == 1:
            results = [await upsert_one(self._client, sobject, external_id_field, records[0], schema, label=label)]
        elif strategy is Strategy.COMPOSITE:
            results = await self._composite.upsert(sobject, external_id_field, records, schema, label=label)
        else:
            results = await self._collections.upsert(sobject, external_id_field, records, schema, label=label)
        return await self._retry_locked(sobject, external_id_field, records, results, schema, label)

    def together_limits(self) -> TogetherLimits | None:
        """One Composite call carries 5 Collections subrequests of <= ``collections_batch_size`` records (the
        ``WritesTogether`` capability); None while Composite is off in the config or refused by the org."""
        if not self.config.composite or self._composite.disabled_reason is not None:
            return None
        return TogetherLimits(parts=SUBREQUESTS_PER_CALL, records=min(self.config.collections_batch_size,
                                                                      RECORDS_PER_SUBREQUEST))

    async def upsert_together(self, parts: Sequence[UpsertPart]) -> list[list[RecordResult]]:
        """Several objects' upserts in one Composite call, parts in the order given (parents first); one result
        list per part, in input order (``together.TogetherUpsert``). The call is counted under the first part's
        object. Rows another transaction had locked are sent again as in ``upsert``, part after part."""
        if not parts:
            return []
        shaped = [
            Part(p.obj, p.external_id, p.records,
                 await self.describe_object(p.obj) if _has_references(p.records) else None)
            for p in parts
        ]
        label = parts[0].obj
        answers = await self._together.upsert(shaped, label=label)
        return [
            await self._retry_locked(p.sobject, p.external_id, p.records, results, p.schema, label)
            for p, results in zip(shaped, answers, strict=True)
        ]

    async def adopt(
        self, obj: str, external_id: str, ids: Mapping[str, str], children: Sequence[ChildAdoption] = ()
    ) -> int:
        """The ``Adopts`` capability: each record ``ids`` names (key -> record Id) and the first created child
        of each (a Contact by ``AccountId``) get the key in their external id field, in sObject Collections
        updates (200 records a call); records that carry it already are left alone. A refused record is
        logged: the upsert that follows then creates one, as it would have without adoption."""
        updates: list[dict[str, Any]] = [
            {"attributes": {"type": obj}, "id": rid, external_id: key} for key, rid in ids.items()
        ]
        for child in children:
            updates += await self._children_to_adopt(child, ids, label=obj)
        changed = 0
        for start in range(0, len(updates), _COLLECTION_RECORDS):
            chunk = updates[start:start + _COLLECTION_RECORDS]
            answers = await self._client.json("PATCH", self._client.data_path("/composite/sobjects"), label=obj,
                                               json={"allOrNone": False, "records": chunk})
            for sent, answer in zip(chunk, answers or [], strict=False):
                if isinstance(answer, dict) and answer.get("success"):
                    changed += 1
                else:
                    errors = answer.get("errors") if isinstance(answer, dict) else answer
                    log.warning("adopt.refused", object=sent["attributes"]["type"], record=sent["id"], errors=errors)
        return changed

    async def _children_to_adopt(
        self, child: ChildAdoption, ids: Mapping[str, str], *, label: str
    ) -> list[dict[str, Any]]:
        """Updates giving each parent's first created child the parent's key, unless one of its children has it."""
        by_parent = {rid: key for key, rid in ids.items()}
        rows: list[dict[str, Any]] = []
        for start in range(0, len(by_parent), _ADOPT_PARENTS_PER_QUERY):
            chunk = list(by_parent)[start:start + _ADOPT_PARENTS_PER_QUERY]
            query = Select(child.obj, ["Id", child.parent_field, child.external_id, "CreatedDate"])
            query = query.where(in_(child.parent_field, chunk)).order_by("CreatedDate", "Id")
            rows += await self.query(query.soql(), label=label)
        first: dict[str, dict[str, Any]] = {}
        done: set[str] = set()
        for row in rows:
            parent = str(row.get(child.parent_field) or "")
            if parent not in by_parent:
                continue
            if key_text(row.get(child.external_id)) == by_parent[parent]:
                done.add(parent)  # adopted before (a batch that died before its upsert)
            first.setdefault(parent, row)
        return [
            {"attributes": {"type": child.obj}, "id": row["Id"], child.external_id: by_parent[parent]}
            for parent, row in first.items()
            if parent not in done and not key_text(row.get(child.external_id))
        ]

    async def _retry_locked(
        self,
        sobject: str,
        external_id_field: str,
        records: Sequence[MappedRecord],
        results: list[RecordResult],
        schema: ObjectSchema | None,
        label: str,
    ) -> list[RecordResult]:
        for size in LOCK_RETRY_BATCHES:
            locked = [i for i, r in enumerate(results) if _locked(r)]
            if not locked:
                break
            self.lock_retries += len(locked)
            log.info("upsert.lock_retry", sobject=sobject, records=len(locked), batch=size)
            # Another transaction holds the rows (often their parent): give it a moment, then go one
            # small batch at a time so ferry does not contend with itself.
            await self._sleep(random.uniform(0.5, 1.5))
            for start in range(0, len(locked), size):
                part = locked[start : start + size]
                again = await self._collections.upsert(
                    sobject, external_id_field, [records[i] for i in part], schema, label=label, serial=True
                )
                for i, result in zip(part, again, strict=True):
                    results[i] = result
        return results

    async def upsert_stream(
        self,
        sobject: str,
        external_id_field: str,
        pages: AsyncIterator[JobPage] | Iterable[JobPage],
        journal: JobJournal,
        *,
        columns: Sequence[str] | None = None,
        label: str | None = None,
    ) -> AsyncIterator[StreamAnswer]:
        """Bulk API 2.0 upsert of a stream of pages (``bulk_stream``), every record journaled to its job before
        it is uploaded (``ferry.connectors.jobs``).

        Rows a job answers UNABLE_TO_LOCK_ROW are held back and sent again through Collections (``upsert``,
        whose own lock retry goes on in smaller, serial batches) before the job's ``JobSucceeded`` and at the
        end; their answer then is that upsert's. Their records are read back from the journal.
        """
        label = label or sobject
        paged = JournaledPages(journal, lambda record: key_text(record.get(external_id_field)))
        locked: list[str] = []
        async for answer in self._bulk.upsert_stream(
            sobject, external_id_field, paged.records(pages), label=label, columns=columns, on_job=paged.job_created
        ):
            if isinstance(answer, JobSucceeded):
                async for again in self._send_locked_again(sobject, external_id_field, journal, locked, label):
                    yield again
                locked = []
                yield answer
                continue
            held = [r.key for r in answer if _locked(r)]
            if held:
                locked += held
                answer = [r for r in answer if not _locked(r)]
            if answer:
                yield answer
        async for again in self._send_locked_again(sobject, external_id_field, journal, locked, label):
            yield again

    async def _send_locked_again(
        self, sobject: str, external_id_field: str, journal: JobJournal, keys: Sequence[str], label: str
    ) -> AsyncIterator[list[RecordResult]]:
        for start in range(0, len(keys), _LOCKED_PAGE):
            records = journal.queued(keys[start : start + _LOCKED_PAGE])
            if records:
                log.info("bulk.lock_retry", sobject=sobject, records=len(records))
                yield await self.upsert(sobject, external_id_field, records, Strategy.COLLECTIONS, label=label)

    def bulk_stream(
        self,
        sobject: str,
        external_id_field: str,
        chunks: RecordChunks,
        *,
        label: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> AsyncIterator[StreamAnswer]:
        """Bulk API 2.0 upsert of a stream of record chunks, in memory flat in the record count.

        ``chunks`` is an async iterator (or an iterable) of record lists, e.g. pages read from the
        outbox. CSV rows are generated from them while the upload is being sent (one PUT per job,
        at most 100 MB; a longer stream continues in a next job), then the job is polled with
        backoff and its result files are streamed back. Yields lists of RecordResult (at most 5,000
        each), keyed by the external id value: every record gets exactly one result, but NOT in input
        order; match them by ``key`` (duplicates of a key within a job get one result per copy). A job whose
        counts prove the rest succeeded ends with a ``JobSucceeded`` instead of its successes: every row the
        caller sent in that job and no batch answered succeeded.

        The CSV header is ``columns`` or the first record's keys; a later record with a key outside it
        gets an UNKNOWN_COLUMN result instead of being sent. If the stream raises (upload refused,
        budget spent), records with no result yielded yet are still pending: send them again (the
        upsert is idempotent). ``on_bulk_job`` is called with each job id as soon as it exists, so
        a crashed run can ``resume_job`` it.
        """
        return self._bulk.upsert_stream(sobject, external_id_field, chunks, label=label or sobject, columns=columns)

    async def resume_job(
        self, job_id: str, external_id_field: str, records: Sequence[MappedRecord], *, label: str | None = None
    ) -> list[RecordResult] | None:
        """Collect the results of a job started before a crash; None means "it never got its data, upsert again".

        Salesforce deletes jobs 7 days after they were created: the lookup of such a job fails with a
        PermanentError (NOT_FOUND), and its records must go out again (the contract's answer for that)."""
        return await self._bulk.resume(job_id, external_id_field, records, label=label or "bulk-resume")

    async def unfinished_bulk_jobs(self, sobject: str) -> list[str]:
        """Ids of this user's ingest jobs for ``sobject`` that are not finished (left behind by a crash)."""
        return [str(j["id"]) for j in await self._bulk.unfinished_jobs(sobject, label="bulk-jobs")]


def _locked(result: RecordResult) -> bool:
    return not result.success and any(e.code == "UNABLE_TO_LOCK_ROW" for e in result.errors)


def _has_references(records: Sequence[MappedRecord]) -> bool:
    return any(split_reference(key) is not None for record in records for key in record)
