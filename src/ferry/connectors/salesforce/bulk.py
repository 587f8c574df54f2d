"""Upsert through Bulk API 2.0: one ingest job per ≤100 MB of CSV.

Lifecycle (salesforce-api.md §4.1): create job (LF line endings) → one PUT of CSV → UploadComplete →
poll with exponential backoff (1 s, doubling, capped at ``bulk_poll_max_interval``) → fetch
successfulResults, failedResults and unprocessedrecords → match rows back to the input by the
external id column (result order is not guaranteed). Every input record ends with exactly one RecordResult.

successfulResults is skipped when the job's own counts prove what it would say (see ``counts_prove_success``):
a complete job that processed every uploaded row succeeded for every row that failedResults does not list
(used while at most MAX_FAILURES_FOR_COUNTS rows failed, ``BulkIngest.answers_by_counts``). That saves one
API call per job and the largest download of a run; what is lost is only the Salesforce id and the
created/updated flag of each written row (``bulk_success_results: true`` in the sink config fetches the file
anyway).

The job id is handed to ``on_job`` as soon as the job exists, so a crashed run can ``resume`` it
instead of uploading the same data again. The lifecycle itself (create, journal, upload, close, abort on a
failed upload, resume) is ``ferry.connectors.jobs``'s: ``IngestJobs`` is Bulk API 2.0 ingest as a ``JobApi``.
"""

from __future__ import annotations

import asyncio
import codecs
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import httpx
import structlog

from ferry.connectors.jobs import JobPhase, aiterate, resume_job, start_job
from ferry.connectors.retry import PollIntervals
from ferry.connectors.salesforce.bulk_pace import JobPace, pace_prior
from ferry.connectors.salesforce.client import SalesforceClient, api_name, record_id
from ferry.connectors.salesforce.collections import missing_key_result
from ferry.connectors.salesforce.csvio import (
    RowEncoder,
    columns_of,
    csv_chunks,
    key_text,
    parse_sf_error,
    read_results,
    stream_csv_rows,
)
from ferry.connectors.salesforce.errors import record_error_from_call
from ferry.connectors.salesforce.planner import bulk_polls
from ferry.core.records import MappedRecord
from ferry.core.results import JobSucceeded, RecordResult, StreamAnswer
from ferry.errors import (
    STOPS_THE_STEP,
    ConfigError,
    FerryError,
    PermanentError,
    RecordError,
    TransientError,
)

log = structlog.get_logger("ferry.connectors.salesforce.bulk")

