"""Upsert through Bulk API 2.0: one ingest job per ≤100 MB of CSV.

Lifecycle (salesforce-api.md §4.1): create job (LF line endings) → one PUT of CSV → UploadComplete →
poll with exponential backoff (0.5 s, then x1.5, capped) → fetch successfulResults, failedResults and
unprocessedrecords → match rows back to the input by the external id column (result order is not
guaranteed). Every input record ends with exactly one RecordResult.

The job id is handed to ``on_job`` as soon as the job exists, so a crashed run can ``resume`` it
instead of uploading the same data again.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ferry.connectors.retry import PollIntervals
from ferry.connectors.salesforce.client import SalesforceClient, api_name, record_id
from ferry.connectors.salesforce.collections import missing_key_result
from ferry.connectors.salesforce.csvio import columns_of, csv_chunks, key_text, parse_sf_error, read_results
from ferry.connectors.salesforce.errors import record_error_from_call
from ferry.connectors.types import MappedRecord, RecordResult
from ferry.errors import (
    AuthError,
    BudgetExhausted,
    ConfigError,
    FerryError,
    PermanentError,
    RecordError,
    TransientError,
)

log = structlog.get_logger("ferry.connectors.salesforce.bulk")

MAX_UPLOAD_BYTES = 100 * 1024 * 1024 - 1024 * 1024  # Salesforce's 100 MB, less a margin (simple-salesforce does too)
TERMINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
# Job-level failures that a new job can get past; the rest (bad column, bad line ending) need a fix.
_TRANSIENT_JOB_CODES = (
    "Timeout",
    "TooManyLockFailure",
    "Unknown",
    "InternalServerError",
    "ServerUnavailable",
    "UNABLE_TO_LOCK_ROW",
)

JobCallback = Callable[[str, str], None]  # (job_id, sobject)


@dataclass(slots=True)
class JobOutcome:
    job_id: str
    state: str
    error_message: str | None
    processed: int
    failed: int


def job_failure(state: str, error_message: str | None) -> RecordError:
    """What a record not reported by a failed or aborted job gets."""
    text = (error_message or "").strip()
    code = text.split(":", 1)[0].strip() if text else state.upper()
    transient = state == "Aborted" or any(code.startswith(c) for c in _TRANSIENT_JOB_CODES)
    message = f"Bulk job {state.lower()}" + (f": {text}" if text else "")
    return RecordError(code=code.replace(" ", "_") or "JOB_FAILED", message=message, fields=[], transient=transient)


class BulkIngest:
    def __init__(
        self,
        client: SalesforceClient,
        *,
        poll_start: float = 0.5,
        poll_factor: float = 1.5,
        poll_max_interval: float = 10.0,
        max_wait_seconds: float = 4 * 3600,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        on_job: JobCallback | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.poll_start, self.poll_factor, self.poll_max = poll_start, poll_factor, poll_max_interval
        self.max_wait_seconds = max_wait_seconds
        self.max_upload_bytes = max_upload_bytes
        self.on_job = on_job
        self._sleep = sleep
        self.last_job_id: str | None = None
        self.polls = 0

    def _path(self, suffix: str = "") -> str:
        return self.client.data_path(f"/jobs/ingest{suffix}")

    # ------------------------------------------------------------------ whole upsert

    async def upsert(
        self, sobject: str, external_id_field: str, records: Sequence[MappedRecord], *, label: str
    ) -> list[RecordResult]:
        api_name(sobject), api_name(external_id_field)
        results: list[RecordResult | None] = [missing_key_result(r, external_id_field) for r in records]
        todo = [i for i, r in enumerate(results) if r is None]
        subset = [records[i] for i in todo]
        columns = columns_of(subset)
        for body, rows in csv_chunks(subset, columns, self.max_upload_bytes):
            part = [subset[j] for j in rows]
            try:
                outcome = await self._run_job(sobject, external_id_field, body, label)
                part_results = await self.collect(outcome, external_id_field, part, label=label)
            except (BudgetExhausted, AuthError, ConfigError):
                raise
            except FerryError as err:
                failure = record_error_from_call(err)
                part_results = [RecordResult(key_text(r.get(external_id_field)), False, errors=[failure]) for r in part]
            for j, result in zip(rows, part_results, strict=True):
                results[todo[j]] = result
        return [r for r in results if r is not None]

    async def resume(
        self, job_id: str, external_id_field: str, records: Sequence[MappedRecord], *, label: str
    ) -> list[RecordResult] | None:
        """Results of a job a crashed run left behind; None if it never got its data (abort it, start over)."""
        info = await self.client.json("GET", self._path(f"/{record_id(job_id)}"), label=label)
        if info.get("state") == "Open":
            await self._abort(job_id, label)
            return None
        outcome = await self.wait(job_id, label=label)
        return await self.collect(outcome, external_id_field, records, label=label)

    # ------------------------------------------------------------------ one job

    async def _run_job(self, sobject: str, external_id_field: str, body: bytes, label: str) -> JobOutcome:
        job_id = await self._create(sobject, external_id_field, label)
        try:
            # A PUT is allowed once per job: never repeat one that may have landed (idempotent=False).
            await self.client.request(
                "PUT",
                self._path(f"/{job_id}/batches"),
                label=label,
                content=body,
                headers={"Content-Type": "text/csv; charset=UTF-8"},
                idempotent=False,
            )
            await self.client.json("PATCH", self._path(f"/{job_id}"), label=label, json={"state": "UploadComplete"})
        except FerryError:
            await self._abort(job_id, label)
            raise
        return await self.wait(job_id, label=label)

    async def _create(self, sobject: str, external_id_field: str, label: str) -> str:
        spec = {
            "object": sobject,
            "operation": "upsert",
            "externalIdFieldName": external_id_field,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        # A repeated create at worst leaves an empty Open job behind, which Salesforce expires: harmless.
        info = await self.client.json("POST", self._path(), label=label, json=spec)
        job_id = str(info["id"])
        self.last_job_id = job_id
        log.info("bulk.job_created", job_id=job_id, sobject=sobject)
        if self.on_job is not None:
            self.on_job(job_id, sobject)
        return job_id

    async def _abort(self, job_id: str, label: str) -> None:
        try:
            await self.client.json("PATCH", self._path(f"/{job_id}"), label=label, json={"state": "Aborted"})
        except FerryError as err:  # best effort: the job expires on its own; the real error is the caller's
            log.warning("bulk.abort_failed", job_id=job_id, error=str(err))

    async def wait(self, job_id: str, *, label: str) -> JobOutcome:
        """Poll until the job is terminal, backing off 0.5 s, x1.5 each time, up to ``poll_max_interval``."""
        deadline = time.monotonic() + self.max_wait_seconds
        for pause in PollIntervals(self.poll_start, self.poll_factor, self.poll_max):
            info = await self.client.json("GET", self._path(f"/{job_id}"), label=label)
            self.polls += 1
            if info.get("state") in TERMINAL_STATES:
                return _outcome(job_id, info)
            if time.monotonic() + pause > deadline:
                raise TransientError(
                    f"Bulk job {job_id} still {info.get('state')} after {self.max_wait_seconds:.0f} s",
                    code="BULK_TIMEOUT",
                )
            await self._sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover - PollIntervals never ends

    # ------------------------------------------------------------------ results

    async def _csv(self, outcome: JobOutcome, kind: str, label: str) -> list[dict[str, str]]:
        try:
            response = await self.client.request(
                "GET", self._path(f"/{outcome.job_id}/{kind}"), label=label, headers={"Accept": "text/csv"}
            )
        except PermanentError:
            if outcome.state == "JobComplete":
                raise
            return []  # a failed or aborted job may have no result file: its records get the job's fate
        return read_results(response.content.decode("utf-8-sig"))

    async def collect(
        self, outcome: JobOutcome, external_id_field: str, records: Sequence[MappedRecord], *, label: str
    ) -> list[RecordResult]:
        """One result per record from the three result files; anything unreported gets the job's fate."""
        pending = _index_by_key(records, external_id_field)
        results: list[RecordResult | None] = [None] * len(records)
        for row in await self._csv(outcome, "successfulResults", label):
            _place(results, pending, row, external_id_field, _success)
        for row in await self._csv(outcome, "failedResults", label):
            _place(results, pending, row, external_id_field, _failure)
        unfinished = (
            job_failure(outcome.state, outcome.error_message)
            if outcome.state != "JobComplete"
            else RecordError("NOT_PROCESSED", f"Bulk job {outcome.job_id} did not report this record", [], True)
        )
        # unprocessedrecords is not fetched: it could only repeat what "not in either file" already says.
        return [
            r if r is not None else _unreported(records[i], external_id_field, unfinished)
            for i, r in enumerate(results)
        ]


