"""Write strategies as a sink offers them, with their cost in API calls, and the planner's choice.

A sink names its own strategies (Salesforce: ``single``, ``collections``, ``composite``, ``bulk``); the
engine never interprets a name. It asks the sink what writing ``n`` records of an object would cost by each
strategy it offers, and ``choose_write`` picks: the one the pipeline forces, else the fewest calls, a
queued (remote-job) strategy only when latency does not matter or the budget left cannot pay for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WriteCost:
    """What writing ``records`` through ``strategy`` would cost."""

    strategy: str
    calls: int
    records: int
    # A remote job: the records are uploaded, queued and answered later (journaled, resumable after a crash).
    remote_job: bool = False
    # Answers each record within its own call: safe for retries and replay (a remote job is not).
    per_record: bool = True
    # Words a human reads in `ferry plan` and the run report: what this strategy is and why it costs that.
    note: str = ""
    # Why the pipeline's configuration demands this strategy at this size (e.g. Salesforce's bulk_threshold),
    # or None. Only the budget overrides it (choose_write).
    forced: str | None = None
    # The sink cannot use it this run, and why (e.g. the org refused Composite): shown, never chosen.
    unavailable: str | None = None


@dataclass(slots=True)
class StrategyChoice:
    """What the write planner chose for a batch, with the reason a human reads in ``ferry plan`` and run records."""

    strategy: str
    reason: str
    estimated_calls: int = 0
    remote_job: bool = False


def choose_write(
    costs: Sequence[WriteCost],
    *,
    remaining_calls: int | None = None,
    latency_sensitive: bool = False,
) -> StrategyChoice:
    """The strategy for a batch, with the reason: the sink's note on it (count, what it is, its calls) and why.

    In order: nothing to write; what the pipeline's configuration forces (unless the budget left cannot pay
    for it and another strategy needs fewer calls, or latency matters and it is a remote job); the fewest
    calls, except that when latency matters a remote job is taken only if the budget cannot pay for the
    cheapest direct strategy. Ties go to the one listed first (sinks list lower latency first).
    """
    usable = [c for c in costs if c.unavailable is None]
    if not usable:
        raise ValueError("the sink offered no usable write strategy")
    if all(c.records <= 0 for c in usable):
        return StrategyChoice(usable[0].strategy, "nothing to write", 0, usable[0].remote_job)
    left = f"; {remaining_calls:,} calls left in the budget" if remaining_calls is not None else ""
    cheapest = min(usable, key=_calls)
    direct = [c for c in usable if not c.remote_job]
    forced = next((c for c in usable if c.forced), None)
    queue_refused = forced is not None and forced.remote_job and latency_sensitive  # the configured job waits
    if forced is not None and not queue_refused:
        if _short(forced, remaining_calls) and cheapest.calls < forced.calls:
            return _choice(cheapest, _budget_why(forced, remaining_calls))
        return _choice(forced, f"{forced.forced}{left}")
    if (cheapest.remote_job or queue_refused) and latency_sensitive and direct:
        best_direct = min(direct, key=_calls)
        job = min((c for c in usable if c.remote_job), key=_calls)
        if _short(best_direct, remaining_calls) and job.calls < best_direct.calls:
            return _choice(job, f"latency matters, but {_budget_why(best_direct, remaining_calls)}")
        return _choice(best_direct, f"latency matters: no job queue{left}")
    return _choice(cheapest, f"fewest API calls{left}")


def per_record_write(costs: Sequence[WriteCost]) -> WriteCost:
    """The cheapest usable strategy that answers each record in its own call and is no remote job: what
    retries and dead-letter replays go through."""
    usable = [c for c in costs if c.unavailable is None and c.per_record and not c.remote_job]
    if not usable:
        raise ValueError("the sink offered no per-record write strategy")
    return min(usable, key=_calls)


def _calls(cost: WriteCost) -> int:
    return cost.calls


def _short(cost: WriteCost, remaining_calls: int | None) -> bool:
    return remaining_calls is not None and cost.calls > remaining_calls


def _budget_why(cost: WriteCost, remaining_calls: int | None) -> str:
    return f"{cost.strategy} would need {cost.calls:,} API calls but only {remaining_calls:,} are left in the budget"


def _choice(cost: WriteCost, why: str) -> StrategyChoice:
    reason = f"{cost.note} ({why})" if cost.note else why
    return StrategyChoice(cost.strategy, reason, cost.calls, cost.remote_job)
