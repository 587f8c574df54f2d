"""A distributed run's load, row by row: an outbox row goes to the workers as soon as the rows it references are
written, not after its parents' whole objects.

The object-by-object order (Account and Product2, then Contact, PricebookEntry and Order, then OrderItem) leaves
the workers idle at the end of every level: the last Account items are in flight, and no Order may start, although
most of the Orders' Accounts were written seconds ago. Here the coordinator publishes in two passes:

1. The flow. An object opens once every stream feeding it is read and planned (engine/overlap.py's first rule; the
   caller says when), and its parents are open too: its queued rows are then all in the outbox. Each tick, the rows
   of an open object whose every referenced parent row (a parent key in the row's payload) has left its parent's
   outbox go out, ``batch`` rows to a ``LoadBatch`` item, each row once. A row whose parent is an open dead letter
   is dead-lettered instead (PARENT_DEAD_LETTERED, as the embedded loader's orphans). The items are ``exact``: a
   worker claims the rows they name and no others (a ready row's neighbour may still wait for its parent). An
   object is settled when its parents are settled, it has nothing left to publish that could become ready, no item
   of it is on the bus and no live lease holds one of its rows.
   An object that goes through a remote job (the host's ``by_job``) publishes nothing here.
2. The rounds. Once an object is settled and its parents' rounds are over, whatever it still has queued (a
   transient failure, a row whose parent was still queued, a row planned late) goes out in the coordinator's
   rounds, as before (``finish``: every row of the object, the retry budget's pauses between rounds).

What a crash can reach does not change: a child row is sent only once the answer for each of its parents' rows is
recorded (the row left the outbox at the version sent, written or dead-lettered), which the object order gave by
waiting for every parent row; the outbox, the leases and the version map stay the only truth, so a coordinator
killed at any point leaves a state some object-by-object run could have left, and the next run sends what is
still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ferry.engine.plan import ObjectPlan, order_plans
from ferry.engine.runner import orphan_errors
from ferry.store import NewDeadLetter

log = structlog.get_logger("ferry.distributed")

IDLE_WARNING_SECONDS = 30.0  # no item answered for this long while items wait: say so (no worker running?)
TICK_SECONDS = 0.15  # between looks at the outbox and the bus: small beside a write (~1 s a 200-record call)
PARTIAL_WAIT = 0.5  # a ready remainder under ``batch`` rows waits this long for more rows before it goes out
# Parent keys asked about per parent object and look (``_look_at_parents``): the next of the rows handed out and not
# yet seen answered, in turn. About 50 items' worth: what 3 workers of concurrency 16 hold at once. Asking every key
# a child waits on (52,000 Accounts at 100,000 orders, 6 times a second) took most of the coordinator's CPU.
LOOK_KEYS = 10_000
# No look at parent rows while the bus holds this many rounds of the items the workers can hold at once
# (``FlowHost.in_flight``): rows made ready now would only queue behind them. The coordinator's and PostgreSQL's
# CPU go to the workers meanwhile (at 100,000 orders the Account items alone are 4 rounds of 4 workers).
BACKLOG_ROUNDS = 2


class FlowHost(Protocol):
    """What the flow needs from its run (``DistributedRunner``)."""

    store: Any
    pipeline: str

    @property
    def in_flight(self) -> int: ...  # work items all workers together hold at most (max_ack_pending x partitions)

    def strategy(self, plan: ObjectPlan, total: int) -> str: ...

    def by_job(self, obj: str) -> bool: ...  # the object goes as one remote job in ``finish``: not row by row

    def opened(self, plan: ObjectPlan, strategy: str, total: int) -> Any: ...  # the object's progress display

    def closed(self, progress: Any) -> None: ...

    async def publish(self, obj: str, strategy: str, rows: Sequence[tuple[str, str]], attempt: int, *,
                      exact: bool) -> None: ...

    async def object_depths(self) -> dict[str, int]: ...

    def keep_lock(self) -> None: ...

    def check_paused(self) -> None: ...

    async def finish(self, plan: ObjectPlan, strategy: str) -> int: ...


@dataclass(slots=True)
class _Row:
    key: str
    version: str
    payload: dict[str, Any]
    unanswered: int = 0  # parent rows it references that are still queued (or not looked at yet)


@dataclass
class ObjectFlow:
    """One object's part of the flow: its rows not yet published and where it stands."""

    plan: ObjectPlan
    parents: tuple[str, ...]
    opened: bool = False
    loaded: bool = False  # its queued rows read into ``pending``
    total: int = 0  # rows queued when it was loaded
    since: str = ""  # when it was loaded: its dead letters from then on are this run's
    strategy: str = "-"
    pending: dict[str, _Row] = field(default_factory=dict)  # not published yet
    ready: dict[str, _Row] = field(default_factory=dict)  # of those, the ones whose parents are all answered
    blocked: dict[str, dict[str, list[_Row]]] = field(default_factory=dict)  # parent -> its key -> rows waiting
    ready_since: float | None = None  # when a ready remainder under a batch first waited
    held: int = 0  # ready rows held back this tick (a remainder under a batch, waiting for more)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    left: int = 0  # rows still queued after the rounds
    published: int = 0  # items published in the flow
    started: float | None = None
    ended: float | None = None
    progress: Any = None  # its part of the run's progress display: rows handed to the workers


