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
    # The pipeline's configuration demands this strategy at this size (e.g. Salesforce's bulk_threshold).
    forced: bool = False
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
    """The cheapest usable strategy; ties go to the one listed first (sinks list lower latency first)."""
    usable = [c for c in costs if c.unavailable is None]
    if not usable:
        raise ValueError("the sink offered no usable write strategy")
    direct = [c for c in usable if not c.remote_job] or usable
    forced = [c for c in usable if c.forced]
    if forced and not (latency_sensitive and forced[0].remote_job):
        return _choice(forced[0], "forced by the pipeline's configuration")
    cheapest = min(usable, key=lambda c: c.calls)
    best_direct = min(direct, key=lambda c: c.calls)
    if cheapest.remote_job and latency_sensitive:
        if remaining_calls is not None and best_direct.calls > remaining_calls:
            return _choice(cheapest, f"only {remaining_calls:,} calls left in the budget")
        return _choice(best_direct, "latency matters: no job queue")
    return _choice(cheapest, "fewest API calls")


def _choice(cost: WriteCost, why: str) -> StrategyChoice:
    reason = f"{cost.note} ({why})" if cost.note else why
    return StrategyChoice(cost.strategy, reason, cost.calls, cost.remote_job)
