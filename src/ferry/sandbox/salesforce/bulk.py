"""Bulk API 2.0: ingest jobs (CSV upload, asynchronous chunked processing, result CSVs) and query jobs.

Ingest processing runs as a background asyncio task on the server's loop, one
chunk of `bulk_chunk_rows` rows at a time (the org's internal 10,000-record
batches), yielding between chunks so REST calls and job polls stay responsive.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import gc
import io
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ferry.sandbox.salesforce.dml import MultipleMatches, SaveResult
from ferry.sandbox.salesforce.errors import ApiError, RecordError, not_found
from ferry.sandbox.salesforce.query import QueryPlan
from ferry.sandbox.salesforce.routing import CSV_TYPE, Call, Reply, Router
from ferry.sandbox.salesforce.schema import FieldSchema, SObjectSchema
from ferry.sandbox.salesforce.soql import CountExpr, Subquery, TypeOf, parse
from ferry.sandbox.salesforce.state import OrgState
from ferry.sandbox.salesforce.store import Record
from ferry.sandbox.salesforce.validate import ParentRef, ParsedBody, format_datetime, resolve_parent_ref

logger = logging.getLogger(__name__)
OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
DELIMITERS = {"COMMA": ",", "BACKQUOTE": "`", "CARET": "^", "PIPE": "|", "SEMICOLON": ";", "TAB": "\t"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
TERMINAL = ("JobComplete", "Failed", "Aborted")
NULL_MARKER = "#N/A"
RENDER_ROWS = 5_000  # rows rendered per piece of a streamed query result
DEFAULT_RESULT_SET = 100_000  # rows per query result set without maxRecords (an org picks its own default)
MAX_UPLOAD_BYTES = 150 * 1024 * 1024  # "150 MB" per upload (base64-encoded; ~100 MB of raw CSV)
# The org saves a Bulk batch in transactions of 200 records (Bulk API guide, "How Requests Are Processed":
# chunks of 200 from API 21.0): their change events share a transactionKey and identical UPDATEs/DELETEs
# merge into one event, as in any other 200-record save.
TRANSACTION_ROWS = 200


class JobFailure(Exception):
    """The whole job fails (state Failed, errorMessage `<Code> : <text>`)."""


@dataclass
class IngestJob:
    id: str
    operation: str
    sobject: SObjectSchema
    external_id_field: FieldSchema | None
    column_delimiter: str
    line_ending: str
    api_version: str
    created_by: str
    created_date: str
    state: str = "Open"
    system_modstamp: str = ""
    data: bytes | None = None
    header: list[str] = field(default_factory=list)
    processed: int = 0
    failed: int = 0
    successful_rows: list[list[str]] = field(default_factory=list)
    failed_rows: list[list[str]] = field(default_factory=list)
    unprocessed_rows: list[list[str]] = field(default_factory=list)
    error_message: str | None = None
    processing_ms: int = 0
    task: asyncio.Task[None] | None = None
    persisted_rows: dict[str, int] = field(default_factory=dict)  # result rows already in org.db, by kind

    def snapshot(self) -> dict[str, Any]:
        """The job's metadata for persistence (result rows and the upload are stored apart)."""
        return {"id": self.id, "operation": self.operation, "object": self.sobject.name,
                "externalIdFieldName": self.external_id_field.name if self.external_id_field else None,
                "columnDelimiter": self.column_delimiter, "lineEnding": self.line_ending,
                "apiVersion": self.api_version, "createdById": self.created_by, "createdDate": self.created_date,
                "state": self.state, "systemModstamp": self.system_modstamp, "header": self.header,
                "processed": self.processed, "failed": self.failed, "errorMessage": self.error_message,
                "processingMs": self.processing_ms}

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "operation": self.operation, "object": self.sobject.name, "createdById": self.created_by,
            "createdDate": self.created_date, "systemModstamp": self.system_modstamp or self.created_date,
            "state": self.state,
        }
        if self.external_id_field is not None:
            out["externalIdFieldName"] = self.external_id_field.name
        out.update({"concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.api_version),
                    "jobType": "V2Ingest"})
        if self.state == "Open":
            out["contentUrl"] = f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches"
        out.update({"lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter,
                    "numberRecordsProcessed": self.processed, "numberRecordsFailed": self.failed, "retries": 0,
                    "totalProcessingTime": self.processing_ms, "apiActiveProcessingTime": self.processing_ms,
                    "apexProcessingTime": 0})
        if self.error_message:
            out["errorMessage"] = self.error_message
        return out


