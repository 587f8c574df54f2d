"""The API calls ``ferry worker`` processes send for a distributed run, counted into that run's figures.

An embedded run counts its calls from its own source and sink (``source.api_calls``, ``sink.api_calls`` per label:
the target object, or set-up labels such as "describe"). In a distributed run the workers read and write, so the
coordinator's own counters hold little more than its describe. Each worker keeps its source and sink open for its
whole life, across runs: after each piece of work it adds what its counters grew by since it last reported to the
shared store (``add_run_calls``, by part: ``source``, ``setup``, ``object:<name>``), before it records the answers
those calls brought (so a coordinator that sees the answers sees the calls too). The coordinator adds the sum over
every worker to its own figures when the run ends (``add_to_stats``): ``ferry runs``, ``--json`` and the dashboard
then count every process's calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from ferry.engine.stats import RunStats

log = structlog.get_logger("ferry.distributed")

SOURCE = "source"
SETUP = "setup"
OBJECT = "object:"


@dataclass
class CallTally:
    """Where a long-lived counter stood when it was last reported: the next report is what it grew by since."""

    seen: dict[str, int] = field(default_factory=dict)

    def since_last(self, counts: Mapping[str, int]) -> dict[str, int]:
        # Taken and moved on in one step of the event loop: two items finishing together never report a call twice.
        grown = {label: n - self.seen.get(label, 0) for label, n in counts.items() if n != self.seen.get(label, 0)}
        self.seen = dict(counts)
        return grown

    def give_back(self, grown: Mapping[str, int]) -> None:
        """Calls a report could not store (the database away): counted again in the next report."""
        for label, n in grown.items():
            self.seen[label] = self.seen.get(label, 0) - n


def sink_parts(grown: Mapping[str, int], objects: Collection[str]) -> dict[str, int]:
    """A sink's calls by label as run parts: a pipeline object's label is its writes, any other is set-up."""
    parts: dict[str, int] = {}
    for label, n in grown.items():
        part = f"{OBJECT}{label}" if label in objects else SETUP
        parts[part] = parts.get(part, 0) + n
    return parts


async def report(store: Any, run_id: int, tally: CallTally, counts: Mapping[str, int],
                 parts: Callable[[Mapping[str, int]], Mapping[str, int]]) -> None:
    """Add what ``counts`` grew by since the last report (as run ``parts``) to the run's calls in the shared store.
    A failed report never fails the work it counts (only figures are at stake): its calls go in the next one."""
    grown = tally.since_last(counts)
    if not any(grown.values()):
        return
    try:
        await asyncio.to_thread(store.add_run_calls, run_id, parts(grown))
    except Exception as exc:
        tally.give_back(grown)
        log.warning("worker.calls_not_reported", run_id=run_id, error=f"{type(exc).__name__}: {exc}")


def add_to_stats(stats: RunStats, calls: Mapping[str, int]) -> None:
    """The workers' calls (``run_calls``) added to the coordinator's own figures, part by part."""
    for part, n in calls.items():
        if part == SOURCE:
            stats.source_api_calls += n
        elif part.startswith(OBJECT):
            stats.object(part[len(OBJECT):]).api_calls += n
        else:
            stats.setup_api_calls += n
