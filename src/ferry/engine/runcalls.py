"""The API calls ``ferry worker`` processes send for a distributed run, counted into that run's figures.

An embedded run counts its calls from its own source and sink (``source.api_calls``, ``sink.api_calls`` per label:
the target object, or set-up labels such as "describe"). In a distributed run the workers read and write, so the
coordinator's own counters hold little more than its describe. Each worker keeps its source and sink open for its
whole life, across runs: after each piece of work it adds what its counters grew by since it last reported to the
shared store (``add_run_calls``, by part: ``source``, ``setup``, ``object:<name>``), before it records the answers
those calls brought (so a coordinator that sees the answers sees the calls too). The coordinator adds the sum over
every worker to its own figures when the run ends (``add_to_stats``), and notes the tally it summed
(``RunStats.run_calls_counted``).

The coordinator reports its own calls there too, as it goes (its describe, the source's set-up): a coordinator
killed mid-run leaves a row closed later as ``died``, with no figures of its own, and its calls are still known.

``with_run_calls`` is the one place that gives a listed run's calls (``ferry runs``, ``--json``, the dashboard): a
row's figures plus what the shared tally holds beyond what the row already counted. A run that ended normally adds
nothing (or the calls a worker reported after its end); a running one shows the calls so far; a died one, every
call its processes reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from ferry.core.ports import RunRow
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
                 parts: Callable[[Mapping[str, int]], Mapping[str, int]]) -> Mapping[str, int]:
    """Add what ``counts`` grew by since the last report (as run ``parts``) to the run's calls in the shared store;
    returns the parts added. A failed report never fails the work it counts (only figures are at stake): its
    calls go in the next one."""
    grown = tally.since_last(counts)
    if not any(grown.values()):
        return {}
    added = parts(grown)
    try:
        await asyncio.to_thread(store.add_run_calls, run_id, added)
    except Exception as exc:
        tally.give_back(grown)
        log.warning("worker.calls_not_reported", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
        return {}
    return added


async def report_source(store: Any, run_id: int, tally: CallTally, source: Any) -> Mapping[str, int]:
    """``report`` of a source's calls (one part: ``source``)."""
    return await report(store, run_id, tally, {SOURCE: source.api_calls}, lambda grown: grown)


async def report_sink(store: Any, run_id: int, tally: CallTally, sink: Any,
                      objects: Collection[str]) -> Mapping[str, int]:
    """``report`` of a sink's calls, by label: a pipeline object's writes, or set-up (``sink_parts``)."""
    return await report(store, run_id, tally, sink.api_calls, lambda grown: sink_parts(grown, objects))


def _split(calls: Mapping[str, int]) -> tuple[int, int, dict[str, int]]:
    """Run parts as (source calls, set-up calls, calls per object)."""
    source = setup = 0
    objects: dict[str, int] = {}
    for part, n in calls.items():
        if part == SOURCE:
            source += n
        elif part.startswith(OBJECT):
            objects[part[len(OBJECT):]] = objects.get(part[len(OBJECT):], 0) + n
        else:
            setup += n
    return source, setup, objects


def add_to_stats(stats: RunStats, calls: Mapping[str, int]) -> None:
    """The workers' calls (``run_calls``) added to the coordinator's own figures, part by part, and their target
    calls to the run's budget figures (``budget_with``)."""
    source, setup, per_object = _split(calls)
    stats.source_api_calls += source
    stats.setup_api_calls += setup
    for name, n in per_object.items():
        stats.object(name).api_calls += n
    stats.budget = budget_with(stats.budget, setup + sum(per_object.values()))


def budget_with(budget: Mapping[str, Any] | None, target_calls: int) -> dict[str, Any] | None:
    """A run's target budget figures (the coordinator's ``Sink.budget_status``) with ``target_calls`` more: target
    calls other processes sent for the run, which the coordinator's own budget guard never saw (it counts its own
    client's calls, and the shared ledger as it stood when it opened). Its ``spent_this_run`` and ``spent_24h``
    grow by them, ``remaining`` shrinks."""
    if budget is None:
        return None
    out = dict(budget)
    if target_calls <= 0:
        return out
    for key in ("spent_this_run", "spent_24h"):
        if isinstance(out.get(key), int):
            out[key] += target_calls
    if isinstance(out.get("remaining"), int):
        out["remaining"] = max(0, out["remaining"] - target_calls)
    return out


def with_run_calls(store: Any, rows: Sequence[RunRow]) -> list[RunRow]:
    """The rows, each with the calls its shared tally holds beyond what its figures counted (one read for all)."""
    tallies = store.runs_calls([r.id for r in rows]) if rows else {}
    return [replace(r, stats=counted_in(r.stats, tallies[r.id])) if r.id in tallies else r for r in rows]


def counted_in(stats: Mapping[str, Any], calls: Mapping[str, int]) -> dict[str, Any]:
    """A stored run's figures (``RunStats.as_dict``) with the calls of its shared tally they do not hold yet.

    Figures without ``run_calls_counted`` are either none at all (a run still running, or closed as died: every
    call of the tally is added) or a finished run's from before the mark existed (its coordinator summed the
    tally: nothing is added)."""
    out = dict(stats)
    counted = out.get("run_calls_counted")
    if not isinstance(counted, dict):
        counted = dict(calls) if out else {}
    objects = {name: dict(o) for name, o in (out.get("objects") or {}).items()}
    more = {part: n - int(counted.get(part, 0) or 0) for part, n in calls.items()}
    source, setup, per_object = _split({part: n for part, n in more.items() if n > 0})
    if source:
        out["source_api_calls"] = int(out.get("source_api_calls", 0) or 0) + source
    if setup:
        out["setup_api_calls"] = int(out.get("setup_api_calls", 0) or 0) + setup
    for name, n in per_object.items():
        o = objects.setdefault(name, {})
        o["api_calls"] = int(o.get("api_calls", 0) or 0) + n
    out["objects"] = objects
    out["budget"] = budget_with(out.get("budget"), setup + sum(per_object.values()))
    out["run_calls_counted"] = dict(calls)
    return out