MAX_UPLOAD_BYTES = 100 * 1024 * 1024 - 1024 * 1024  # Salesforce's 100 MB, less a margin (simple-salesforce does too)
MIN_POLL_GAP = 0.5  # seconds: an aimed poll never follows the last one sooner than this
AIM_MARGIN = 0.05  # seconds past the estimated end, so the poll lands after it, not on it
TERMINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
# A job's successes are inferred from its counts only when this few rows failed: the caller holds the failed
# keys in memory to tell them from the rest; past this, successfulResults lists the successes instead.
MAX_FAILURES_FOR_COUNTS = 50_000
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
        poll_start: float = 1.0,
        poll_factor: float = 2.0,
        poll_max_interval: float = 10.0,
        max_wait_seconds: float = 4 * 3600,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        on_job: JobCallback | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        success_results: bool = False,
    ) -> None:
        self.client = client
        # Fetch successfulResults even when the counts prove it (for target ids and created/updated counts).
        self.success_results = success_results
        self.poll_start, self.poll_factor, self.poll_max = poll_start, poll_factor, poll_max_interval
        self.max_wait_seconds = max_wait_seconds
        self.max_upload_bytes = max_upload_bytes
        self.on_job = on_job
        self._sleep = sleep
        self.last_job_id: str | None = None
        self.polls = 0
        # (records, seconds from close to the last poll that saw it still running) of the last job waited for
        self._last_job: tuple[int, float] | None = None
        # seconds a record took in the last job waited for (bulk_pace.pace_prior: a prior on the next one's pace)
        self._per_row: float | None = None

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
                outcome = await self._run_job(sobject, external_id_field, body, label, len(part))
                trusted = self.answers_by_counts(outcome, len(part))
                part_results = await self.collect(outcome, external_id_field, part, label=label, trust_counts=trusted)
            except STOPS_THE_STEP:
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
        outcome = await resume_job(IngestJobs(self, "", external_id_field, label), job_id)
        if outcome is None:
            return None
        return await self.collect(outcome, external_id_field, records, label=label)

    def upsert_stream(
        self,
        sobject: str,
        external_id_field: str,
        chunks: RecordChunks,
        *,
        label: str,
        columns: Sequence[str] | None = None,
        on_job: Callable[[str], None] | None = None,
    ) -> AsyncIterator[StreamAnswer]:
        """Streamed upsert: CSV generated while uploaded, results streamed back (see ``upsert_stream``).
        ``on_job`` is called with each job's id the moment it exists, before its upload."""
        return upsert_stream(self, sobject, external_id_field, chunks, label=label, columns=columns, on_job=on_job)

    def stream_results(
        self, outcome: JobOutcome, external_id_field: str, *, label: str, skip_successes: bool = False
    ) -> AsyncIterator[list[RecordResult]]:
        return stream_results(self, outcome, external_id_field, label=label, skip_successes=skip_successes)

    async def unfinished_jobs(self, sobject: str, *, label: str) -> list[dict[str, Any]]:
        """Ingest jobs of this user for ``sobject`` not yet terminal (a crash may have left one behind)."""
        body = await self.client.json("GET", self._path(), label=label)
        jobs = [j for j in (body or {}).get("records", []) if isinstance(j, dict)]
        return [j for j in jobs if j.get("object") == sobject and j.get("state") not in TERMINAL_STATES]

    # ------------------------------------------------------------------ one job

    async def _run_job(
        self, sobject: str, external_id_field: str, body: bytes, label: str, rows: int | None = None
    ) -> JobOutcome:
        jobs = IngestJobs(self, sobject, external_id_field, label)
        job_id = await start_job(jobs, body)
        return await jobs.wait(job_id, expected_rows=rows)

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

    async def wait(
        self, job_id: str, *, label: str, immediate: bool = False, expected_rows: int | None = None
    ) -> JobOutcome:
        """Poll until the job is terminal: 1 s, then doubling up to ``poll_max_interval`` (never a fixed loop).

        With ``expected_rows``, once a poll has seen records processed, a pause is cut short to the
        latest time the job can finish at the pace its polls have shown (``JobPace``), so completion
        is seen within a fraction of a second of happening without polling more often; a pause is
        never shorter than ``MIN_POLL_GAP``. The pace an earlier job of the run allowed bounds this one's
        (``JobPace.max_per_row``). Once a poll sees every record counted but no pace to aim by (the count came in
        one step: a one-chunk job), the backoff starts again from its first step (``_restart_when_finishing``).
        """
        deadline = time.monotonic() + self.max_wait_seconds
        backoff = PollIntervals(self.poll_start, self.poll_factor, self.poll_max)
        pace = JobPace(expected_rows or 0, time.monotonic(), max_per_row=self._per_row)
        not_started_at = pace.opened_at  # the last time the job was seen not processing yet (closed, or queued)
        restarted = False
        pause = next(backoff)
        if not immediate:
            # A job just closed is never done yet: a poll now would be a wasted API call. Nor, in the same org
            # and run, is it done sooner than an earlier job of no more records was seen still running.
            await self._sleep(max(pause, self._running_at_least(expected_rows)))
            pause = next(backoff)
        running_until = 0.0
        min_gap = MIN_POLL_GAP
        budget = bulk_polls(expected_rows or 0) + 1  # the planner's estimate, and one to spare
        while True:
            polled_at = time.monotonic()
            info = await self.client.json("GET", self._path(f"/{job_id}"), label=label)
            self.polls += 1
            if info.get("state") in TERMINAL_STATES:
                if expected_rows and not immediate:
                    self._last_job = (expected_rows, running_until)
                    self._per_row = pace_prior(expected_rows, not_started_at, polled_at,
                                               info.get("totalProcessingTime")) or self._per_row
                return _outcome(job_id, info)
            running_until = polled_at - pace.opened_at
            if info.get("state") == "UploadComplete":
                not_started_at = polled_at
            pace.observe(polled_at, int(info.get("numberRecordsProcessed") or 0))
            if not restarted and self._restart_when_finishing(pace):
                restarted = True
                backoff = PollIntervals(self.poll_start, self.poll_factor, self.poll_max)
                pause = next(backoff)
            wait = pause
            aim = pace.aim(polls_left=budget - len(pace.seen)) if expected_rows else None
            if aim is not None and aim + AIM_MARGIN - time.monotonic() < pause:
                # Aim at the job's end (see JobPace) rather than the next backoff step: sooner, so the
                # result is seen soon after it exists. An aim that missed doubles the shortest gap, so a
                # pace that keeps fooling the estimate never turns into a fast polling loop.
                wait = max(min_gap, aim + AIM_MARGIN - time.monotonic())
                min_gap *= 2
            if time.monotonic() + wait > deadline:
                raise TransientError(
                    f"Bulk job {job_id} still {info.get('state')} after {self.max_wait_seconds:.0f} s",
                    code="BULK_TIMEOUT",
                )
            await self._sleep(wait)
            pause = next(backoff)

    @staticmethod
    def _restart_when_finishing(pace: JobPace) -> bool:
        """Whether the backoff starts again: every record is counted, the job is not terminal, and there is no
        pace to aim by (the count came in one step). The org is committing the last chunk: the end is at most one
        chunk's time away, however long the queue before it was, and the doubling so far only measured that
        queue (a 9,263-row job seen counted 3.3 s after its close was done 0.5 s later; the next step, 4 s,
        saw it 3.5 s late). A job that takes longer costs a poll or two more than the doubling would have."""
        return pace.total > 0 and pace.finishing and pace.end_window() is None

    def _running_at_least(self, expected_rows: int | None) -> float:
        """Seconds this job will all but surely still run: as long as the last one was seen running, if it was no
        larger (same org and run; a wrong guess costs only a later first look, never a result)."""
        if not expected_rows or self._last_job is None:
            return 0.0
        rows, running = self._last_job
        return running if expected_rows >= rows else 0.0

    # ------------------------------------------------------------------ results

    def answers_by_counts(self, outcome: JobOutcome, uploaded: int, refused: int = 0) -> bool:
        """Whether the job's successes are taken from its counts instead of its successfulResults file (the
        failures the caller must hold, the refused rows included, stay under MAX_FAILURES_FOR_COUNTS)."""
        return (
            not self.success_results
            and refused + outcome.failed <= MAX_FAILURES_FOR_COUNTS
            and counts_prove_success(outcome, uploaded)
        )

    async def _csv(self, outcome: JobOutcome, kind: str, label: str) -> list[dict[str, str]]:
        if _known_empty(outcome, kind):
            return []  # the job's counts say the file has no rows: save the call
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
        self,
        outcome: JobOutcome,
        external_id_field: str,
        records: Sequence[MappedRecord],
        *,
        label: str,
        trust_counts: bool = False,
    ) -> list[RecordResult]:
        """One result per record from the three result files; anything unreported gets the job's fate.

        ``trust_counts``: ``records`` are exactly the rows the job was uploaded with and
        ``counts_prove_success`` holds, so what failedResults does not list succeeded (no successfulResults).
        """
        pending = _index_by_key(records, external_id_field)
        results: list[RecordResult | None] = [None] * len(records)
        if not trust_counts:
            for row in await self._csv(outcome, "successfulResults", label):
                _place(results, pending, row, external_id_field, _success)
        for row in await self._csv(outcome, "failedResults", label):
            _place(results, pending, row, external_id_field, _failure)
        # unprocessedrecords is not fetched: it could only repeat what "not in either file" already says.
        unfinished = (
            None  # trusted counts: a row neither file lists succeeded
            if trust_counts
            else job_failure(outcome.state, outcome.error_message)
            if outcome.state != "JobComplete"
            else RecordError("NOT_PROCESSED", f"Bulk job {outcome.job_id} did not report this record", [], True)
        )
        return [
            r if r is not None else _unreported(records[i], external_id_field, unfinished)
            for i, r in enumerate(results)
        ]