def _outcome(job_id: str, info: dict[str, Any]) -> JobOutcome:
    return JobOutcome(
        job_id,
        info["state"],
        info.get("errorMessage"),
        int(info.get("numberRecordsProcessed") or 0),
        int(info.get("numberRecordsFailed") or 0),
    )


def _unreported(record: MappedRecord, external_id_field: str, error: RecordError) -> RecordResult:
    return RecordResult(key_text(record.get(external_id_field)), False, errors=[error])


def _index_by_key(records: Sequence[MappedRecord], external_id_field: str) -> dict[str, deque[int]]:
    index: dict[str, deque[int]] = defaultdict(deque)
    for i, record in enumerate(records):
        index[key_text(record.get(external_id_field))].append(i)
    return index


def _place(
    results: list[RecordResult | None],
    pending: dict[str, deque[int]],
    row: dict[str, str],
    external_id_field: str,
    make: Callable[[str, dict[str, str]], RecordResult],
) -> None:
    key = row.get(external_id_field)
    slots = pending.get(key) if key is not None else None
    if key is not None and slots:  # duplicates of one key in a job take their results in turn
        results[slots.popleft()] = make(key, row)


def _success(key: str, row: dict[str, str]) -> RecordResult:
    created = (row.get("sf__Created") or "").strip().lower()
    return RecordResult(key, True, id=row.get("sf__Id") or None, created=created == "true" if created else None)


def _failure(key: str, row: dict[str, str]) -> RecordResult:
    return RecordResult(key, False, id=row.get("sf__Id") or None, errors=[parse_sf_error(row.get("sf__Error") or "")])