class LoadFlow:
    """Pass 1 (the flow) for every object, then each object's rounds; ``run`` returns when every object is done.
    The caller opens objects (``open``) as their streams are read and planned; every object must be opened."""

    def __init__(self, host: FlowHost, plans: Sequence[ObjectPlan], batch: int, *, outage_seconds: float) -> None:
        ordered = order_plans(plans)
        names = {p.name for p in ordered}
        self.host = host
        self.batch = batch
        self.order = [p.name for p in ordered]
        self.objects = {
            p.name: ObjectFlow(p, tuple(sorted({r.object for r in p.parents if r.object in names
                                                and r.object != p.name})))
            for p in ordered
        }
        # Parent keys seen out of their outbox: answered (written or dead-lettered). An open object gets no new
        # rows, so a key stays answered for the rest of the flow and is not asked about again.
        self.answered: dict[str, set[str]] = {name: set() for name in self.order}
        # Parent rows handed to the workers and not seen answered yet, asked about in turn (``LOOK_KEYS`` a look).
        # A row not handed out yet (still in its object's ``pending``) cannot be answered: it is not asked about.
        self.outstanding: dict[str, dict[str, None]] = {name: {} for name in self.order}
        self.parent_objects = {p for o in self.objects.values() for p in o.parents}  # the only ones worth tracking
        # Keys a child waits on that were never among the parent's rows in the flow (written by an earlier run,
        # say): asked about on the next look, and again while they are queued.
        self.unseen: dict[str, set[str]] = {name: set() for name in self.order}
        self.outage_seconds = outage_seconds
        self._wake = asyncio.Event()
        self._last_paused_check = 0.0
        self._last_progress = time.monotonic()
        self._last_depths: dict[str, int] = {}

    def open(self, names: Iterable[str]) -> None:
        """These objects' streams are read and planned: their rows may go once their parents' rows are written."""
        for name in names:
            if name in self.objects and not self.objects[name].opened:
                self.objects[name].opened = True
                self._wake.set()

    async def run(self) -> None:
        from ferry.engine.together import run_together

        await run_together([self._flow(), *(self._rounds(o) for o in self.objects.values())])

    # -- pass 1 --------------------------------------------------------------------------------------------------

    async def _flow(self) -> None:
        away_since: float | None = None
        while not all(o.settled.is_set() for o in self.objects.values()):
            with contextlib.suppress(TimeoutError):  # woken early when an object opens
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            self._wake.clear()
            try:
                await self._tick()
            except Exception as exc:
                # PostgreSQL or NATS restarting: the workers' items and leases wait for them; so does the flow.
                retryable = bool(getattr(exc, "retryable", False))  # StateUnavailable, BusUnavailable
                if not retryable or (away_since and time.monotonic() - away_since > self.outage_seconds):
                    raise
                if away_since is None:
                    away_since = time.monotonic()
                    log.warning("load.server_away", error=f"{type(exc).__name__}: {exc}")
                continue
            if away_since is not None:
                log.info("load.server_back", seconds=round(time.monotonic() - away_since, 1))
                away_since = None

    async def _tick(self) -> None:
        host = self.host
        host.keep_lock()
        now = time.monotonic()
        if now - self._last_paused_check > 1.0:
            self._last_paused_check = now
            await asyncio.to_thread(host.check_paused)
        for name in self.order:
            o = self.objects[name]
            if o.opened and not o.loaded and all(self.objects[p].loaded for p in o.parents):
                # One a tick, parents first: the parents' items go out before the children's rows are read
                # (tens of thousands of rows take a second to read), and the children wait for them anyway.
                await asyncio.to_thread(self._load, o)
                o.progress = host.opened(o.plan, o.strategy, o.total)
                self._wake.set()
                break
        active = [o for o in (self.objects[n] for n in self.order) if o.loaded and not o.settled.is_set()]
        if not active:
            return
        # The bus first, then the outbox: an item acknowledged after this look has its answers recorded already.
        depths = await host.object_depths()
        self._note_progress(depths, now)
        looked = sum(depths.values()) < BACKLOG_ROUNDS * max(1, host.in_flight)
        if looked:
            await asyncio.to_thread(self._look_at_parents, active)
        for o in active:
            sent = await self._publish_ready(o, now)
            # A row still blocked settles the object only after a look: its parent may be answered by now.
            if not sent and not o.held and (looked or not any(o.blocked.values())) \
                    and all(self.objects[p].settled.is_set() for p in o.parents) \
                    and depths.get(o.plan.name, 0) == 0 and await asyncio.to_thread(self._unleased, o):
                o.settled.set()
                log.info("load.flow_settled", object=o.plan.name, items=o.published, blocked=len(o.pending))

    def _note_progress(self, depths: dict[str, int], now: float) -> None:
        """Items leaving the bus are progress; none for IDLE_WARNING_SECONDS while some wait is worth a warning."""
        if depths != self._last_depths or not any(depths.values()):
            self._last_depths, self._last_progress = depths, now
        elif now - self._last_progress > IDLE_WARNING_SECONDS:
            log.warning("load.no_progress", queued_items=sum(depths.values()),
                        hint="is a `ferry worker` running with this pipeline file?")
            self._last_progress = now

    def _load(self, o: ObjectFlow) -> None:
        """The object's queued rows, each filed under the parent keys it references that are not answered yet
        (read once: its streams are done)."""
        store, pipeline = self.host.store, self.host.pipeline
        o.since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        refs = [(r.object, r.payload_key) for r in o.plan.parents if r.object in o.parents]
        # Parents whose rows go one by one through the flow (not a remote job): a key of theirs that is neither
        # queued in the flow nor handed out is asked about once (``unseen``).
        in_flow = {obj: not self.host.by_job(obj) for obj, _ in refs}
        for rows in store.outbox(pipeline, o.plan.name, chunk=5000, with_source=False):
            for r in rows:
                row = _Row(r.key, r.version, r.payload)
                o.pending[r.key] = row
                waits = {(obj, str(v)) for obj, k in refs if (v := r.payload.get(k)) is not None}
                waits = {w for w in waits if w[1] not in self.answered[w[0]]}
                row.unanswered = len(waits)
                for parent, key in waits:
                    o.blocked.setdefault(parent, {}).setdefault(key, []).append(row)
                    if in_flow[parent] and key not in self.objects[parent].pending \
                            and key not in self.outstanding[parent]:
                        self.unseen[parent].add(key)
                if not waits:
                    o.ready[r.key] = row
        o.total = len(o.pending)
        o.strategy = self.host.strategy(o.plan, o.total)
        if self.host.by_job(o.plan.name):
            # A remote job (engine/distjobs.py) takes the object whole once its parents are done (``finish``):
            # nothing of it goes row by row, so it settles as soon as its parents have.
            o.pending.clear()
            o.ready.clear()
            o.blocked.clear()
        o.loaded = True
        o.started = time.monotonic()
        log.info("load.flow_open", object=o.plan.name, records=o.total, strategy=o.strategy)

    def _look_at_parents(self, active: list[ObjectFlow]) -> None:
        """The parent keys the active objects' rows wait on that have left their outbox are answered: the rows
        waiting on them move to ``ready`` once nothing else holds them."""
        store, pipeline = self.host.store, self.host.pipeline
        for obj in sorted({p for o in active for p, keys in o.blocked.items() if keys}):
            keys = self._to_ask(obj, active)
            if not keys:
                continue
            queued = store.queued_keys(pipeline, obj, keys)
            answered = [k for k in keys if k not in queued]
            self.answered[obj].update(answered)
            outstanding, unseen = self.outstanding[obj], self.unseen[obj]
            for key in keys:
                if key in queued and key in outstanding:
                    outstanding[key] = outstanding.pop(key)  # asked again after the others: the window goes round
            for key in answered:
                outstanding.pop(key, None)
                unseen.discard(key)
                for o in active:
                    for row in o.blocked.get(obj, {}).pop(key, ()):
                        row.unanswered -= 1
                        if row.unanswered == 0:
                            o.ready[row.key] = row

    def _to_ask(self, obj: str, active: list[ObjectFlow]) -> list[str]:
        """The keys of parent ``obj`` worth asking about now. While it is in the flow: the next ``LOOK_KEYS`` of its
        rows handed out (and the keys never among its rows), not the ones it has not handed out yet. Once its rows
        go out in rounds or as one remote job (settled, or ``by_job``), every key a child still waits on."""
        parent = self.objects[obj]
        if parent.settled.is_set() or self.host.by_job(obj):
            return sorted({key for o in active for key in o.blocked.get(obj, ())})
        return sorted({*itertools.islice(self.outstanding[obj], LOOK_KEYS), *self.unseen[obj]})

    async def _publish_ready(self, o: ObjectFlow, now: float) -> bool:
        """Publish ``o``'s rows whose parents' rows are all answered; dead-letter those with a dead parent."""
        o.held = 0
        if not o.ready:
            return False
        ready = list(o.ready.values())
        orphans = await asyncio.to_thread(self._orphans, o, ready)
        if orphans:
            await asyncio.to_thread(self._dead_letter, o, orphans)
            done = {r.key for r, _ in orphans}
            for key in done:
                del o.pending[key], o.ready[key]
            self._handed_out(o, done)  # dead letters now: answered
            ready = [r for r in ready if r.key not in done]
        ready.sort(key=lambda r: r.key)
        parents_settled = all(self.objects[p].settled.is_set() for p in o.parents)
        whole = len(ready) - len(ready) % self.batch
        if len(ready) > whole:  # a remainder: now if nothing more can come soon, else after PARTIAL_WAIT
            if o.ready_since is None:
                o.ready_since = now
            if parents_settled or now - o.ready_since >= PARTIAL_WAIT:
                whole = len(ready)
        sent = False
        for i in range(0, whole, self.batch):
            chunk = ready[i:i + self.batch]
            await self.host.publish(o.plan.name, o.strategy, [(r.key, r.version) for r in chunk], 1, exact=True)
            for r in chunk:
                del o.pending[r.key], o.ready[r.key]
            self._handed_out(o, (r.key for r in chunk))
            o.published += 1
            if o.progress is not None:
                o.progress.advance(len(chunk))
            sent = True
        if whole == len(ready):
            o.ready_since = None
        o.held = len(ready) - whole
        return sent

    def _handed_out(self, o: ObjectFlow, keys: Iterable[str]) -> None:
        """These rows of ``o`` left the flow (to the workers, or dead-lettered): its children's looks ask about them."""
        if o.plan.name in self.parent_objects:
            self.outstanding[o.plan.name].update(dict.fromkeys(keys))

    def _orphans(self, o: ObjectFlow, ready: list[_Row]) -> list[tuple[_Row, list[dict[str, Any]]]]:
        if not o.plan.parents:
            return []
        store, pipeline = self.host.store, self.host.pipeline
        dead = {p.object: store.dead_letter_keys(pipeline, p.object) for p in o.plan.parents}
        if not any(dead.values()):
            return []
        return [(r, errors) for r in ready if (errors := orphan_errors(o.plan, r.key, r.payload, dead))]

    def _dead_letter(self, o: ObjectFlow, orphans: list[tuple[_Row, list[dict[str, Any]]]]) -> None:
        """As the embedded run's orphans (``Runner._drop_orphans``): each with its source record."""
        store, pipeline, obj = self.host.store, self.host.pipeline, o.plan.name
        keys = [r.key for r, _ in orphans]
        sources = store.source_payloads(pipeline, obj, keys)
        rows = {r.key: r for r in store.outbox_rows(pipeline, obj, keys, with_source=False)}
        letters, done = [], []
        for r, errors in orphans:
            row = rows.get(r.key)
            if row is None:  # gone meanwhile (a newer run cannot hold the lock; nothing else removes it)
                continue
            letters.append(NewDeadLetter(obj, row.key, row.version, errors, sources.get(row.key), row.payload,
                                         row.stream, row.source_key))
            done.append((row.key, row.version))
        run_id = getattr(self.host, "run_id", None)
        store.record_results(pipeline, obj, run_id, [], letters, done)

    def _unleased(self, o: ObjectFlow) -> bool:
        count = getattr(self.host.store, "outbox_leased", None)
        return count is None or int(count(self.host.pipeline, o.plan.name)) == 0

    # -- pass 2 --------------------------------------------------------------------------------------------------

    async def _rounds(self, o: ObjectFlow) -> None:
        await o.settled.wait()
        for parent in o.parents:
            await self.objects[parent].done.wait()
        o.left = await self.host.finish(o.plan, o.strategy)
        if o.progress is not None:
            self.host.closed(o.progress)
        o.ended = time.monotonic()
        o.done.set()


def flow_timings(flow: LoadFlow) -> dict[str, float]:
    """Seconds from each object's first look to the end of its rounds (they overlap)."""
    return {name: round(o.ended - o.started, 3) for name, o in flow.objects.items()
            if o.started is not None and o.ended is not None}