class IngestJobs:
    """Bulk API 2.0 ingest jobs of one object and external id (an upsert) as a ``ferry.connectors.jobs.JobApi``."""

    def __init__(self, bulk: BulkIngest, sobject: str, external_id_field: str, label: str) -> None:
        self.bulk = bulk
        self.sobject = sobject
        self.external_id_field = external_id_field
        self.label = label

    async def create(self) -> str:
        return await self.bulk._create(self.sobject, self.external_id_field, self.label)

    async def upload(self, job_id: str, body: bytes | AsyncIterator[bytes]) -> None:
        # A PUT is allowed once per job: never repeat one that may have landed (idempotent=False).
        await self.bulk.client.request(
            "PUT",
            self.bulk._path(f"/{job_id}/batches"),
            label=self.label,
            content=body,
            headers={"Content-Type": "text/csv; charset=UTF-8"},
            idempotent=False,
        )

    async def close(self, job_id: str) -> None:
        await self.bulk.client.json(
            "PATCH", self.bulk._path(f"/{job_id}"), label=self.label, json={"state": "UploadComplete"}
        )

    async def phase(self, job_id: str) -> JobPhase:
        # Salesforce deletes a job 7 days after it was created: the lookup then fails (PermanentError).
        info = await self.bulk.client.json("GET", self.bulk._path(f"/{record_id(job_id)}"), label=self.label)
        state = info.get("state")
        if state == "Open":
            return JobPhase.OPEN
        return JobPhase.DONE if state in TERMINAL_STATES else JobPhase.RUNNING

    async def wait(self, job_id: str, *, expected_rows: int | None = None, immediate: bool = False) -> JobOutcome:
        return await self.bulk.wait(job_id, label=self.label, immediate=immediate, expected_rows=expected_rows)

    def results(self, outcome: JobOutcome, *, skip_successes: bool = False) -> AsyncIterator[list[RecordResult]]:
        return self.bulk.stream_results(
            outcome, self.external_id_field, label=self.label, skip_successes=skip_successes
        )

    async def abort(self, job_id: str) -> None:
        await self.bulk._abort(job_id, self.label)


