"""Runs, and a pipeline's state as a whole: kept across handles, forgotten by a reset of that pipeline only."""

from __future__ import annotations

from ferry.store import JournalEntry, LetterFilter, PlannedRow, Written

from .conftest import Backend, BackendFactory, letter, stage


def test_a_run_is_logged_from_start_to_finish(store: Backend) -> None:
    first = store.start_run("p")
    second = store.start_run("p")
    other = store.start_run("q")
    assert len({first, second, other}) == 3
    run = store.get_run(first)
    assert run is not None
    assert (run.pipeline, run.status, run.finished_at, run.progress_at) == ("p", "running", None, None)
    store.mark_progress(first)
    stamped = store.get_run(first)
    assert stamped is not None and stamped.progress_at
    store.mark_progress(first)  # the first durable progress only
    again = store.get_run(first)
    assert again is not None and again.progress_at == stamped.progress_at
    stats = {"objects": {"Account": {"written": 3}}}
    store.finish_run(first, "failed", stats, "boom")
    done = store.get_run(first)
    assert done is not None and (done.status, done.stats, done.error) == ("failed", stats, "boom")
    assert done.finished_at and done.started_at <= done.finished_at
    assert [r.id for r in store.list_runs("p")] == [second, first]  # newest first
    assert [r.id for r in store.list_runs(limit=2)] == [other, second]
    assert store.get_run(other + 1000) is None


def test_a_worker_notes_a_spent_budget_on_a_running_run_only(store: Backend) -> None:
    run = store.start_run("p")
    store.note_run_paused(run, "api_budget spent")
    noted = store.get_run(run)
    assert noted is not None and (noted.status, noted.error) == ("running", "api_budget spent")
    store.finish_run(run, "paused", {}, "API budget exhausted: api_budget spent")
    store.note_run_paused(run, "a late worker")  # the run is over: its outcome stays as it ended
    done = store.get_run(run)
    assert done is not None and (done.status, done.error) == ("paused", "API budget exhausted: api_budget spent")


def test_calls_helpers_sent_for_a_run_add_up_per_part(backend: BackendFactory) -> None:
    first, second = backend.open(), backend.open()  # two workers' handles
    try:
        run, other = first.start_run("p"), first.start_run("p")
        assert first.run_calls(run) == {}
        first.add_run_calls(run, {"object:Account": 3, "setup": 2, "source": 0})
        second.add_run_calls(run, {"object:Account": 4, "object:Contact": 1})
        second.add_run_calls(other, {"source": 9})
        first.add_run_calls(run, {})
        assert second.run_calls(run) == {"object:Account": 7, "setup": 2, "object:Contact": 1}
        assert first.run_calls(other) == {"source": 9}
    finally:
        first.close()
        second.close()


def test_the_calls_of_many_runs_come_in_one_read(store: Backend) -> None:
    first, middle, quiet, last = (store.start_run("p"), store.start_run("p"), store.start_run("p"),
                                  store.start_run("q"))
    store.add_run_calls(first, {"source": 2, "object:Account": 5})
    store.add_run_calls(middle, {"setup": 4})
    store.add_run_calls(last, {"setup": 1})
    store.add_run_calls(first, {"source": 3})
    assert store.runs_calls([first, quiet, last]) == {first: {"source": 5, "object:Account": 5}, last: {"setup": 1}}
    assert store.runs_calls([middle]) == {middle: {"setup": 4}}
    assert store.runs_calls([quiet]) == {}
    assert store.runs_calls([]) == {}


def test_state_is_the_same_through_another_handle(backend: BackendFactory) -> None:
    first = backend.open()
    run = first.start_run("p")
    first.put_outbox("p", "Contact", [PlannedRow("k", "v1", {"x": 1})])
    first.record_written("p", "Account", [Written("a", "v1", "001A")])
    first.dead_letter("p", run, [letter("Contact", "d")])
    first.close()
    second = backend.open()
    assert second.outbox_count("p", "Contact") == 1
    assert second.target_ids("p", "Account", ["a"]) == {"a": "001A"}
    assert second.dead_letter_keys("p", "Contact") == {"d"}
    assert second.get_run(run) is not None
    second.close()


def test_reset_forgets_only_that_pipeline_s_sync_state(store: Backend) -> None:
    for p in ("a", "b"):
        run = store.start_run(p)
        stage(store, p, "orders", [("1", "v1", b"{}")], run)
        store.commit_planned(p, run, {"Contact": [PlannedRow("k", "v1", {})]}, [letter("Contact", "d")], ("m", 5))
        store.record_written(p, "Account", [Written("a", "v1", "001A")])
        store.save_remote_job(p, "Contact", "750J", [JournalEntry("k", "v1", "K")])
        store.take_api_calls(p, "salesforce", 100, 1, cap=None, since_minute=0)
    store.reset_pipeline("a")
    assert (store.staged_count("a"), store.outbox_count("a"), store.get_mark("a", "m")) == (0, 0, 0)
    assert store.versions_for("a", "Account", ["a"]) == {} and store.target_ids("a", "Account", ["a"]) == {}
    assert store.find_dead_letters(LetterFilter(pipeline="a", status=None)) == []
    assert store.remote_jobs("a") == []
    assert (store.staged_count("b"), store.outbox_count("b"), store.get_mark("b", "m")) == (1, 1, 5)
    assert store.versions_for("b", "Account", ["a"]) == {"a": "v1"}
    assert store.dead_letter_keys("b", "Contact") == {"d"}
    assert [j.job_id for j in store.remote_jobs("b")] == ["750J"]
    # What is not sync state stays: the run log, and the API calls already spent against a shared allocation.
    assert len(store.list_runs("a")) == 1
    assert store.api_call_buckets("a", "salesforce", 0) == [(100, 1)]


def test_runs_left_running_are_closed_as_died_and_pipelines_are_known(store: Backend) -> None:
    gone = store.start_run("p", pid=4242, host="box")
    store.start_run("q")
    row = store.get_run(gone)
    assert row is not None and (row.pid, row.host) == (4242, "box")
    closed = store.close_abandoned_runs("p")
    assert [r.id for r in closed] == [gone] and closed[0].status == "running"
    after = store.get_run(gone)
    assert after is not None and after.status == "died" and after.finished_at
    assert store.close_abandoned_runs("p") == []
    assert store.list_runs("q")[0].status == "running"  # another pipeline's run is not touched
    store.dead_letter("r", None, [letter("Contact", "k")])
    assert store.pipelines() == {"p", "q", "r"}


def test_letters_are_counted_and_paged(store: Backend) -> None:
    store.dead_letter("p", None, [letter("Contact", str(k)) for k in range(7)])
    every = LetterFilter(pipeline="p")
    assert store.count_matching_letters(every) == 7
    assert store.count_matching_letters(LetterFilter(pipeline="nope")) == 0
    ids = [d.id for d in store.find_dead_letters(every, None)]
    assert len(ids) == 7
    assert [d.id for d in store.find_dead_letters(every, 3, 3)] == ids[3:6]
    assert [d.id for d in store.find_dead_letters(every, 3, 6)] == ids[6:]
