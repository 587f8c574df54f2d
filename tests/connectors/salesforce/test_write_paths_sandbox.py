"""Every write strategy against the Salesforce sandbox: per-record results, API calls, fallbacks, budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ferry.connectors.salesforce import SalesforceSink
from ferry.connectors.salesforce.bulk_pace import JobPace
from ferry.connectors.salesforce.strategy import Strategy
from ferry.core.contracts import JobPage
from ferry.core.ports import JournalEntry
from ferry.core.results import JobSucceeded, RecordResult, StreamAnswer
from ferry.errors import BudgetExhausted, TransientError

from .conftest import Org, start_org

EXT = "Shopify_Customer_Id__c"


def _contacts(n: int, prefix: str = "k") -> list[dict[str, object]]:
    return [{EXT: f"{prefix}{i}", "LastName": f"Last {i}", "Email": f"{prefix}{i}@example.com"} for i in range(n)]


async def test_composite_carries_1000_records_in_one_api_call(org: Org) -> None:
    records = _contacts(2300)
    records[7]["LastName"] = None  # required: a per-record error inside a subrequest
    records[1999]["Email"] = "not-an-email"
    async with SalesforceSink(org.config()) as sink:
        choice = sink.choose_strategy("Contact", 2300, latency_sensitive=True)
        assert choice.strategy is Strategy.COMPOSITE and choice.estimated_calls == 3
        first = await sink.upsert("Contact", EXT, records, Strategy.COMPOSITE)
        assert sink.api_calls["Contact"] == 3  # 1,000 + 1,000 + 300 records
        assert [r.key for r in first] == [f"k{i}" for i in range(2300)]
        assert {i for i, r in enumerate(first) if not r.success} == {7, 1999}
        assert first[7].errors[0].code == "REQUIRED_FIELD_MISSING" and first[7].errors[0].fields == ["LastName"]
        assert first[1999].errors[0].code == "INVALID_EMAIL_ADDRESS"
        assert all(r.created and r.id for i, r in enumerate(first) if i not in (7, 1999))
        again = await sink.upsert("Contact", EXT, records, Strategy.COMPOSITE, label="again")
        assert all(r.created is False for i, r in enumerate(again) if i not in (7, 1999))
        assert [r.id for r in again] == [r.id for r in first]
    stats = org.sandbox.state.budget.by_endpoint
    assert any("composite" in k and v == 6 for k, v in stats.items()), stats


async def test_composite_refused_falls_back_to_collections(org: Org) -> None:
    org.sandbox.faults.configure({"rules": [{"status": 400, "method": "POST", "path": "composite", "count": 1,
                                             "error_code": "LIMIT_EXCEEDED", "message": "governor limit"}]})
    async with SalesforceSink(org.config()) as sink:
        results = await sink.upsert("Contact", EXT, _contacts(450), Strategy.COMPOSITE)
        assert all(r.success for r in results)
        assert sink.composite_refused is not None and "LIMIT_EXCEEDED" in sink.composite_refused
        assert sink.api_calls["Contact"] == 1 + 3  # the refused composite, then 3 Collections calls
        later = sink.choose_strategy("Contact", 900)
        assert later.strategy is Strategy.COLLECTIONS and "Composite refused" in later.reason


async def test_single_record_upsert_reports_created_then_updated_and_field_errors(org: Org) -> None:
    async with SalesforceSink(org.config()) as sink:
        assert sink.choose_strategy("Contact", 1).strategy is Strategy.SINGLE
        [made] = await sink.upsert("Contact", EXT, [{EXT: "a/b?c", "LastName": "One"}], Strategy.SINGLE)
        [same] = await sink.upsert("Contact", EXT, [{EXT: "a/b?c", "LastName": "Two"}], Strategy.SINGLE)
        [bad] = await sink.upsert("Contact", EXT, [{EXT: "s2", "LastName": None}], Strategy.SINGLE)
        rows = await sink.query("SELECT LastName FROM Contact WHERE Shopify_Customer_Id__c = 'a/b?c'")
    assert made.success and made.created and made.id
    assert same.success and same.created is False and same.id == made.id
    assert rows == [{"attributes": rows[0]["attributes"], "LastName": "Two"}]
    assert not bad.success and bad.errors[0].code == "REQUIRED_FIELD_MISSING" and "LastName" in bad.errors[0].fields


async def test_locked_rows_are_retried_in_smaller_serial_batches(org: Org) -> None:
    org.sandbox.faults.configure({"seed": 11, "lock_row_rate": 0.1})
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with SalesforceSink(org.config(), sleep=sleep) as sink:
        results = await sink.upsert("Contact", EXT, _contacts(400), Strategy.COLLECTIONS)
        assert sink.lock_retries > 0 and sleeps  # some rows were locked and resent after a pause
        still = [r for r in results if not r.success]
        assert all(r.transient and r.errors[0].code == "UNABLE_TO_LOCK_ROW" for r in still)
        assert len(still) < sink.lock_retries
    org.sandbox.faults.configure({})
    held = {r[EXT] for r in org.sandbox.state.store.table("Contact").rows.values()}
    assert held == {r.key for r in results if r.success}


async def test_budget_share_stops_before_the_call_that_would_pass_it(tmp_path: Path) -> None:
    org, running = start_org(tmp_path, daily_api_limit=100)
    try:
        async with SalesforceSink(org.config(api_budget="5%")) as sink:  # 5 of 100 calls
            for n in range(4):
                await sink.upsert("Contact", EXT, _contacts(1, f"b{n}-"), Strategy.SINGLE)
            assert sink.budget_left() == 1
            await sink.upsert("Contact", EXT, _contacts(1, "b4-"), Strategy.SINGLE)
            with pytest.raises(BudgetExhausted) as info:
                await sink.upsert("Contact", EXT, _contacts(1, "b5-"), Strategy.SINGLE)
        assert "api_budget (5%: 5 calls per rolling 24 h)" in str(info.value) and "Resume after " in str(info.value)
        assert info.value.resume_after and info.value.resume_after.endswith("Z")
        assert org.sandbox.state.budget.used == 5  # the sixth call was never sent
    finally:
        running.stop()


async def test_the_orgs_own_refusal_stops_every_later_call_and_says_when_to_resume(tmp_path: Path) -> None:
    org, running = start_org(tmp_path, daily_api_limit=10)
    try:
        async with SalesforceSink(org.config()) as sink:
            await sink.upsert("Contact", EXT, _contacts(1, "o0-"), Strategy.SINGLE)
            assert sink.api_usage == (1, 10)
            org.sandbox.state.budget.used = 10  # other users of the org spend the rest meanwhile (unseen by us)
            with pytest.raises(BudgetExhausted) as info:
                await sink.upsert("Contact", EXT, _contacts(1, "o1-"), Strategy.SINGLE)
            assert "TotalRequests" in str(info.value) and "at the latest" in str(info.value)
            assert info.value.resume_after and info.value.resume_after.endswith("Z")
            sent = sum(sink.api_calls.values())  # requests that reached the org, the refused one included
            with pytest.raises(BudgetExhausted, match="org's daily API allocation is spent"):
                await sink.upsert("Contact", EXT, _contacts(1, "o2-"), Strategy.SINGLE)
            assert sum(sink.api_calls.values()) == sent  # the guard stopped it before sending
    finally:
        running.stop()


async def test_planner_picks_bulk_when_the_budget_cannot_pay_for_rest(tmp_path: Path) -> None:
    org, running = start_org(tmp_path, daily_api_limit=1000)
    try:
        async with SalesforceSink(org.config(api_budget=20)) as sink:
            await sink.describe_object("Contact")
            choice = sink.choose_strategy("Contact", 1900, latency_sensitive=False)
            assert choice.strategy is Strategy.COMPOSITE  # 2 calls, affordable
            many = sink.choose_strategy("Contact", 1900 * 15, latency_sensitive=True)
            assert many.strategy is Strategy.BULK and "left in the budget" in many.reason
    finally:
        running.stop()


async def _chunks(n: int, size: int, prefix: str = "st") -> AsyncIterator[list[dict[str, object]]]:
    for start in range(0, n, size):
        yield [{EXT: f"{prefix}{i}", "LastName": f"L{i}", "Description": "line one\nline \"two\", three"}
               for i in range(start, min(n, start + size))]


async def _answers(stream: AsyncIterator[StreamAnswer]) -> tuple[list[RecordResult], list[JobSucceeded]]:
    results: list[RecordResult] = []
    succeeded: list[JobSucceeded] = []
    async for answer in stream:
        if isinstance(answer, JobSucceeded):
            succeeded.append(answer)
        else:
            assert len(answer) <= 5000
            results.extend(answer)
    return results, succeeded


@pytest.mark.parametrize("success_results", [True, False])
async def test_streamed_bulk_upsert_accounts_for_every_record(org: Org, success_results: bool) -> None:
    jobs: list[tuple[str, str]] = []
    config = org.config(bulk_success_results=success_results)
    async with SalesforceSink(config, on_bulk_job=lambda j, o: jobs.append((j, o))) as sink:
        results, succeeded = await _answers(sink.bulk_stream("Contact", EXT, _chunks(12_000, 1000)))
        calls = sink.api_calls["Contact"]
        # one job; create, PUT, close, polls, and successfulResults only when asked for
        assert len(jobs) == 1 and calls <= (10 if success_results else 9), (jobs, calls)
        mixed: list[dict[str, object]] = [{EXT: "x1", "LastName": "A"}, {"LastName": "no key"},
                                          {EXT: "x2", "LastName": "B", "Phone": "1"}, {EXT: "x3", "LastName": None}]
        odd, odd_succeeded = await _answers(sink.bulk_stream("Contact", EXT, [mixed]))
    if success_results:
        assert not succeeded and not odd_succeeded
        assert sorted(r.key for r in results) == sorted(f"st{i}" for i in range(12_000))
        assert all(r.success and r.created and r.id for r in results)
    else:
        # Complete, 12,000 processed, none failed: the counts answer for the job instead of 12,000 rows.
        assert results == [] and succeeded == [JobSucceeded(jobs[0][0], 12_000)]
        # x1 is the one upload that succeeded; the refusals and x3's failure come as rows, before it.
        assert odd_succeeded == [JobSucceeded(jobs[1][0], 1)]
        odd.append(RecordResult("x1", True))
    by_key = {r.key: r for r in odd}
    assert len(odd) == 4 and by_key["x1"].success
    assert by_key[""].errors[0].code == "MISSING_EXTERNAL_ID"
    assert by_key["x2"].errors[0].code == "UNKNOWN_COLUMN" and by_key["x2"].errors[0].fields == ["Phone"]
    assert by_key["x3"].errors[0].code == "REQUIRED_FIELD_MISSING"
    stored = org.sandbox.state.store.table("Contact").rows
    assert any(r.get("Description") == "line one\nline \"two\", three" for r in stored.values())


async def test_unfinished_bulk_job_is_found_and_resumed_not_duplicated(org: Org) -> None:
    records = _contacts(300, "r")
    async with SalesforceSink(org.config()) as sink:
        # Crash 1: after the job was created, before its upload. It is found, aborted, and reported
        # as "never got its data" so the caller upserts again.
        empty = await sink._bulk._create("Contact", EXT, "Contact")
        assert await sink.unfinished_bulk_jobs("Contact") == [empty]
        assert await sink.resume_job(empty, EXT, records, label="Contact") is None
        assert await sink.unfinished_bulk_jobs("Contact") == []
        # Crash 2: after the upload. The id the runner kept (on_bulk_job) collects the results;
        # nothing is uploaded again.
        jobs: list[str] = []
        async with SalesforceSink(org.config(), on_bulk_job=lambda j, o: jobs.append(j)) as crashed:
            await crashed.upsert("Contact", EXT, records, Strategy.BULK)
        before = org.sandbox.state.budget.by_endpoint.copy()
        results = await sink.resume_job(jobs[0], EXT, records, label="Contact")
        uploads = {k: v - before.get(k, 0) for k, v in org.sandbox.state.budget.by_endpoint.items() if "PUT" in k}
    assert results is not None and all(r.success for r in results) and [r.key for r in results] == [
        f"r{i}" for i in range(300)]
    assert not any(uploads.values())
    assert len(org.sandbox.state.store.table("Contact").rows) == 300


async def test_bulk_job_is_polled_with_backoff_not_a_fixed_interval(tmp_path: Path) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(seconds / 20)  # real time passes, fast enough to see several polls

    org, running = start_org(tmp_path, latency="real")  # the job queues ~2 s, then processes in chunks
    try:
        async with SalesforceSink(org.config(bulk_poll_max_interval=8), sleep=sleep) as sink:
            results = await sink.upsert("Contact", EXT, _contacts(3000, "p"), Strategy.BULK)
            polls = sink._bulk.polls
    finally:
        running.stop()
    assert all(r.success for r in results)
    assert pauses[:3] == [1.0, 2.0, 4.0] and all(p <= 8 for p in pauses), pauses
    assert polls == len(pauses)  # slept once before the first poll, then once between polls


async def test_a_second_job_no_smaller_skips_the_looks_the_first_showed_useless(tmp_path: Path) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(seconds)

    org, running = start_org(tmp_path, latency="real")  # each job queues ~2 s: the 1 s look sees it waiting
    try:
        async with SalesforceSink(org.config(), sleep=sleep) as sink:
            first, first_ok = await _answers(sink.bulk_stream("Contact", EXT, [_contacts(2000, "f")]))
            assert sink._bulk._last_job is not None
            rows, ran = sink._bulk._last_job
            polls_first, pauses_first = sink._bulk.polls, len(pauses)
            second, second_ok = await _answers(sink.bulk_stream("Contact", EXT, [_contacts(3000, "s")]))
            polls_second = sink._bulk.polls - polls_first
    finally:
        running.stop()
    assert first == second == [] and [j.rows for j in first_ok + second_ok] == [2000, 3000]
    assert rows == 2000 and ran >= 1.0  # the first job was seen still running at its 1 s look, or later
    assert pauses[pauses_first] == pytest.approx(max(1.0, ran))  # the second job's first look waits that long
    assert polls_second <= polls_first



def _steady_org(tmp_path: Path, queue: float, chunk_seconds: float) -> tuple[Org, Any]:
    """An org whose Bulk jobs wait ``queue`` seconds, then take ``chunk_seconds`` a chunk of 1,000 rows (the count
    of a chunk shows as it starts, as the sandbox's latency profile has it), with no other latency."""
    org, running = start_org(tmp_path, bulk_chunk_rows=1000)
    org.sandbox.bulk.queue_delay = lambda: queue
    org.sandbox.bulk.chunk_delay = lambda rows: chunk_seconds * rows / 1000
    return org, running


async def test_a_one_chunk_job_seen_counted_is_polled_again_from_the_first_backoff_step(tmp_path: Path) -> None:
    """Counted in one step, not yet complete: the org commits its only chunk, so the next look is the first
    backoff step (1 s), not the doubled one (4 s) that saw it seconds late."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(seconds)

    org, running = _steady_org(tmp_path, queue=1.5, chunk_seconds=2.0)  # counted at ~1.5 s, complete at ~3.5 s
    try:
        async with SalesforceSink(org.config(), sleep=sleep) as sink:
            results = await sink.upsert("Contact", EXT, _contacts(800, "o"), Strategy.BULK)
            polls = sink._bulk.polls
    finally:
        running.stop()
    assert all(r.success for r in results)
    assert pauses == [1.0, 2.0, 1.0] and polls == 3  # queued at 1 s, counted at 3 s, complete at 4 s


async def test_a_job_learns_the_pace_the_last_one_showed(tmp_path: Path) -> None:
    """The first job's processing time (its job info's totalProcessingTime, below the bound its polls set: queued at
    the 1 s look, done at the 3 s one, 1 ms a record) gives the seconds a record took; the next job of the sink
    starts with that as the prior on its pace, and it is no faster than the org's real pace."""
    priors: list[float | None] = []
    real_pace = JobPace.__init__

    def spying_init(self: JobPace, *args: Any, **kw: Any) -> None:
        real_pace(self, *args, **kw)
        priors.append(self.max_per_row)

    org, running = _steady_org(tmp_path, queue=1.5, chunk_seconds=0.4)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(JobPace, "__init__", spying_init)
            async with SalesforceSink(org.config()) as sink:
                await _answers(sink.bulk_stream("Contact", EXT, [_contacts(2000, "a")]))
                learnt = sink._bulk._per_row
                await _answers(sink.bulk_stream("Contact", EXT, [_contacts(3000, "b")]))
    finally:
        running.stop()
    assert learnt is not None and 0.4 / 1000 <= learnt < 0.7 / 1000
    assert priors == [None, learnt]