def counts_prove_success(outcome: JobOutcome, uploaded: int) -> bool:
    """The job's counts say every uploaded row was processed: each row failedResults does not list
    succeeded (processed rows are exactly successes plus failures)."""
    return outcome.state == "JobComplete" and outcome.processed == uploaded


def _known_empty(outcome: JobOutcome, kind: str) -> bool:
    if outcome.state != "JobComplete":
        return False
    if kind == "successfulResults":
        return outcome.processed - outcome.failed <= 0
    if kind == "failedResults":
        return outcome.failed <= 0
    return False


def _outcome(job_id: str, info: dict[str, Any]) -> JobOutcome:
    return JobOutcome(
        job_id,
        info["state"],
        info.get("errorMessage"),
        int(info.get("numberRecordsProcessed") or 0),
        int(info.get("numberRecordsFailed") or 0),
    )


def _unreported(record: MappedRecord, external_id_field: str, error: RecordError | None) -> RecordResult:
    """A record no result file listed: the job's fate, or a success when ``error`` is None (trusted counts)."""
    key = key_text(record.get(external_id_field))
    return RecordResult(key, True) if error is None else RecordResult(key, False, errors=[error])


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


# ---------------------------------------------------------------------- streamed ingest

RecordChunks = AsyncIterable[Sequence[MappedRecord]] | Iterable[Sequence[MappedRecord]]
RESULT_BATCH = 5000  # results are yielded in lists of at most this many
RESULT_DOWNLOAD_ATTEMPTS = 4  # a result file whose download breaks off is fetched again, this many times in all
_SPOOL_PIECE = 1 << 20


