"""JobPace: when a Bulk job will be done, from the processed counts its polls saw."""

from __future__ import annotations

import random

import pytest

from ferry.connectors.salesforce.bulk_pace import JobPace, pace_prior, slowest_per_row


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


@pytest.mark.parametrize("count_at_end", [True, False])
def test_a_prior_no_faster_than_the_job_never_puts_the_latest_end_before_it_ends(count_at_end: bool) -> None:
    """The pace an earlier job allowed, when it is indeed no faster than this job's, only narrows the window."""
    rng = random.Random(11)
    narrower = 0
    for _ in range(200):
        period, start = rng.uniform(0.5, 3.0), rng.uniform(0.0, 3.0)
        shows, done = steady_job(100_000, 10_000, period, start, count_at_end)
        plain = JobPace(100_000, 0.0)
        primed = JobPace(100_000, 0.0, max_per_row=period / 10_000 * rng.uniform(1.0, 2.0))
        for when in (1.0, 3.0, 7.0, 15.0):
            if when < done:
                plain.observe(when, processed_at(shows, 10_000, when))
                primed.observe(when, processed_at(shows, 10_000, when))
        window, primed_window = plain.end_window(), primed.end_window()
        if window is None or primed_window is None:
            assert primed_window is None or window is None
            continue
        assert done <= primed_window[1] + 1e-6 + (0 if count_at_end or primed.finishing else period)
        assert primed_window[1] <= window[1] + 1e-6
        narrower += primed_window[1] < window[1] - 1e-3
    assert narrower > 10  # it does narrow (with polls at 1, 3, 7, 15 s the job's own polls often pin it already)


def test_a_prior_the_polls_contradict_is_dropped() -> None:
    """An earlier job's pace is a guess: a job slower than it is still estimated, from its own polls alone."""
    plain, primed = JobPace(30_000, 0.0), JobPace(30_000, 0.0, max_per_row=1e-5)  # 0.1 s a chunk: far too fast
    for pace in (plain, primed):
        for when, processed in [(3.0, 10_000), (7.0, 20_000)]:
            pace.observe(when, processed)
    assert primed.end_window() == plain.end_window() is not None


def test_the_slowest_pace_of_a_finished_job_is_its_time_from_not_started_to_done_per_record() -> None:
    assert slowest_per_row(10_000, 2.0, 6.0) == pytest.approx(4e-4)
    assert slowest_per_row(0, 2.0, 6.0) is None and slowest_per_row(10, 6.0, 6.0) is None


def test_the_prior_is_the_reported_processing_time_when_below_the_polls_bound() -> None:
    assert pace_prior(10_000, 2.0, 6.0, 1_900) == pytest.approx(1.9e-4)  # the org's own account, queue apart
    assert pace_prior(10_000, 2.0, 6.0, 9_000) == pytest.approx(4e-4)  # parallel batches' sum: the bound caps it
    assert pace_prior(10_000, 2.0, 6.0, 0) == pytest.approx(4e-4)  # not reported
    assert pace_prior(10_000, 2.0, 6.0, None) == pytest.approx(4e-4)
    assert pace_prior(0, 2.0, 6.0, 1_900) is None


@pytest.mark.parametrize("clock", [0.0, 1576.72, 250_000.0])
def test_the_window_does_not_depend_on_where_the_clock_stands(clock: float) -> None:
    """Polls are stamped by a monotonic clock (hours or days of uptime): the prior on the pace, seconds a record,
    must still bound the window as it does from zero (a rounding room sized by the clock let it through)."""
    pace = JobPace(21_731, clock, max_per_row=3.63e-4)
    pace.observe(clock + 3.18, 10_000)
    pace.observe(clock + 5.36, 20_000)
    window = pace.end_window()
    assert window is not None
    assert window[1] - clock == pytest.approx(5.36 + 10_000 * 3.63e-4, abs=1e-6)
