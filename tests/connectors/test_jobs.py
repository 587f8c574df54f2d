"""The connector-neutral remote-job component: the lifecycle (create, journal, upload, close, abort, resume)
and the page journal (every record reaches the journal before it is handed to the upload)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from ferry.connectors.jobs import JobPhase, JournaledPages, resume_job, start_job
from ferry.core.contracts import JobPage
from ferry.core.ports import JournalEntry
from ferry.core.records import MappedRecord
from ferry.errors import TransientError


class _Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, list[str]]] = []

    def job_created(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        self.events.append(("created", job_id, [e.key for e in entries]))

    def page_sent(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        self.events.append(("page", job_id, [e.key for e in entries]))

    def queued(self, external_keys: Sequence[str]) -> list[MappedRecord]:
        return []


def _page(*keys: str) -> JobPage:
    return JobPage([{"Ext": f"x-{k}"} for k in keys], [(k, "v1") for k in keys])


async def test_the_first_page_waits_for_the_job_and_later_pages_are_journaled_before_they_are_handed_on() -> None:
    journal = _Journal()
    paged = JournaledPages(journal, lambda record: str(record["Ext"]))
    records = paged.records([_page("a", "b"), _page("c"), _page("d")])
    first = await anext(records)  # the job API reads the first page before it creates the job
    assert [r["Ext"] for r in first] == ["x-a", "x-b"] and journal.events == []
    paged.job_created("J1")
    assert journal.events == [("created", "J1", ["a", "b"])]
    await anext(records)
    assert journal.events[-1] == ("page", "J1", ["c"])  # journaled before the page was handed on
    # The upload limit is reached: the stream continues in a next job, which carries the page read last too.
    paged.job_created("J2")
    assert journal.events[-1] == ("created", "J2", ["c"])
    await anext(records)
    assert journal.events[-1] == ("page", "J2", ["d"])
    assert paged.jobs == ["J1", "J2"]


async def test_entries_carry_the_sinks_external_key() -> None:
    seen: list[JournalEntry] = []

    class Keep(_Journal):
        def job_created(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
            seen.extend(entries)

    paged = JournaledPages(Keep(), lambda record: str(record["Ext"]).upper())
    async for _ in paged.records([_page("a")]):
        paged.job_created("J")
    assert seen == [JournalEntry("a", "v1", "X-A")]


class _Api:
    """A job API in memory: records every step, fails the upload when told to."""

    def __init__(self, phase: JobPhase = JobPhase.RUNNING, fail_upload: bool = False) -> None:
        self.steps: list[str] = []
        self._phase = phase
        self._fail_upload = fail_upload

    async def create(self) -> str:
        self.steps.append("create")
        return "J1"

    async def upload(self, job_id: str, body: bytes | AsyncIterator[bytes]) -> None:
        data = body if isinstance(body, bytes) else b"".join([piece async for piece in body])
        self.steps.append(f"upload {data.decode()}")
        if self._fail_upload:
            raise TransientError("connection reset during the upload")

    async def close(self, job_id: str) -> None:
        self.steps.append("close")

    async def phase(self, job_id: str) -> JobPhase:
        self.steps.append("phase")
        return self._phase

    async def wait(self, job_id: str, *, expected_rows: int | None = None, immediate: bool = False) -> str:
        self.steps.append(f"wait immediate={immediate}")
        return f"{job_id} done"

    async def results(self, outcome: str) -> AsyncIterator[list[Any]]:
        yield [outcome]

    async def abort(self, job_id: str) -> None:
        self.steps.append("abort")


async def test_a_job_is_journaled_before_its_upload_and_aborted_when_the_upload_fails() -> None:
    api = _Api()
    journaled: list[str] = []
    assert await start_job(api, b"rows", on_created=lambda job: journaled.append(f"{job} after {api.steps}")) == "J1"
    assert journaled == ["J1 after ['create']"] and api.steps == ["create", "upload rows", "close"]
    broken = _Api(fail_upload=True)
    with pytest.raises(TransientError):
        await start_job(broken, b"rows")
    assert broken.steps == ["create", "upload rows", "abort"]
    read_job = _Api()
    await start_job(read_job)  # a read job (Shopify Bulk Operations) has nothing to upload
    assert read_job.steps == ["create"]


async def test_a_resumed_job_is_waited_for_unless_it_never_got_its_data() -> None:
    running = _Api(JobPhase.RUNNING)
    assert await resume_job(running, "J1") == "J1 done"
    assert running.steps == ["phase", "wait immediate=True"]
    empty = _Api(JobPhase.OPEN)
    assert await resume_job(empty, "J1") is None
    assert empty.steps == ["phase", "abort"]
