"""The engine's write planner over a sink's costs, for a sink of no particular system."""

from __future__ import annotations

import pytest

from ferry.core.writes import WriteCost, choose_write, per_record_write

ONE_BY_ONE = WriteCost("one", 5000, 5000, note="5,000 records: one call each (5,000 calls)")
BATCH = WriteCost("batch", 50, 5000, note="5,000 records: batches of 100 (50 calls)")
JOB = WriteCost("job", 6, 5000, remote_job=True, per_record=False, note="5,000 records: one job (~6 calls)")


def test_the_fewest_calls_win_and_the_reason_keeps_the_sinks_words() -> None:
    choice = choose_write([ONE_BY_ONE, BATCH, JOB])
    assert (choice.strategy, choice.estimated_calls, choice.remote_job) == ("job", 6, True)
    assert choice.reason == "5,000 records: one job (~6 calls) (fewest API calls)"
    assert "120 calls left in the budget" in choose_write([BATCH, JOB], remaining_calls=120).reason


def test_latency_keeps_a_batch_off_the_job_queue_unless_the_budget_cannot_pay() -> None:
    assert choose_write([BATCH, JOB], latency_sensitive=True).strategy == "batch"
    poor = choose_write([BATCH, JOB], latency_sensitive=True, remaining_calls=20)
    assert poor.strategy == "job" and "batch would need 50 API calls but only 20 are left" in poor.reason


def test_what_the_configuration_forces_holds_unless_the_budget_cannot_pay_for_it() -> None:
    forced = WriteCost("batch", 50, 5000, note="batches", forced="5,000 records < threshold 10,000")
    assert choose_write([forced, JOB]).reason == "batches (5,000 records < threshold 10,000)"
    assert choose_write([forced, JOB], remaining_calls=10).strategy == "job"
    queued = WriteCost("job", 60, 5000, remote_job=True, per_record=False, forced="at the threshold")
    held = choose_write([BATCH, queued], latency_sensitive=True)
    assert held.strategy == "batch" and "latency matters" in held.reason


def test_unavailable_strategies_are_never_chosen_and_retries_go_record_by_record() -> None:
    refused = WriteCost("batch", 1, 5000, unavailable="refused by the target")
    assert choose_write([ONE_BY_ONE, refused]).strategy == "one"
    assert per_record_write([ONE_BY_ONE, BATCH, JOB]).strategy == "batch"
    with pytest.raises(ValueError):
        choose_write([refused])
    assert choose_write([WriteCost("batch", 0, 0)]).reason == "nothing to write"
