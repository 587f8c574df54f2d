"""The remote-job page journal: every record reaches the journal before it is handed to the upload."""

from __future__ import annotations

from collections.abc import Sequence

from ferry.connectors.jobs import JournaledPages
from ferry.core.contracts import JobPage
from ferry.core.ports import JournalEntry
from ferry.core.records import MappedRecord


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
