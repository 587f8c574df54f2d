"""A Bulk object goes out as ONE streamed job read from the outbox page by page, journaled per page.

* the job's journal (bulk_job_records) holds every record of the job, across pages, so a run that dies
  after the upload resumes that job and never uploads its records again;
* a record dead-lettered after a streamed Bulk job (locked there, then in the lock retry) still carries its
  raw source record (rows are sent without it, and it is fetched only for the dead letters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry.engine import loader as loader_module
from ferry.engine.loader import Loader
from ferry.engine.runner import Runner
from ferry.store import LetterFilter, Store
from tests.engine.world import World, world


class _Crash(Exception):
    pass


def _bulk(spec: dict[str, Any]) -> None:
    spec["target"].update(bulk_threshold=5)


def _loaded_jobs(w: World, sobject: str) -> list[str]:
    """Ingest jobs of ``sobject`` that got data (the sandbox drops an upload once it has processed it)."""
    return [j.id for j in w.org.bulk.ingest_jobs.values() if j.sobject.name == sobject and (j.data or j.processed)]


async def test_a_paged_bulk_job_is_journaled_whole_and_resumed_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader_module, "_JOB_PAGE", 7)  # 20 Accounts: 3 pages in one job
    pages: list[int] = []
    real_add = Store.add_remote_job_records

    def counting_add(self: Store, pipeline: str, obj: str, job_id: str, entries: Any) -> None:
        pages.append(len(entries))
        real_add(self, pipeline, obj, job_id, entries)

    monkeypatch.setattr(Store, "add_remote_job_records", counting_add)

    def crash(self: Loader, *args: Any) -> int:
        raise _Crash("killed before the job's results were recorded")

    with world(tmp_path, customers=20, products=4, orders=10) as w:
        spec = w.spec(w.pipeline_file("paged", _bulk))
        store = Store(tmp_path / "ferry.db")
        with monkeypatch.context() as m:
            m.setattr(Loader, "_reconcile_keyed", crash)
            m.setattr(Loader, "_record_job_succeeded", crash)  # the job's counts answer for its successes
            with pytest.raises(_Crash):
                await Runner(spec, store).run()

        (job,) = store.remote_jobs("paged", "Account")
        queued = sorted(r.key for rows in store.outbox("paged", "Account") for r in rows)
        # The customers stream's Accounts went ahead while the orders (which bring guests) were read
        # (engine/overlap.py rule 3): the job carried those; the guests' wait in the outbox with the rest.
        ahead = sorted(r.key for rows in store.outbox("paged", "Account") for r in rows if r.stream == "customers")
        carried = w.org.bulk.ingest_jobs[job.job_id].processed
        assert carried == len(ahead) > 14 and len(pages) >= 2, (carried, len(ahead), pages)
        # Every record of the job is in its journal, the first page included (read before the job existed).
        assert sorted(k for k, _ in job.entries) == ahead
        assert _loaded_jobs(w, "Account") == [job.job_id], "one Bulk job per object and run"

        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert job.job_id in stats.resumed_bulk_jobs
        assert _loaded_jobs(w, "Account") == [job.job_id], "the resumed job's records were uploaded again"
        assert sorted(w.keys("Account")) == queued, "a record of the job is missing or duplicated"
        assert store.remote_jobs("paged") == []
        assert store.outbox_count("paged") == 0
        for sobject in ("Order", "OrderItem"):
            assert len(w.keys(sobject)) == len(set(w.keys(sobject)))


async def test_a_record_dead_lettered_from_streamed_bulk_results_keeps_its_source(tmp_path: Path) -> None:
    with world(tmp_path, customers=12, products=3, orders=6) as w:
        spec = w.spec(
            w.pipeline_file(
                "letters", lambda s: (_bulk(s), s.update(retry={"max_attempts": 1, "backoff_max_seconds": 0}))
            )
        )
        store = Store(tmp_path / "ferry.db")
        w.org.faults.configure({"lock_row_rate": 1.0})  # every save loses its row lock: no retry budget left
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert "bulk" in stats.objects["Account"].strategy.split("+")  # the guests' few after it go on REST
        letters = store.find_dead_letters(LetterFilter(pipeline="letters", object="Account"), 10_000)
        exhausted = [d for d in letters if d.error_code == "RETRIES_EXHAUSTED"]
        # Every Account the Bulk job carried failed (some others already failed validation before it).
        assert len(exhausted) == stats.objects["Account"].read - (len(letters) - len(exhausted)) > 5
        assert not w.keys("Account")
        for d in exhausted:
            assert d.errors[1]["code"] == "UNABLE_TO_LOCK_ROW", d.errors
            assert d.source_payload is not None and str(d.source_payload["id"]) == d.source_key
            assert d.mapped_payload and d.mapped_payload["Shopify_Customer_Id__c"] == d.record_key
        assert store.remote_jobs("letters") == []


async def test_a_bulk_job_answered_by_its_counts_records_only_the_rows_no_failure_was_reported_for(
    tmp_path: Path,
) -> None:
    # Half the saves lose their row lock: failedResults lists them, the job's counts answer for the rest
    # (no successfulResults). The locked rows must not be taken for successes: they go again through
    # Collections, and every Account lands exactly once.
    with world(tmp_path, customers=40, products=3, orders=6) as w:
        spec = w.spec(w.pipeline_file("counted", _bulk))
        store = Store(tmp_path / "ferry.db")
        w.org.faults.configure({"seed": 3, "lock_row_rate": 0.5})
        downloads_before = dict(w.org.state.budget.by_endpoint)
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        account = stats.objects["Account"]
        assert "bulk" in account.strategy.split("+")
        fetched = {k: v - downloads_before.get(k, 0) for k, v in w.org.state.budget.by_endpoint.items()}
        assert not any(v for k, v in fetched.items() if "successfulresults" in k.lower()), fetched
        assert any(v for k, v in fetched.items() if "failedresults" in k.lower()), fetched
        letters = store.find_dead_letters(LetterFilter(pipeline="counted", object="Account"), 10_000)
        assert account.written == account.read - len(letters) > 10
        assert sorted(w.keys("Account")) == sorted(set(w.keys("Account")))
        assert len(w.keys("Account")) == account.written
        assert store.outbox_count("counted", "Account") == 0 and store.remote_jobs("counted") == []


async def test_a_two_way_pipeline_remembers_what_a_bulk_job_wrote_so_its_echo_is_dropped(tmp_path: Path) -> None:
    # A backfill of a two-way pipeline big enough for Bulk API 2.0: the job's counts answer for its rows (no
    # per-record results). Each written record's digest is kept all the same, so the same records coming back
    # (the other direction's write raising webhooks) are echoes, not written again (TwoWay.filter compares with
    # these digests).
    def two_way(spec: dict[str, Any]) -> None:
        _bulk(spec)
        spec["two_way"] = {"conflict": "source_wins"}

    with world(tmp_path, customers=16, products=2, orders=2) as w:
        spec = w.spec(w.pipeline_file("twobulk", two_way))
        store = Store(tmp_path / "ferry.db")
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert "bulk" in stats.objects["Account"].strategy.split("+")  # the guests' few after it go on REST
        written = store.versions_for("twobulk", "Account", w.keys("Account"))
        digests = store.written_digests("twobulk", "Account", list(written))
        assert len(written) == stats.objects["Account"].written > 5 and set(digests) == set(written)