@dataclass
class QueryJob:
    """A Bulk query's result set: references to the matched records, rendered to CSV page by page.

    Holding references (8 bytes a row) instead of rendered rows keeps a 1,000,000-row result in a few MB;
    an update replaces a record's dict in the store, so a result keeps the field values it matched with.
    """

    id: str
    operation: str
    soql: str
    sobject: str
    column_delimiter: str
    line_ending: str
    api_version: str
    created_by: str
    created_date: str
    header: list[str]
    records: list[Record]
    render_row: Callable[[Record], list[str]]
    state: str = "UploadComplete"
    polled: bool = False
    ready_at: float = 0.0  # time.monotonic() from which the job reports JobComplete (latency profile)

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "operation": self.operation, "soql": self.soql, "object": self.sobject,
                "columnDelimiter": self.column_delimiter, "lineEnding": self.line_ending,
                "apiVersion": self.api_version, "createdById": self.created_by, "createdDate": self.created_date,
                "header": self.header, "ids": [r["Id"] for r in self.records], "state": self.state,
                "polled": self.polled}

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "operation": self.operation, "object": self.sobject, "createdById": self.created_by,
            "createdDate": self.created_date, "systemModstamp": self.created_date, "state": self.state,
            "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.api_version),
            "lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter,
        }
        if self.polled:
            out.update({"jobType": "V2Query", "numberRecordsProcessed": len(self.records), "retries": 0,
                        "totalProcessingTime": 0, "isPkChunkingSupported": True})
        return out

    def render(self, start: int, end: int) -> Iterator[bytes]:
        """CSV of records[start:end] with the header, in pieces of RENDER_ROWS rows (bounded memory)."""
        delimiter, line_ending = DELIMITERS[self.column_delimiter], LINE_ENDINGS[self.line_ending]
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator=line_ending, quoting=csv.QUOTE_ALL)
        writer.writerow(self.header)
        render_row, records = self.render_row, self.records
        for piece in range(start, end, RENDER_ROWS):
            writer.writerows(render_row(r) for r in records[piece:min(piece + RENDER_ROWS, end)])
            yield out.getvalue().encode("utf-8")
            out.seek(0)
            out.truncate()
        if start >= end:
            yield out.getvalue().encode("utf-8")


@dataclass(slots=True)
class ColumnPlan:
    """How each CSV column maps onto the object, resolved once per job (not per row)."""

    fields: list[tuple[int, FieldSchema]]
    refs: list[tuple[int, FieldSchema, SObjectSchema, FieldSchema]]
    id_column: int | None
    key_column: int | None

    def body(self, row: list[str]) -> ParsedBody:
        # An empty cell is ignored; #N/A sets null. (Comprehensions: this runs once per row of every job.)
        values = [(f, None if cell == NULL_MARKER else cell) for idx, f in self.fields if (cell := row[idx])]
        if not self.refs:
            return ParsedBody(values)
        refs = [ParentRef(rel_field, parent, key_field, None if cell == NULL_MARKER else cell)
                for idx, rel_field, parent, key_field in self.refs if (cell := row[idx])]
        return ParsedBody(values, refs)


def _bool_text(value: bool | None) -> str:
    return "true" if value else "false"


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return _bool_text(value)
    return str(value)


def render_csv(header: list[str], rows: list[list[str]], delimiter: str, line_ending: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=line_ending, quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(locator: str) -> int:
    try:
        return int(base64.b64decode(locator + "=" * (-len(locator) % 4)).decode())
    except ValueError:
        raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}") from None