class _CsvFeed:
    """Pulls record chunks, encodes them, and hands out one job's upload body at a time (<= max bytes)."""

    def __init__(self, chunks: RecordChunks, external_id_field: str, columns: Sequence[str] | None) -> None:
        self._chunks = aiterate(chunks)
        self.external_id_field = external_id_field
        self._columns = list(columns) if columns else None
        self.encoder: RowEncoder | None = None
        self._waiting: deque[bytes] = deque()  # encoded rows not yet uploaded
        self.refused: list[RecordResult] = []  # failed before upload (no external id, unknown column)
        self.exhausted = False

    @property
    def used_up(self) -> bool:
        """Every record has been uploaded or refused: the job just uploaded is the stream's last."""
        return self.exhausted and not self._waiting

    async def fill(self) -> bool:
        """Make sure at least one row is waiting; False when the input is used up."""
        while not self._waiting and not self.exhausted:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.exhausted = True
                break
            self._encode(chunk)
        return bool(self._waiting)

    def _encode(self, chunk: Sequence[MappedRecord]) -> None:
        for record in chunk:
            missing = missing_key_result(record, self.external_id_field)
            if missing is not None:
                self.refused.append(missing)
                continue
            if self.encoder is None:
                self.encoder = RowEncoder(self._columns or list(record))
            unknown = self.encoder.unknown_keys(record)
            if unknown:
                key = key_text(record.get(self.external_id_field))
                message = f"field(s) {', '.join(unknown)} not in this job's CSV header; send them in a separate job"
                self.refused.append(RecordResult(key, False, errors=[RecordError("UNKNOWN_COLUMN", message, unknown)]))
                continue
            self._waiting.append(self.encoder.row(record))

    async def body(self, max_bytes: int, counter: list[int]) -> AsyncIterator[bytes]:
        """One job's CSV: header, then rows until the input ends or the next row would pass ``max_bytes``."""
        assert self.encoder is not None
        size = len(self.encoder.header)
        yield self.encoder.header
        batch: list[bytes] = []
        batch_bytes = 0
        while await self.fill():
            row = self._waiting[0]
            if size + len(row) > max_bytes:
                if size == len(self.encoder.header):
                    raise ConfigError(f"one record alone is larger than the {max_bytes}-byte Bulk upload limit")
                break
            self._waiting.popleft()
            size += len(row)
            counter[0] += 1
            batch.append(row)
            batch_bytes += len(row)
            if batch_bytes >= 256 * 1024:  # hand httpx pieces of ~256 KB, not one tiny write per row
                yield b"".join(batch)
                batch, batch_bytes = [], 0
        if batch:
            yield b"".join(batch)


async def upsert_stream(
    bulk: BulkIngest,
    sobject: str,
    external_id_field: str,
    chunks: RecordChunks,
    *,
    label: str,
    columns: Sequence[str] | None = None,
    on_job: Callable[[str], None] | None = None,
) -> AsyncIterator[StreamAnswer]:
    api_name(sobject), api_name(external_id_field)
    feed = _CsvFeed(chunks, external_id_field, columns)
    api = IngestJobs(bulk, sobject, external_id_field, label)
    jobs = 0
    while await feed.fill():
        uploaded = [0]
        jobs += 1
        job_id = await start_job(api, feed.body(bulk.max_upload_bytes, uploaded), on_created=on_job)
        # The refusals come before the job's answer, so that a JobSucceeded below cannot cover them.
        refused_now, feed.refused = feed.refused, []
        if refused_now:
            yield refused_now
        outcome = await api.wait(job_id, expected_rows=uploaded[0])
        # Only the stream's one job may be answered by its counts: a page spanning two jobs is journaled to
        # both, so the rows a later job carried are not the unanswered rows of its journal.
        by_counts = jobs == 1 and feed.used_up and bulk.answers_by_counts(outcome, uploaded[0], len(refused_now))
        reported = 0
        async for batch in api.results(outcome, skip_successes=by_counts):
            reported += len(batch)
            yield batch
        if by_counts:
            succeeded = outcome.processed - outcome.failed
            reported += succeeded
            yield JobSucceeded(job_id, succeeded)
        if reported != uploaded[0]:
            raise PermanentError(
                f"Bulk job {job_id} reported {reported:,} results for {uploaded[0]:,} uploaded rows; the records "
                "without a result are still pending: send them again (the upsert is idempotent)",
                code="BULK_RESULTS_INCOMPLETE",
            )
        if feed.refused:
            yield feed.refused
            feed.refused = []
    if feed.refused:
        yield feed.refused