async def test_bulk_result_download_cut_midway_is_fetched_again_without_loss_or_duplicates(org: Org) -> None:
    # A long successfulResults download dropped halfway (a proxy, the org): fetched again from the start
    # (it is spooled to disk before any result is handed out), so every record still gets exactly one result.
    org.sandbox.faults.configure({"rules": [{"kind": "cut", "path": "successfulResults", "count": 2}]})
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    async with SalesforceSink(org.config(bulk_success_results=True), sleep=sleep) as sink:
        results = [r async for batch in sink.bulk_stream("Contact", EXT, _chunks(12_000, 1000)) for r in batch]
    assert org.sandbox.faults.injected["cut"] == 2
    assert sorted(r.key for r in results) == sorted(f"st{i}" for i in range(12_000))
    assert all(r.success and r.created and r.id for r in results)
    downloads = sum(v for k, v in org.sandbox.state.budget.by_endpoint.items() if "successfulresults" in k.lower())
    assert downloads == 3, org.sandbox.state.budget.by_endpoint


async def test_bulk_result_download_that_keeps_breaking_is_a_transient_error(org: Org) -> None:
    org.sandbox.faults.configure({"rules": [{"kind": "cut", "path": "successfulResults"}]})

    async def sleep(seconds: float) -> None:
        pass

    got: list[StreamAnswer] = []
    async with SalesforceSink(org.config(bulk_success_results=True), sleep=sleep) as sink:
        with pytest.raises(TransientError, match="successfulResults download broke off 4 times") as caught:
            async for batch in sink.bulk_stream("Contact", EXT, _chunks(12_000, 1000)):
                got.append(batch)
    assert caught.value.code == "BULK_RESULTS_DOWNLOAD"
    assert got == []  # nothing is handed out from a file that never arrived whole: every record is still pending