class BulkApi:
    def __init__(self, state: OrgState) -> None:
        self.state = state
        self.ingest_jobs: dict[str, IngestJob] = {}
        self.query_jobs: dict[str, QueryJob] = {}
        # persistence: job ids changed since the last flush (None when not persisting), and the flush itself
        self.dirty_jobs: set[str] | None = None
        self.after_chunk: Callable[[], None] = lambda: None
        # latency profile: seconds before the first chunk, and seconds per chunk of n rows
        self.queue_delay: Callable[[], float] = lambda: 0.0
        self.chunk_delay: Callable[[int], float] = lambda n: 0.0
        self.query_delay: Callable[[int], float] = lambda n: 0.0  # a query job's processing time
        self.transaction_rows = TRANSACTION_ROWS  # rows saved per store transaction; 0: each row on its own

    def _touch(self, job_id: str) -> None:
        if self.dirty_jobs is not None:
            self.dirty_jobs.add(job_id)

    def restore_ingest_job(self, s: dict[str, Any], data: bytes | None, rows: dict[str, list[list[str]]]) -> None:
        """Put back a job loaded from org.db. A job that was processing when the sandbox stopped is Failed."""
        obj = self.state.schema.get(s["object"])
        if obj is None:
            return
        key_field = obj.field(s["externalIdFieldName"]) if s["externalIdFieldName"] else None
        job = IngestJob(s["id"], s["operation"], obj, key_field, s["columnDelimiter"], s["lineEnding"],
                        s["apiVersion"], s["createdById"], s["createdDate"], state=s["state"],
                        system_modstamp=s["systemModstamp"], data=data, header=s["header"], processed=s["processed"],
                        failed=s["failed"], successful_rows=rows["s"], failed_rows=rows["f"],
                        unprocessed_rows=rows["u"], error_message=s["errorMessage"], processing_ms=s["processingMs"],
                        persisted_rows={k: len(v) for k, v in rows.items()})
        if job.state in ("UploadComplete", "InProgress"):
            job.state = "Failed"
            job.error_message = "InternalServerError : the sandbox stopped while the job was processing"
            self._touch(job.id)
        self.ingest_jobs[job.id] = job

    def register(self, router: Router) -> None:
        r = router.add
        r("POST", "jobs/ingest", self.create_job)
        r("GET", "jobs/ingest", self.list_jobs)
        r("GET", "jobs/ingest/{job}", self.get_job)
        r("PATCH", "jobs/ingest/{job}", self.patch_job)
        r("DELETE", "jobs/ingest/{job}", self.delete_job)
        r("PUT", "jobs/ingest/{job}/batches", self.upload)
        r("GET", "jobs/ingest/{job}/successfulResults", self.successful_results)
        r("GET", "jobs/ingest/{job}/failedResults", self.failed_results)
        r("GET", "jobs/ingest/{job}/unprocessedrecords", self.unprocessed_records)
        r("POST", "jobs/query", self.create_query_job)
        r("GET", "jobs/query", self.list_query_jobs)
        r("GET", "jobs/query/{job}", self.get_query_job)
        r("PATCH", "jobs/query/{job}", self.patch_query_job)
        r("DELETE", "jobs/query/{job}", self.delete_query_job)
        r("GET", "jobs/query/{job}/results", self.query_results)

    def _now(self) -> str:
        return format_datetime(self.state.clock())

    # --- ingest: control plane ------------------------------------------------------------------------

    def create_job(self, call: Call, _: dict[str, str]) -> Reply:
        body = call.json()
        if not isinstance(body, dict):
            raise ApiError(400, "API_ERROR", "Invalid job request")
        operation = str(body.get("operation", ""))
        if operation not in OPERATIONS:
            raise ApiError(400, "API_ERROR", f"Invalid value: '{operation}' supplied for property: 'operation'")
        obj = self.state.schema.get(str(body.get("object", "")))
        if obj is None:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Unable to find object: {body.get('object', '')}")
        key_field = None
        if operation == "upsert":
            name = str(body.get("externalIdFieldName", ""))
            key_field = obj.field(name)
            if key_field is None or not key_field.id_lookup:
                raise ApiError(400, "INVALIDJOB", f"InvalidJob : Field name provided, {name} does not match an "
                               f"External ID for {obj.name}")
        delimiter = str(body.get("columnDelimiter", "COMMA"))
        line_ending = str(body.get("lineEnding", "LF"))
        if delimiter not in DELIMITERS:
            raise ApiError(400, "API_ERROR", f"Invalid value: '{delimiter}' supplied for property: 'columnDelimiter'")
        if line_ending not in LINE_ENDINGS:
            raise ApiError(400, "API_ERROR", f"Invalid value: '{line_ending}' supplied for property: 'lineEnding'")
        if str(body.get("contentType", "CSV")) != "CSV":
            raise ApiError(400, "API_ERROR", f"Invalid value: '{body.get('contentType')}' supplied for property: "
                           "'contentType'")
        job = IngestJob(self.state.ids.new("750"), operation, obj, key_field, delimiter, line_ending, call.version,
                        self.state.org.user_id, self._now())
        self.ingest_jobs[job.id] = job
        self._touch(job.id)
        return Reply(200, job.info())

    def _job(self, job_id: str) -> IngestJob:
        job = self.ingest_jobs.get(job_id)
        if job is None:
            raise not_found()
        return job

    def list_jobs(self, call: Call, _: dict[str, str]) -> Reply:
        job_type = call.query.get("jobType")
        jobs = [j for j in self.ingest_jobs.values() if job_type in (None, "", "V2Ingest")]
        return _job_list(call, "ingest", [_list_entry(j.info()) for j in jobs])

    def get_job(self, call: Call, p: dict[str, str]) -> Reply:
        return Reply(200, self._job(p["job"]).info())

    def upload(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._job(p["job"])
        if job.data is not None:
            raise ApiError(400, "BULK_API_ERROR", f"Found multipe contents for job: <{job.id[:15]}>, please 'Close' / "
                           "'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' "
                           "once on a given Job.")
        if job.state != "Open":
            raise ApiError(409, "INVALIDJOBSTATE", f"Job {job.id} is not in the Open state")
        if len(call.body) > MAX_UPLOAD_BYTES:
            raise ApiError(413, "EXCEEDED_QUOTA", "The upload exceeds the maximum size of 150 MB")
        job.data = call.body
        self._touch(job.id)
        return Reply(201)

    def patch_job(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._job(p["job"])
        body = call.json()
        target = body.get("state") if isinstance(body, dict) else None
        if target == "UploadComplete" and job.state == "Open":
            job.state = "UploadComplete"
            job.system_modstamp = self._now()
            job.task = asyncio.get_running_loop().create_task(self._process(job))
        elif target == "Aborted" and job.state in ("Open", "UploadComplete", "InProgress"):
            job.state = "Aborted"
            job.system_modstamp = self._now()
        else:
            raise ApiError(400, "INVALIDJOBSTATE", f"Invalid state transition from {job.state} to {target}")
        self._touch(job.id)
        return Reply(200, job.info())

    def delete_job(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._job(p["job"])
        if job.state not in ("UploadComplete", *TERMINAL):
            raise ApiError(400, "INVALIDJOBSTATE", f"Job {job.id} can not be deleted in state {job.state}")
        if job.task is not None and not job.task.done():
            job.state = "Aborted"
        del self.ingest_jobs[job.id]
        self._touch(job.id)
        return Reply(204)

    # --- ingest: results ------------------------------------------------------------------------------

    def _results(self, job: IngestJob, header: list[str], rows: list[list[str]]) -> Reply:
        raw = render_csv(header, rows, DELIMITERS[job.column_delimiter], LINE_ENDINGS[job.line_ending])
        return Reply(200, raw=raw, content_type=CSV_TYPE)

    def successful_results(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._job(p["job"])
        return self._results(job, ["sf__Id", "sf__Created", *job.header], job.successful_rows)

    def failed_results(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._job(p["job"])
        return self._results(job, ["sf__Id", "sf__Error", *job.header], job.failed_rows)

    def unprocessed_records(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._job(p["job"])
        return self._results(job, job.header, job.unprocessed_rows)

    # --- ingest: processing ---------------------------------------------------------------------------

    async def _process(self, job: IngestJob) -> None:
        await asyncio.sleep(0)  # answer the UploadComplete PATCH first, as the org does
        queued = self.queue_delay()
        if queued:
            await asyncio.sleep(queued)  # the job waits in the org's queue before it starts
        if job.state == "Aborted":
            return
        started = time.perf_counter()
        job.state = "InProgress"
        self._touch(job.id)
        rows: Iterator[list[str]] = iter(())
        try:
            rows = self._rows(job)
            self._check_line_ending(job)
            plan = self._column_plan(job)
            for index, chunk in enumerate(_chunks(rows, self.state.bulk_chunk_rows, len(job.header))):
                if job.state == "Aborted":
                    job.unprocessed_rows.extend(chunk)
                    job.unprocessed_rows.extend(row for row in rows if row)
                    return
                if index == 1:
                    gc.collect()  # a job of several chunks: free all cyclic garbage once, before freezing starts
                self._process_chunk_without_gc(job, plan, chunk, freeze=index > 0)
                self.state.budget.bulk_batches += 1
                job.processing_ms = int((time.perf_counter() - started) * 1000)
                self._touch(job.id)
                self.after_chunk()
                await asyncio.sleep(self.chunk_delay(len(chunk)))
            job.state = "JobComplete"
        except JobFailure as failure:
            job.state = "Failed"
            job.error_message = str(failure)
            job.unprocessed_rows.extend(row for row in rows if row)
        except Exception as exc:  # a sandbox bug must not leave a job InProgress forever
            logger.exception("bulk job %s crashed", job.id)
            job.state = "Failed"
            job.error_message = f"Unknown : {type(exc).__name__}: {exc}"
        finally:
            job.data = None  # the upload is consumed; results hold what clients can fetch
            job.processing_ms = int((time.perf_counter() - started) * 1000)
            job.system_modstamp = self._now()
            if job.id in self.ingest_jobs:
                self._touch(job.id)
                self.after_chunk()

    def _rows(self, job: IngestJob) -> Iterator[list[str]]:
        if not job.data:
            raise JobFailure("InvalidBatch : Records not processed: no data was uploaded for this job")
        # Decoded as it is read: a 100 MB upload is not copied into a second, decoded string.
        text = io.TextIOWrapper(io.BytesIO(job.data), encoding="utf-8-sig", errors="replace", newline="")
        text._CHUNK_SIZE = 1 << 20  # type: ignore[attr-defined]  # fewer, larger decode steps than the 8 KiB default
        reader = csv.reader(text, delimiter=DELIMITERS[job.column_delimiter])
        job.header = next(reader, [])
        if not job.header or job.header == [""]:
            raise JobFailure("InvalidBatch : Records not processed: the CSV has no header row")
        return reader

    @staticmethod
    def _check_line_ending(job: IngestJob) -> None:
        # Judged on the header row's terminator, so a newline inside a quoted value cannot trip it.
        data = job.data or b""
        first_break = data.find(b"\n")
        uses_crlf = first_break > 0 and data[first_break - 1:first_break] == b"\r"
        if first_break >= 0 and uses_crlf != (job.line_ending == "CRLF"):
            raise JobFailure(f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is "
                             f"{job.line_ending}")

    def _column_plan(self, job: IngestJob) -> ColumnPlan:
        obj = job.sobject
        plan = ColumnPlan([], [], None, None)
        for idx, column in enumerate(job.header):
            name = column.strip()
            if job.operation in ("delete", "hardDelete"):
                if name.lower() != "id":
                    raise JobFailure(f"InvalidBatch : The '{job.operation}' batch must contain only 'Id'")
                plan.id_column = idx
                continue
            if name.lower() == "id":
                plan.id_column = idx
                if job.external_id_field is not None and job.external_id_field.name == "Id":
                    plan.key_column = idx
                continue
            f = obj.field(name)
            if f is not None:
                plan.fields.append((idx, f))
                if job.external_id_field is f:
                    plan.key_column = idx
                continue
            plan.refs.append((idx, *self._relationship_column(obj, name)))
        return plan

    def _relationship_column(self, obj: SObjectSchema, name: str) -> tuple[FieldSchema, SObjectSchema, FieldSchema]:
        """`Account.Shopify_Customer_Id__c` or polymorphic `Lead:Who.Email` -> (lookup, parent, key field)."""
        type_name, _, path = name.rpartition(":")
        rel_name, dot, key_name = path.partition(".")
        rel = obj.relationship(rel_name) if dot else None
        if rel is None:
            raise JobFailure(f"InvalidBatch : Field name not found : {name}")
        if type_name and len(rel.reference_to) < 2:
            raise JobFailure(f"InvalidBatch : type is not needed for non polymorphic foreign key references: "
                             f"{rel_name}")
        try:
            ref = resolve_parent_ref(self.state.schema, rel, type_name or None, key_name, None)
        except RecordError:
            raise JobFailure(f"InvalidBatch : Field name not found : {name}") from None
        return rel, ref.parent, ref.key_field

    def _process_chunk_without_gc(self, job: IngestJob, plan: ColumnPlan, chunk: list[list[str]],
                                  freeze: bool = False) -> None:
        """Process a chunk with the cyclic GC paused.

        A chunk allocates tens of thousands of long-lived records; letting the cyclic collector rescan the
        growing heap during that burst cost up to a third of Bulk throughput. Reference counting still frees
        every temporary, and the collector resumes between chunks (for everything but the frozen records).
        """
        enabled = gc.isenabled()
        freeze = freeze and enabled
        if freeze:
            gc.collect(1)  # the young objects of what ran since the last chunk (small): free their cycles now
        gc.disable()
        try:
            self._process_chunk(job, plan, chunk)
        finally:
            if freeze:
                # From a job's second chunk on, the records and result rows (they live as long as the org) are
                # moved out of the collector's view, so later full collections do not rescan a heap of a
                # million records (~20% of the ingest time at 200,000 rows, growing with the org's size). The
                # job started with a full collection and saves make no reference cycles, so nothing
                # collectable is frozen with them.
                gc.freeze()
            if enabled:
                gc.enable()

    def _process_chunk(self, job: IngestJob, plan: ColumnPlan, chunk: list[list[str]]) -> None:
        dupes = self._duplicate_keys(job, plan, chunk)
        size = self.transaction_rows
        if size <= 0:
            self._save_rows(job, plan, chunk, dupes)
            return
        store = self.state.store
        for start in range(0, len(chunk), size):
            # A failed row writes nothing (every check runs before the store is touched), so the transaction
            # never rolls back: it only groups the rows' commits (and change events), as the org's does.
            with store.transaction():
                self._save_rows(job, plan, chunk[start:start + size], dupes)

    def _save_rows(self, job: IngestJob, plan: ColumnPlan, rows: list[list[str]], dupes: set[str]) -> None:
        org, obj, op = self.state.org, job.sobject, job.operation
        ok, failed = job.successful_rows, job.failed_rows
        for row in rows:
            given_id = row[plan.id_column] if plan.id_column is not None else ""
            try:
                if op == "insert":
                    result = org.create(obj, plan.body(row))
                elif op == "update":
                    result = org.update(obj, given_id or None, plan.body(row))
                elif op == "upsert":
                    result = self._upsert_row(job, plan, row, dupes)
                else:
                    result = org.delete(given_id, obj, hard=op == "hardDelete") if given_id else SaveResult(
                        None, False, [RecordError("MISSING_ARGUMENT", "Id not specified", [])])
            except RecordError as err:
                result = SaveResult(None, False, [err])
            if result.success:
                ok.append([result.id or "", _bool_text(result.created), *row])
            else:
                failed.append([given_id if op != "insert" else "", result.errors[0].as_bulk_error(), *row])
                job.failed += 1
            job.processed += 1

    def _duplicate_keys(self, job: IngestJob, plan: ColumnPlan, chunk: list[list[str]]) -> set[str]:
        key_field = job.external_id_field
        if job.operation != "upsert" or plan.key_column is None or key_field is None:
            return set()
        fold = (lambda v: v) if key_field.case_sensitive else str.lower
        counts = Counter(fold(row[plan.key_column]) for row in chunk if row[plan.key_column])
        return {k for k, n in counts.items() if n > 1}

    def _upsert_row(self, job: IngestJob, plan: ColumnPlan, row: list[str], dupes: set[str]) -> SaveResult:
        key_field = job.external_id_field
        assert key_field is not None
        if plan.key_column is None or not row[plan.key_column]:
            return SaveResult(None, False, [RecordError("MISSING_ARGUMENT", f"{key_field.name} not specified", [])])
        key = row[plan.key_column]
        if (key if key_field.case_sensitive else key.lower()) in dupes:
            return SaveResult(None, False, [RecordError("DUPLICATE_EXTERNAL_ID",
                                                        f"Duplicate external id specified: {key}", [key_field.name])])
        try:
            return self.state.org.upsert(job.sobject, key_field, key, plan.body(row))
        except MultipleMatches as many:
            return SaveResult(None, False, [RecordError(
                "DUPLICATE_EXTERNAL_ID", f"more than one record found for external id field: {many.ids}",
                [key_field.name])])

    # --- query jobs -----------------------------------------------------------------------------------

    def create_query_job(self, call: Call, _: dict[str, str]) -> Reply:
        body = call.json()
        if not isinstance(body, dict):
            raise ApiError(400, "API_ERROR", "Invalid job request")
        operation = str(body.get("operation", "query"))
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "API_ERROR", f"Invalid value: '{operation}' supplied for property: 'operation'")
        delimiter = str(body.get("columnDelimiter", "COMMA"))
        line_ending = str(body.get("lineEnding", "LF"))
        if delimiter not in DELIMITERS or line_ending not in LINE_ENDINGS:
            raise ApiError(400, "API_ERROR", "Invalid value supplied for property: 'columnDelimiter' or 'lineEnding'")
        soql = str(body.get("query", ""))
        parsed = parse(soql)
        if parsed.offset is not None or parsed.group_by or any(isinstance(i, CountExpr | Subquery | TypeOf)
                                                               for i in parsed.select):
            raise ApiError(400, "API_ERROR", "Aggregate queries, OFFSET and subqueries are not supported in Bulk "
                           "query jobs")
        plan = self.state.executor.plan(parsed)
        records = self.state.executor.rows(plan, operation == "queryAll")
        job = QueryJob(self.state.ids.new("750"), operation, soql, plan.sobject.name, delimiter, line_ending,
                       call.version, self.state.org.user_id, self._now(), [col.path.text for col in plan.columns],
                       records, self._row_renderer(plan))
        job.ready_at = time.monotonic() + self.query_delay(len(records))
        self.query_jobs[job.id] = job
        self.state.budget.bulk_query_jobs += 1
        self._touch(job.id)
        return Reply(200, job.info())

    def _row_renderer(self, plan: QueryPlan) -> Callable[[Record], list[str]]:
        getters = [col.getter for col in plan.columns]
        return lambda record: [csv_cell(get(record)) for get in getters]

    def restore_query_job(self, s: dict[str, Any]) -> None:
        """Put back a query job loaded from org.db: its result set is re-read from the stored records."""
        executor, store = self.state.executor, self.state.store
        plan = executor.plan(parse(s["soql"]))
        records: list[Record] = []
        for record_id in s.get("ids", []):
            table = store.table_for_id(record_id)
            record = table.rows.get(record_id) or table.deleted.get(record_id) if table is not None else None
            if record is not None:
                records.append(record)
        self.query_jobs[s["id"]] = QueryJob(
            s["id"], s["operation"], s["soql"], s["object"], s["columnDelimiter"], s["lineEnding"], s["apiVersion"],
            s["createdById"], s["createdDate"], s["header"], records, self._row_renderer(plan), s["state"],
            s["polled"])

    def _query_job(self, job_id: str) -> QueryJob:
        job = self.query_jobs.get(job_id)
        if job is None:
            raise not_found()
        return job

    def get_query_job(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._query_job(p["job"])
        # The result set is computed at creation; a poll reports it done once the latency profile's
        # processing time has passed (at once with latency off).
        if not job.polled or job.state in ("UploadComplete", "InProgress"):
            self._touch(job.id)
        job.polled = True
        if job.state in ("UploadComplete", "InProgress"):
            job.state = "JobComplete" if time.monotonic() >= job.ready_at else "InProgress"
        return Reply(200, job.info())

    def list_query_jobs(self, call: Call, _: dict[str, str]) -> Reply:
        job_type = call.query.get("jobType")
        jobs = [j for j in self.query_jobs.values() if job_type in (None, "", "V2Query")]
        return _job_list(call, "query", [_list_entry({**j.info(), "jobType": "V2Query"}) for j in jobs])

    def patch_query_job(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._query_job(p["job"])
        body = call.json()
        if not isinstance(body, dict) or body.get("state") != "Aborted" or job.state in TERMINAL:
            raise ApiError(400, "INVALIDJOBSTATE", f"Invalid state transition from {job.state}")
        job.state = "Aborted"
        self._touch(job.id)
        return Reply(200, job.info())

    def delete_query_job(self, call: Call, p: dict[str, str]) -> Reply:
        self._query_job(p["job"])
        del self.query_jobs[p["job"]]
        self._touch(p["job"])
        return Reply(204)

    def query_results(self, call: Call, p: dict[str, str]) -> Reply:
        job = self._query_job(p["job"])
        if job.state != "JobComplete":
            raise ApiError(400, "INVALIDJOBSTATE", f"Job {job.id} is not complete")
        if call.version != job.api_version:
            raise ApiError(409, "INVALIDVERSION", "Results must be requested with the API version of the job")
        total = len(job.records)
        start = min(_offset(call.query["locator"]), total) if call.query.get("locator") else 0
        max_records = _max_records(call.query.get("maxRecords"))
        end = min(start + max_records, total)
        headers = {"Sforce-Locator": _locator(end) if end < total else "null",
                   "Sforce-NumberOfRecords": str(end - start)}
        return Reply(200, stream=job.render(start, end), content_type=CSV_TYPE, headers=headers)

    def reset(self) -> None:
        for job in self.ingest_jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
        self.ingest_jobs.clear()
        self.query_jobs.clear()


JOB_LIST_PAGE = 1000  # "Get All Jobs returns up to 1000 result rows per request"
_LIST_KEYS = ("id", "operation", "object", "createdById", "createdDate", "systemModstamp", "state",
              "externalIdFieldName", "concurrencyMode", "contentType", "apiVersion", "jobType", "contentUrl",
              "lineEnding", "columnDelimiter")


def _list_entry(info: dict[str, Any]) -> dict[str, Any]:
    """A job in a Get All Jobs page: its JobInfo without the processing figures."""
    return {k: info[k] for k in _LIST_KEYS if k in info}


def _job_list(call: Call, kind: str, records: list[dict[str, Any]]) -> Reply:
    locator = call.query.get("queryLocator")
    start = _offset(locator) if locator else 0
    page = records[start:start + JOB_LIST_PAGE]
    end = start + len(page)
    done = end >= len(records)
    next_url = None if done else f"/services/data/v{call.version}/jobs/{kind}?queryLocator={_locator(end)}"
    return Reply(200, {"done": done, "records": page, "nextRecordsUrl": next_url})


def _max_records(text: str | None) -> int:
    if not text:
        return DEFAULT_RESULT_SET
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ApiError(400, "INVALIDMAXRECORDS", f"Invalid value for maxRecords: {text}")
    return value


def _chunks(rows: Iterator[list[str]], size: int, width: int) -> Iterator[list[list[str]]]:
    """Rows in chunks of `size`; blank lines skipped, short or long rows padded or cut to the header's width."""
    while chunk := list(itertools.islice(rows, size)):
        if any(len(row) != width for row in chunk):
            chunk = [row if len(row) == width else (row + [""] * width)[:width] for row in chunk if row]
        if chunk:
            yield chunk
