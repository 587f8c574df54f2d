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

With ``Steps.load_part`` an object also loads in parts ahead of its whole, row by row under the same two rules
(a row is sent only once the stream it came from is read and planned, and only naming parent rows whose
answers are recorded: ``engine/waves.py``'s ``ready_rows``):

3. At the end of each stream feeding an object other than its last one (the Accounts of the customers stream
   while the orders, which bring guests, are still read), once its parents have sent their own part for that
   stream: the rows of the streams read so far that name only parents written. The object's later parts wait
   for it (a key planned again from a later stream is never in flight twice).
4. At the end of its last stream, when a parent is still loading (the Orders of registered customers while the
   guests' Accounts are written): the rows that name only parents written, beside the rest, which goes once
   the parents are loaded (``load``, excluding the part's rows). Only when every parent's own streams are read
   too, so both sides of the split stay what they were at its start. When no part goes because a parent's own
   part is still being sent (the customers' Accounts still in flight as the orders' read ends), it is judged
   again each time such a part ends, for as long as that parent is not loaded: its rows, now written, make the
   children naming them ready.

A part whose ready rows are few goes with the rest instead (the runner decides: a part costs its own calls).
What a crash leaves stays as above, except that an object's outbox may be partly sent before its last stream
is read; the next run reads on, plans and sends the rest, and the version map keeps an older row from
overwriting a newer one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.core.contracts import Source, StreamEntities
from ferry.engine.plan import ObjectPlan, order_plans
from ferry.engine.together import run_together


@dataclass(frozen=True, slots=True)
class Steps:
    """What the schedule runs; the runner supplies them (durability lives there, the order lives here)."""

    read: Callable[[str], Awaitable[None]]  # stage one stream to its end
    plan: Callable[[], None]  # plan everything staged so far (synchronous: no load interleaves with a chunk)
    load: Callable[[ObjectPlan], Awaitable[None]]  # one object's outbox to the target, answers recorded
    # Optional (rules 3 and 4): the sending of the object's rows that are ready, from the streams named (read and
    # planned), ahead of the rest, or None to send none. The rows are chosen and set aside when it is called
    # (synchronously), so ``load`` leaves them out whenever it starts. None: every object loads in one go.
    load_part: Callable[[ObjectPlan, frozenset[str]], Coroutine[Any, Any, None] | None] | None = None


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
    streams are read and planned and its parents loaded (with ``steps.load_part``, its ready rows earlier: rules
    3 and 4). The first failure cancels the rest and is raised; what finished before it stays recorded."""
    ordered = order_plans(plans)  # raises ConfigError on a reference cycle, before anything starts
    parents = parents_of(ordered)
    read = {s: asyncio.Event() for s in streams}
    planned = asyncio.Event()  # with no stream to read, what an earlier run staged is still planned first
    loaded = {p.name: asyncio.Event() for p in ordered}
    # Per object and stream: the object has sent whatever part it sends at that stream's end (children wait
    # for it before judging their own rows ready).
    settled = {p.name: {s: asyncio.Event() for s in streams} for p in ordered}
    sending_parts = {p.name: 0 for p in ordered}  # per object, its parts being sent now
    changed = asyncio.Condition()  # notified when a part ends or an object is loaded (rule 4 judges again)

    async def note_change() -> None:
        async with changed:
            changed.notify_all()

    async def tracked(name: str, sending: Coroutine[Any, Any, None]) -> None:
        sending_parts[name] += 1
        try:
            await sending
        finally:
            sending_parts[name] -= 1
            await note_change()

    def parts_over(names: list[str]) -> bool:
        return all(not sending_parts[name] or loaded[name].is_set() for name in names)

    async def beside_rest(plan: ObjectPlan, done: frozenset[str]) -> Coroutine[Any, Any, None] | None:
        """Rule 4's part, or None; judged again whenever a part of a parent still loading ends meanwhile."""
        assert steps.load_part is not None
        while True:
            sending = steps.load_part(plan, done)
            if sending is not None:
                return tracked(plan.name, sending)
            busy = [p for p in parents[plan.name] if sending_parts[p] and not loaded[p].is_set()]
            if not busy:
                return None
            async with changed:
                await changed.wait_for(functools.partial(parts_over, busy))
            if all(loaded[p].is_set() for p in parents[plan.name]):
                return None  # every parent is loaded: the whole goes now, nothing to split

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

    async def parts(plan: ObjectPlan) -> Coroutine[Any, Any, None] | None:
        """Rules 3 and 4: the object's parts ahead of its whole; the sending of the part to run beside it, if any."""
        mine = [s for s in streams if s in feeding[plan.name]]
        for stream in streams:
            if stream not in mine:
                settled[plan.name][stream].set()
        if steps.load_part is None or not (len(mine) > 1 or parents[plan.name]):
            for stream in mine:
                settled[plan.name][stream].set()
            return None
        load_part = steps.load_part
        for stream in mine:
            await read[stream].wait()
            done = frozenset(s for s in streams if read[s].is_set())  # every stream read and planned so far
            if stream != mine[-1]:
                for parent in sorted(parents[plan.name]):
                    await settled[parent][stream].wait()
                sending = load_part(plan, done)
                if sending is not None:
                    await tracked(plan.name, sending)  # rule 3: later parts and the whole wait for it
            elif not all(loaded[p].is_set() for p in parents[plan.name]) and all(
                read[s].is_set() for p in parents[plan.name] for s in feeding[p] if s in read
            ):
                settled[plan.name][stream].set()
                await asyncio.sleep(0)  # what the stream's end let start in one go (a parent's rest) goes first
                return await beside_rest(plan, done)  # rule 4: beside the rest
            settled[plan.name][stream].set()
        return None

    async def load(plan: ObjectPlan) -> None:
        beside: list[Coroutine[Any, Any, None]] = []
        chosen = asyncio.Event()

        async def whole() -> None:
            ahead = await parts(plan)
            if ahead is not None:
                beside.append(ahead)
            chosen.set()
            for stream in sorted(feeding[plan.name]):
                if stream in read:
                    await read[stream].wait()
            await planned.wait()
            for parent in sorted(parents[plan.name]):
                await loaded[parent].wait()
            await steps.load(plan)

        async def part_beside() -> None:  # its rows were set aside when chosen: it may start whenever
            await chosen.wait()
            for sending in beside:
                await sending

        # Together: a part that fails stops the run at once, not once the rest has waited for its parents.
        await run_together([whole(), part_beside()])
        loaded[plan.name].set()
        await note_change()

    await run_together([reads(), *(load(p) for p in ordered)])
