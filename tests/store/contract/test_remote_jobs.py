"""Remote-job journal port: a job and the records it carries are journaled before their data is uploaded, so a
crashed run resumes the job; a job answered by its counts records its rows as written, honouring versions and
the failures it reported."""

from __future__ import annotations

from ferry.store import JournalEntry, PlannedRow, Written

from .conftest import Backend, letter, queued


def test_a_journal_grows_page_by_page_and_answers_by_external_key(store: Backend) -> None:
    store.save_remote_job("p", "Contact", "750000000000001AAA", [JournalEntry("a", "v1", "ext-a")])
    store.add_remote_job_records(
        "p", "Contact", "750000000000001AAA", [JournalEntry("b", "v1", "ext-b"), JournalEntry("c", "v2", "ext-c")]
    )
    store.save_remote_job("p", "Account", "750000000000002AAA", [])
    (job,) = store.remote_jobs("p", "Contact")
    assert (job.object, job.job_id, job.entries) == ("Contact", "750000000000001AAA", [("a", "v1"), ("b", "v1"),
                                                                                       ("c", "v2")])
    assert job.created_at
    assert [j.job_id for j in store.remote_jobs("p")] == ["750000000000001AAA", "750000000000002AAA"]
    got = store.remote_job_entries("p", "Contact", ["750000000000001AAA"], ["ext-c", "ext-a", "ext-z"])
    assert sorted(got, key=lambda e: e.key) == [JournalEntry("a", "v1", "ext-a"), JournalEntry("c", "v2", "ext-c")]
    assert store.remote_job_entries("p", "Contact", [], ["ext-a"]) == []
    assert store.remote_job_entries("p", "Contact", ["750000000000001AAA"], []) == []
    assert store.remote_job_entries("p", "Account", ["750000000000001AAA"], ["ext-a"]) == []
    store.record_results("p", "Contact", None, [], [], [], ["750000000000001AAA"])
    store.forget_remote_job("p", "Account", "750000000000002AAA")
    assert store.remote_jobs("p") == []
    assert store.remote_job_entries("p", "Contact", ["750000000000001AAA"], ["ext-a"]) == []


def test_entries_are_looked_up_by_many_external_keys_and_a_journal_page_again_is_kept_once(store: Backend) -> None:
    entries = [JournalEntry(f"k{i}", "v1", f"E{i}") for i in range(1200)]
    store.save_remote_job("p", "Contact", "750J", entries[:600])
    store.add_remote_job_records("p", "Contact", "750J", entries[500:])  # a page journaled again after a retry
    assert len(store.remote_jobs("p")[0].entries) == 1200
    got = store.remote_job_entries("p", "Contact", ["750J", "750K"], [e.external_key for e in entries])
    assert sorted(got, key=lambda e: int(e.key[1:])) == entries


def test_a_job_answered_by_its_counts_records_only_its_queued_unfailed_rows(store: Backend) -> None:
    # Journal: a..e (external keys A..E). b failed (stays queued for its retry), c is no longer queued,
    # d has a newer version queued since the job carried it, e was a dead letter.
    store.put_outbox("p", "Contact", [PlannedRow(k, "v1", {"LastName": k}) for k in "abde"])
    store.put_outbox("p", "Contact", [PlannedRow("d", "v2", {"LastName": "newer"})])
    store.dead_letter("p", None, [letter("Contact", "e", "v0")])
    store.record_written("p", "Contact", [Written("a", "v0", "003A")])
    store.save_remote_job("p", "Contact", "750J", [JournalEntry(k, "v1", k.upper()) for k in "abcde"])
    assert store.record_job_written("p", "Contact", "750J", {"B"}) == 2  # a and e; d's newer version still goes out
    assert store.versions_for("p", "Contact", list("abcde")) == {"a": "v1", "e": "v1"}
    assert store.target_ids("p", "Contact", ["a", "e"]) == {"a": "003A"}  # the job said no id: the known one stays
    assert queued(store, "p", "Contact") == {"b": "v1", "d": "v2"}
    assert store.dead_letter_keys("p", "Contact") == set()
    assert store.record_job_written("p", "Contact", "750J", set()) == 1  # now only b is left of the job
    assert queued(store, "p", "Contact") == {"d": "v2"}
    assert [j.job_id for j in store.remote_jobs("p")] == ["750J"]  # recording its rows does not forget the job


def test_a_job_s_rows_never_move_a_version_back(store: Backend) -> None:
    store.put_outbox("p", "Contact", [PlannedRow("a", "v1", {})])
    store.save_remote_job("p", "Contact", "750J", [JournalEntry("a", "v1", "A")])
    store.record_written("p", "Contact", [Written("a", "v5", "003A")])  # written meanwhile by another path
    assert store.record_job_written("p", "Contact", "750J", ()) == 1  # the row leaves the outbox ...
    assert store.versions_for("p", "Contact", ["a"]) == {"a": "v5"}  # ... the newer version stays
    assert store.outbox_count("p", "Contact") == 0


def test_jobs_are_per_pipeline_and_object(store: Backend) -> None:
    store.put_outbox("p", "Contact", [PlannedRow("a", "v1", {})])
    store.put_outbox("q", "Contact", [PlannedRow("a", "v1", {})])
    store.save_remote_job("q", "Contact", "750J", [JournalEntry("a", "v1", "A")])
    assert store.record_job_written("p", "Contact", "750J", ()) == 0
    assert (store.outbox_count("p"), store.remote_jobs("p")) == (1, [])
