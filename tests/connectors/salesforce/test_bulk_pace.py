"""JobPace: when a Bulk job will be done, from the processed counts its polls saw."""

from __future__ import annotations

import random

import pytest

from ferry.connectors.salesforce.bulk_pace import JobPace


def steady_job(rows: int, chunk: int, period: float, start: float, count_at_end: bool) -> tuple[list[float], float]:
    """Times at which each chunk's count shows, and when the job is done (the two ways an org can report)."""
    shows = [start + (k + (1 if count_at_end else 0)) * period for k in range(rows // chunk)]
    done = start + (rows // chunk) * period
    return shows, done


def processed_at(shows: list[float], chunk: int, when: float) -> int:
    return chunk * sum(1 for t in shows if t <= when)


def test_no_estimate_before_two_steps_were_seen() -> None:
    pace = JobPace(100_000, 0.0)
    assert pace.aim() is None
    pace.observe(1.0, 0)
    assert pace.aim() is None
    pace.observe(3.0, 10_000)  # one step: it may have come at any pace
    assert pace.aim() is None
    pace.observe(5.0, 20_000)
    assert pace.aim() is not None


@pytest.mark.parametrize("count_at_end", [True, False])
def test_latest_end_is_never_before_a_steady_job_ends(count_at_end: bool) -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(200):
        period, start = rng.uniform(0.5, 3.0), rng.uniform(0.0, 3.0)
        shows, done = steady_job(100_000, 10_000, period, start, count_at_end)
        pace = JobPace(100_000, 0.0)
        for when in (1.0, 3.0, 7.0, 15.0):
            if when < done:
                pace.observe(when, processed_at(shows, 10_000, when))
        window = pace.end_window()
        if window is None:
            continue
        earliest, latest = window
        # Counts shown at a chunk's end: the job ends within the window. Shown at its start: the window
        # is when the last count shows, and the end follows within one chunk's time.
        assert done <= latest + 1e-6 + (0 if count_at_end or pace.finishing else period)
        assert pace.finishing or earliest <= done + 1e-6  # once finishing, the window starts at the last poll
        checked += 1
    assert checked > 100


def test_first_aim_at_a_finishing_job_goes_halfway_then_to_the_end() -> None:
    pace = JobPace(30_000, 0.0)
    for when, processed in [(1.0, 0), (3.0, 10_000), (7.0, 20_000), (9.5, 30_000)]:
        pace.observe(when, processed)
    window = pace.end_window()
    assert window is not None
    first = pace.aim()
    assert first is not None and 9.5 < first < window[1]
    pace.observe(first, 30_000)
    assert pace.aim() == pytest.approx(pace.end_window()[1])  # type: ignore[index]


def test_no_early_aim_when_the_poll_budget_has_no_room() -> None:
    pace = JobPace(30_000, 0.0)
    for when, processed in [(3.0, 10_000), (7.0, 20_000), (9.5, 30_000)]:
        pace.observe(when, processed)
    window = pace.end_window()
    assert window is not None and pace.aim(polls_left=2) == pytest.approx(window[1])


def test_polls_that_contradict_a_steady_pace_widen_or_give_up_without_error() -> None:
    pace = JobPace(100_000, 0.0)
    # 10,000 in the first second, then nothing for a minute, then everything but the last chunk at once
    for when, processed in [(1.0, 10_000), (60.0, 10_000), (61.0, 90_000)]:
        pace.observe(when, processed)
    aim = pace.aim()
    assert aim is None or aim >= 61.0


def test_the_budgets_last_poll_goes_a_little_past_the_latest_end() -> None:
    pace = JobPace(100_000, 0.0)
    for when, processed in [(3.0, 10_000), (7.0, 30_000), (15.0, 60_000)]:
        pace.observe(when, processed)
    window = pace.end_window()
    assert window is not None and pace.chunk_seconds() > 0
    assert pace.aim(polls_left=2) == pytest.approx(window[1])
    assert pace.aim(polls_left=1) == pytest.approx(window[1] + 0.25 * pace.chunk_seconds())
