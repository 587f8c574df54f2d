"""A batch run's reads, plans and loads overlapped: each object loads as soon as it can, not after every read.

The strict order (read every stream, plan everything, load object after object) leaves the target idle while
the source is read and the source idle while the target is written. Two rules let them overlap without
weakening anything a crash can reach:

1. An object loads only once every stream its records come from has been read to its end in this run and
   planned: its outbox is then complete for the run, and it is loaded once, as in the strict order. Which
   streams feed which canonical entity the source says (optional ``StreamEntities``); a source that does not
   say feeds every object from every stream, so its objects wait for the last read (the strict order, with
   rule 2 still letting independent objects load together).
2. An object loads only once every parent it references (``ObjectPlan.parents``) has finished loading and
   recorded its answers (the same waves as ``order_plans``, but an object waits for its own parents only,
   so Account and Product2 load at the same time, then Contact, PricebookEntry and Order together).

Nothing durable changes: pages are staged with their state, chunks planned with their mark, jobs journaled,
answers recorded exactly as before; a run killed at any point leaves staging, the planned mark, the outbox
and the journal as some strictly ordered run could have left them (each object's outbox is either untouched,
partly sent or drained, and a child is never sent before its parents' answers are recorded), and the next
run finishes it the same way. Staging is cleared only after every load (the caller's last step).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ferry.core.contracts import Source, StreamEntities
from ferry.engine.plan import ObjectPlan, order_plans
from ferry.engine.together import run_together


@dataclass(frozen=True, slots=True)
class Steps:
    """What the schedule runs; the runner supplies them (durability lives there, the order lives here)."""

    read: Callable[[str], Awaitable[None]]  # stage one stream to its end
    plan: Callable[[], None]  # plan everything staged so far (synchronous: no load interleaves with a chunk)
    load: Callable[[ObjectPlan], Awaitable[None]]  # one object's outbox to the target, answers recorded


def streams_feeding(source: Source, plans: Sequence[ObjectPlan]) -> dict[str, frozenset[str]]:
    """For each object, the streams whose records it is mapped from (all of them when the source cannot say)."""
    every = frozenset(source.streams)
    if not isinstance(source, StreamEntities):
        return {p.name: every for p in plans}
    by_entity: dict[str, set[str]] = {}
    for stream in every:
        for entity in source.stream_entities(stream):
            by_entity.setdefault(entity, set()).add(stream)
    # An entity no stream declares can only be in the outbox from an earlier run: wait for every read anyway,
    # rather than trust a declaration that does not mention it.
    return {p.name: frozenset(by_entity.get(p.entity) or every) for p in plans}


def parents_of(plans: Sequence[ObjectPlan]) -> dict[str, frozenset[str]]:
    """Each object's parents among the run's objects (a self-reference orders nothing)."""
    names = {p.name for p in plans}
    return {p.name: frozenset(r.object for r in p.parents if r.object in names and r.object != p.name) for p in plans}


async def read_plan_load(
    streams: Sequence[str],
    plans: Sequence[ObjectPlan],
    feeding: dict[str, frozenset[str]],
    steps: Steps,
    *,
    on_read_end: Callable[[], None] = lambda: None,
) -> None:
    """Read the streams one after the other (planning after each), and load each object the moment its
    streams are read and planned and its parents loaded. The first failure cancels the rest and is raised;
    what finished before it stays recorded."""
    ordered = order_plans(plans)  # raises ConfigError on a reference cycle, before anything starts
    parents = parents_of(ordered)
    read = {s: asyncio.Event() for s in streams}
    planned = asyncio.Event()  # with no stream to read, what an earlier run staged is still planned first
    loaded = {p.name: asyncio.Event() for p in ordered}

    async def reads() -> None:
        for stream in streams:
            await steps.read(stream)
            steps.plan()
            read[stream].set()
            planned.set()
        if not streams:
            steps.plan()
            planned.set()
        on_read_end()

    async def load(plan: ObjectPlan) -> None:
        for stream in sorted(feeding[plan.name]):
            if stream in read:
                await read[stream].wait()
        await planned.wait()
        for parent in sorted(parents[plan.name]):
            await loaded[parent].wait()
        await steps.load(plan)
        loaded[plan.name].set()

    await run_together([reads(), *(load(p) for p in ordered)])