class _Journal:
    """The engine's side of a remote job, in memory: what each job carries, and the queued records."""

    def __init__(self, records: list[dict[str, object]]) -> None:
        self.records = {str(r[EXT]): r for r in records}
        self.jobs: dict[str, list[str]] = {}
        self.asked_again: list[str] = []

    def job_created(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        self.jobs[job_id] = [e.external_key for e in entries]

    def page_sent(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        self.jobs[job_id] += [e.external_key for e in entries]

    def queued(self, external_keys: Sequence[str]) -> list[dict[str, object]]:
        self.asked_again += external_keys
        return [self.records[k] for k in external_keys]


async def test_the_sink_stream_journals_every_row_and_sends_locked_rows_again_before_the_jobs_answer(
    org: Org,
) -> None:
    records = _contacts(3000, "j")
    pages = [JobPage(records[i : i + 1000], [(f"k{j}", "v") for j in range(i, i + 1000)]) for i in (0, 1000, 2000)]
    journal = _Journal(records)
    org.sandbox.faults.configure({"seed": 5, "lock_row_rate": 0.05})
    async with SalesforceSink(org.config()) as sink:
        answers = [a async for a in sink.upsert_stream("Contact", EXT, pages, journal)]
    [job] = journal.jobs
    assert sorted(journal.jobs[job]) == sorted(str(r[EXT]) for r in records)  # every row journaled to its job
    assert journal.asked_again, "the fault injected no lock: the test proves nothing"
    results = [r for a in answers if not isinstance(a, JobSucceeded) for r in a]
    # The only failures were locks: the rows the job found locked were read back from the journal and sent
    # again through Collections, and those answers (not the job's locked failures) came out, all of them
    # before the job's JobSucceeded, which answers for the rest.
    assert isinstance(answers[-1], JobSucceeded) and not any(isinstance(a, JobSucceeded) for a in answers[:-1])
    assert sorted(r.key for r in results) == sorted(journal.asked_again)
    assert answers[-1].rows + len(results) == 3000
    still_locked = [r for r in results if not r.success]
    assert all(r.errors[0].code == "UNABLE_TO_LOCK_ROW" for r in still_locked)
    assert len(still_locked) < len(results) // 2  # the Collections retry cleared most of them