async def stream_results(
    bulk: BulkIngest, outcome: JobOutcome, external_id_field: str, *, label: str, skip_successes: bool = False
) -> AsyncIterator[list[RecordResult]]:
    """Every row of successfulResults (unless ``skip_successes``), failedResults and unprocessedrecords as
    results, file by file."""
    for kind in ("successfulResults", "failedResults", "unprocessedrecords"):
        if kind == "successfulResults" and skip_successes:
            continue
        if _known_empty(outcome, kind) or (kind == "unprocessedrecords" and outcome.state == "JobComplete"):
            continue  # a complete job processed every row: nothing can be unprocessed
        async for batch in _result_file(bulk, outcome, kind, external_id_field, label=label):
            yield batch


async def _result_file(
    bulk: BulkIngest, outcome: JobOutcome, kind: str, external_id_field: str, *, label: str
) -> AsyncIterator[list[RecordResult]]:
    """One result file as batches of results, downloaded to an unlinked temporary file first and parsed
    from there. The caller writes every batch to the state DB, which is far slower than the network: read
    straight off the socket, a million-row file kept its connection open for minutes at the consumer's
    pace, and such downloads were cut (seen at 1,000,000 orders). Spooled, the socket is drained at network
    speed and memory stays flat. A download that breaks off anyway is asked for again from the start
    (nothing has been handed out yet), up to RESULT_DOWNLOAD_ATTEMPTS times."""
    with tempfile.TemporaryFile() as spool:
        await _download(bulk, outcome, kind, label, spool)
        spool.seek(0)
        rows = stream_csv_rows(_text_pieces(spool))
        header = await anext(rows, None)
        if header is None:
            return
        make = _result_maker(kind, [h.lstrip("\ufeff") for h in header], external_id_field, outcome)
        batch: list[RecordResult] = []
        async for row in rows:
            batch.append(make(row))
            if len(batch) >= RESULT_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


async def _download(bulk: BulkIngest, outcome: JobOutcome, kind: str, label: str, spool: IO[bytes]) -> None:
    for attempt in range(1, RESULT_DOWNLOAD_ATTEMPTS + 1):
        spool.seek(0)
        spool.truncate()
        try:
            async with bulk.client.stream(
                "GET", bulk._path(f"/{outcome.job_id}/{kind}"), label=label, headers={"Accept": "text/csv"}
            ) as response:
                async for piece in response.aiter_bytes(_SPOOL_PIECE):
                    spool.write(piece)
            return
        except httpx.TransportError as exc:
            if attempt == RESULT_DOWNLOAD_ATTEMPTS:
                raise TransientError(
                    f"Bulk job {outcome.job_id}: the {kind} download broke off {attempt} times "
                    f"({type(exc).__name__}); the job is kept and its results are collected when the run is resumed",
                    code="BULK_RESULTS_DOWNLOAD",
                ) from None
            log.warning("bulk.results_download_retry", job_id=outcome.job_id, kind=kind,
                        bytes_read=spool.tell(), attempt=attempt, error=type(exc).__name__)
            await bulk._sleep(min(8.0, 0.5 * 2**attempt))


async def _text_pieces(spool: IO[bytes]) -> AsyncIterator[str]:
    """The spooled file as text pieces (a multi-byte character may straddle two pieces)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    while piece := spool.read(_SPOOL_PIECE):
        yield decoder.decode(piece)
    yield decoder.decode(b"", final=True)


def _result_maker(
    kind: str, header: list[str], external_id_field: str, outcome: JobOutcome
) -> Callable[[list[str]], RecordResult]:
    """A row of one result file -> RecordResult, by column position (the file's header, looked up once)."""

    def column(name: str) -> Callable[[list[str]], str]:
        at = header.index(name) if name in header else None
        return lambda row: row[at] if at is not None and at < len(row) else ""

    key, sf_id = column(external_id_field), column("sf__Id")
    if kind == "successfulResults":
        created = column("sf__Created")

        def success(row: list[str]) -> RecordResult:
            flag = created(row).strip().lower()
            return RecordResult(key(row), True, id=sf_id(row) or None, created=flag == "true" if flag else None)

        return success
    if kind == "failedResults":
        error = column("sf__Error")
        return lambda row: RecordResult(key(row), False, id=sf_id(row) or None, errors=[parse_sf_error(error(row))])
    unfinished = job_failure(outcome.state, outcome.error_message)
    return lambda row: RecordResult(key(row), False, errors=[unfinished])
