"""Dead-letter replay: read the source record again, map it with the *current* mapping, write it.

For each open dead letter chosen by a filter:
1. the source record is read again from the source by its id (the stream and id were stored with the
   letter), a batch of letters at a time through ``Source.fetch_many`` (Shopify: ``ids=``, WooCommerce:
   ``include=``); only if the source no longer has it is the payload stored with the letter used, and the
   outcome says so;
2. the current mapping and the target's describe judge it: still invalid updates the letter (new
   errors, one more attempt) and leaves it open;
3. a record whose parent is still an open dead letter stays PARENT_DEAD_LETTERED;
4. the rest is upserted by key through the run's planner (``choose_write`` over the sink's direct
   strategies: Salesforce Composite or Collections; never a remote job, see ``Replayer._strategy``) and
   its result recorded exactly as a run records it: success resolves the letter ("replayed") and moves
   the version map forward.

Objects go parents first: each starts as soon as the objects it references are written (an Account's Contacts
and Orders together), while the source records of the next ones are read ahead, a batch's keys per read. The
outcomes are recorded in the store by one worker thread, in order, while the next batches are sent (a batch's
letters resolved by key in one statement); judging a batch needs no store round trip (the versions held and the
parents' open letters are loaded once, then kept up to date). Each source record read again is normalized once,
as it arrives, and kept as its canonical records (every letter of it finds its own) and its payload's bytes. A
crash between a write and its record leaves the letters open: a replay again lands on the same records (upsert by
external id).

With ``children=True`` a replayed parent brings along its children that were dead-lettered as
PARENT_DEAD_LETTERED because of it, so fixing an Account replays its Contact and Orders (and, through the Orders,
their OrderItems) in the same call. Replaying again changes nothing: resolved
letters are no longer open, and the upsert by external id would land on the same record anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from ferry.connectors.registry import open_sink, open_source
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.writes import StrategyChoice, choose_write
from ferry.engine.loader import LoadProgress
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan, order_plans
from ferry.engine.runner import orphan_errors, prepare_plans
from ferry.engine.selection import select_for_pipeline
from ferry.engine.twoway import payload_digest
from ferry.errors import ConfigError
from ferry.store import DeadLetter, LetterFilter, NewDeadLetter, Store, Written

log = structlog.get_logger("ferry.engine.replay")

_RELATIVE = re.compile(r"^(?P<n>\d+)\s*(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FROM_SOURCE, FROM_STORED = "source", "stored payload"
# Letters judged, read again and written at a time: a few batched source calls (Shopify: 250 ids a call) and
# two Composite calls of the target's (1,000 records each, in flight together) per batch, and a progress step.
REPLAY_BATCH = 2000
READ_AHEAD_CHUNK = 1000  # keys per read-ahead task (the source splits them into its own calls)
READS_IN_FLIGHT = 4  # read-ahead tasks at once (each sends up to the source's own in-flight calls): the next
# objects' records arrive while the first ones are written
WRITES_IN_FLIGHT = 4  # batches written at once while the next are read: the sink spreads each over its calls


class _Quiet:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


def since_timestamp(value: str | None, now: dt.datetime | None = None) -> str | None:
    """``30m``/``2h``/``7d`` ago, or an ISO date/datetime (UTC unless it says otherwise), as a store timestamp."""
    if not value:
        return None
    now = now or dt.datetime.now(dt.UTC)
    m = _RELATIVE.match(value.strip())
    if m:
        at = now - dt.timedelta(**{_UNITS[m["unit"]]: int(m["n"])})
    else:
        try:
            at = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            hint = "give a duration such as 30m, 2h, 7d or a date such as 2026-03-01"
            raise ConfigError(f"--since {value!r}: {hint}") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class ReplayOutcome:
    letter_id: int
    object: str
    record_key: str
    outcome: str  # replayed | still_invalid | still_failing | parent_dead_lettered | not_in_source | up_to_date
    source: str  # where the record came from: the source system, or the payload stored with the letter
    message: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    as_child_of: str | None = None  # "Account 123" when replayed because its parent was

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.letter_id,
            "object": self.object,
            "record_key": self.record_key,
            "outcome": self.outcome,
            "source": self.source,
            "message": self.message,
            "errors": self.errors,
            "as_child_of": self.as_child_of,
        }


@dataclass(slots=True, repr=False)
class ReplayReport:
    pipeline: str
    dry_run: bool
    outcomes: list[ReplayOutcome] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (id, why) of letters chosen but not open

    def __repr__(self) -> str:
        # Counts, not every outcome: asyncio.run's clean-up formats its finished task, result included, twice
        # (an Enum lookup of the SIGINT handler fails on Python 3.11 and names it), and reprlib truncates only
        # after the whole repr is built: ~50 ms of CPU for a replay of 10,000 letters.
        return f"ReplayReport(pipeline={self.pipeline!r}, dry_run={self.dry_run}, counts={self.counts()})"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.outcome] = out.get(o.outcome, 0) + 1
        return out

    def summary(self) -> list[tuple[str, str, str, int]]:
        """(object, outcome, error code, letters) in the order objects were replayed: what a human reads first."""
        out: Counter[tuple[str, str, str]] = Counter()
        for o in self.outcomes:
            out[(o.object, o.outcome, str(o.errors[0].get("code")) if o.errors else "")] += 1
        return [(obj, outcome, code, n) for (obj, outcome, code), n in out.items()]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "summary": [
                {"object": obj, "outcome": outcome, "code": code or None, "letters": n}
                for obj, outcome, code, n in self.summary()
            ],
            "outcomes": [o.as_dict() for o in self.outcomes],
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
        }


@dataclass(slots=True)
class _SourceRecord:
    """A source record as the replay keeps it: the canonical records it yields by (entity, key) (an order yields
    a guest customer, the order and its lines: every letter of it finds its own), normalized once, and its
    payload as bytes, stored again with a letter that stays open."""

    records: dict[tuple[str, str], Any]
    payload: bytes


def _source_record(source: Source, streams: Sequence[str], raw: dict[str, Any]) -> _SourceRecord:
    records: dict[tuple[str, str], Any] = {}
    for stream in streams:
        for kind, record in source.normalize(stream, raw):
            records.setdefault((kind, str(record.key)), record)
    return _SourceRecord(records, orjson.dumps(raw))


@dataclass(slots=True)
class _Candidate:
    letter: DeadLetter
    record: Any
    source: str
    mapped: dict[str, Any]
    as_child_of: str | None


class Replayer:
    def __init__(
        self,
        spec: PipelineSpec,
        store: Store,
        *,
        children: bool = True,
        dry_run: bool = False,
        progress: LoadProgress | None = None,
    ) -> None:
        self.spec = spec
        self.progress: LoadProgress = progress or _Quiet()
        self.store = store
        self.pipeline = spec.name
        self.children = children
        self.dry_run = dry_run
        # (stream, key) -> the source record as read again (None: the source no longer has it)
        self._read_again: dict[tuple[str, str], _SourceRecord | None] = {}
        self._pending: dict[tuple[str | None, str | None], asyncio.Future[None]] = {}  # being read ahead
        self._reads = asyncio.Semaphore(READS_IN_FLIGHT)
        # What the store said before any write, kept up to date by the replay itself, so that judging a batch
        # never waits for the store while an earlier batch's outcomes are being recorded.
        self._versions: dict[str, dict[str, str]] = {}  # object -> key -> version held, of the chosen letters
        self._dead: dict[str, set[str]] = {}  # object -> keys of its open letters (parents' orphan check)
        # Outcomes are recorded by one worker thread, in order, while the next batches are read and written.
        self._bookkeeper: ThreadPoolExecutor | None = None
        self._booked: list[asyncio.Future[None]] = []

    async def replay(self, selection: LetterFilter, limit: int = 100_000) -> ReplayReport:
        with _collector_paused():
            return await self._replay(selection, limit)

    async def _replay(self, selection: LetterFilter, limit: int) -> ReplayReport:
        report = ReplayReport(self.pipeline, self.dry_run)
        chosen = self._choose(selection, limit, report)
        if not chosen:
            return report
        # Replayed writes spend the pipeline's share of the target's budget like a run's (same ledger).
        # The id map too: a sink without a native upsert (QuickBooks) resolves a replayed child's reference to a
        # parent by the parent's source key through it, as in a run.
        sink = open_sink(self.spec.target, SinkContext(
            self.pipeline, ledger=self.store,
            target_ids=lambda obj, keys: self.store.target_ids(self.pipeline, obj, keys),
        ))
        async with open_source(self.spec.source) as source, sink:
            select_for_pipeline(source, self.spec.objects)  # records read again: only what is mapped
            plans = order_plans(await prepare_plans(self.spec, sink))
            by_object: dict[str, list[DeadLetter]] = {}
            for d in chosen:
                by_object.setdefault(d.object, []).append(d)
            unknown = set(by_object) - {p.name for p in plans}
            for obj in sorted(unknown):
                report.skipped.extend(
                    (d.id, f"{obj} is not an object of pipeline {self.pipeline}") for d in by_object[obj]
                )
            # Read ahead: every chosen letter's source record, parents' first, a batch's keys per read, while
            # earlier objects are written.
            order = {p.name: i for i, p in enumerate(plans)}
            ahead = sorted(chosen, key=lambda d: order.get(d.object, len(order)))
            for obj_letters in _batches_by_object(ahead):
                self._read_ahead(source, obj_letters)
            self._load_store_state(plans, by_object)
            self._bookkeeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-replay-store")
            self._booked = []
            try:
                # Every open letter chosen already (no filter, no limit reached): each child a parent would
                # bring along is among them.
                unfiltered = not (selection.object or selection.code or selection.since or selection.ids)
                everything = unfiltered and len(chosen) < limit
                try:
                    await self._replay_plans(source, sink, plans, by_object, report, find_children=not everything)
                except BaseExceptionGroup as grouped:  # objects and batches run in task groups
                    raise _first_error(grouped) from None  # the caller acts on ferry's error types (exit codes)
                await asyncio.gather(*self._booked)
            finally:
                for task in self._pending.values():
                    task.cancel()
                await asyncio.gather(*self._booked, return_exceptions=True)
                self._bookkeeper.shutdown()
                self._bookkeeper = None
        return report

    def _load_store_state(self, plans: Sequence[ObjectPlan], by_object: dict[str, list[DeadLetter]]) -> None:
        """The versions held for the chosen letters' keys and the open letters of every parent object, one
        query each, before anything is written."""
        parents = {p.object for plan in plans for p in plan.parents}
        for plan in plans:
            keys = [d.record_key for d in by_object.get(plan.name, [])]
            self._versions[plan.name] = dict.fromkeys(keys, "") | self.store.versions_for(
                self.pipeline, plan.name, keys
            )
            if plan.name in parents:
                self._dead[plan.name] = set(self.store.dead_letter_keys(self.pipeline, plan.name))

    def _held_versions(self, obj: str, keys: list[str]) -> dict[str, str]:
        """The version the target holds of each key ("" for none), from ``_load_store_state`` (children
        brought along by a parent are looked up now)."""
        known = self._versions.setdefault(obj, {})
        missing = [k for k in keys if k not in known]
        if missing:
            known |= dict.fromkeys(missing, "") | self.store.versions_for(self.pipeline, obj, missing)
        return {k: known[k] for k in keys if known[k]}

    def _check_booked(self) -> None:
        for booked in self._booked:
            if booked.done() and (failure := booked.exception()) is not None:
                raise failure

    def _resolved(self, obj: str, keys: set[str]) -> None:
        """Letters of ``obj`` this replay resolves: no longer dead parents for the children judged next."""
        if obj in self._dead and not self.dry_run:
            self._dead[obj] -= keys

    def _book(self, fn: Callable[..., None], *args: Any) -> None:
        """Record outcomes in the store off the event loop (after the earlier ones), while the next batches are
        sent. A failure surfaces before the next write and at the end of the replay."""
        assert self._bookkeeper is not None, "outcomes are booked only during replay()"
        self._booked.append(asyncio.get_running_loop().run_in_executor(self._bookkeeper, fn, *args))

    async def _replay_plans(
        self,
        source: Source,
        sink: Sink,
        plans: Sequence[ObjectPlan],
        by_object: dict[str, list[DeadLetter]],
        report: ReplayReport,
        *,
        find_children: bool,
    ) -> None:
        """Each object as soon as the objects it references are replayed: a child's upsert finds its parent by
        external id only once the parent is written, and siblings (an Account's Contacts and Orders) go at once."""
        replayed: dict[str, set[str]] = {}
        finished = {p.name: asyncio.Event() for p in plans}
        shown = _OrderedProgress(self.progress, [p.name for p in plans])

        async def replay_one(plan: ObjectPlan) -> None:
            try:
                for parent in plan.parents:
                    if parent.object != plan.name and parent.object in finished:
                        await finished[parent.object].wait()
                letters = by_object.get(plan.name, [])
                queued = {d.id for d in letters}
                brought: dict[int, str] = {}
                if self.children and find_children:
                    for child, parent_key in self._children_of(plan, replayed):
                        if child.id not in queued:
                            letters.append(child)
                            queued.add(child.id)
                            brought[child.id] = parent_key
                if letters:
                    replayed[plan.name] = await self._replay_object(
                        source, sink, plan, letters, brought, report, shown
                    )
            finally:
                finished[plan.name].set()
                shown.finish(plan.name)

        async with asyncio.TaskGroup() as objects:
            for plan in plans:
                objects.create_task(replay_one(plan))
        # Outcomes in the order objects are replayed (parents first), whichever finished first.
        rank = {p.name: i for i, p in enumerate(plans)}
        report.outcomes.sort(key=lambda o: rank.get(o.object, len(rank)))

    def _choose(self, selection: LetterFilter, limit: int, report: ReplayReport) -> list[DeadLetter]:
        f = LetterFilter(
            self.pipeline,
            selection.object,
            selection.code,
            selection.since,
            None if selection.ids else "open",
            selection.ids,
        )
        letters = self.store.find_dead_letters_lean(f, limit)
        chosen = []
        for d in letters:
            if d.status != "open":
                report.skipped.append((d.id, f"already {d.status}" + (f" ({d.resolution})" if d.resolution else "")))
            else:
                chosen.append(d)
        found = {d.id for d in letters}
        report.skipped.extend((i, "no such dead letter in this pipeline") for i in selection.ids if i not in found)
        return chosen

    def _children_of(self, plan: ObjectPlan, replayed: dict[str, set[str]]) -> list[tuple[DeadLetter, str]]:
        """Open PARENT_DEAD_LETTERED letters of ``plan`` that point at a parent replayed just now."""
        out: list[tuple[DeadLetter, str]] = []
        parents = [p for p in plan.parents if replayed.get(p.object)]
        if not parents:
            return out
        for d in self.store.find_dead_letters_lean(
            LetterFilter(self.pipeline, plan.name, "PARENT_DEAD_LETTERED"), 1_000_000
        ):
            for p in parents:
                value = (d.mapped_payload or {}).get(p.payload_key)
                if value is not None and str(value) in replayed[p.object]:
                    out.append((d, f"{p.object} {value}"))
                    break
        return out

    async def _replay_object(
        self,
        source: Source,
        sink: Sink,
        plan: ObjectPlan,
        letters: Sequence[DeadLetter],
        brought: dict[int, str],
        report: ReplayReport,
        shown: _OrderedProgress,
    ) -> set[str]:
        """Replay one object's letters a batch at a time: one batched read of the source per stream, one
        version lookup, one write through the planner's strategy and one store transaction per outcome kind.
        A batch's write runs while the next batches are read and judged (up to ``WRITES_IN_FLIGHT`` of them,
        as a run keeps several of the sink's calls in flight): letters are unique per key, so no two writes
        in flight carry the same record."""
        dead = {p.object: self._dead.get(p.object, set()) for p in plan.parents}
        strategy = self._strategy(sink, plan, len(letters))
        shown.phase(plan.name, f"replay {plan.name} ({strategy.strategy})", len(letters))
        done: set[str] = set()
        gate = asyncio.Semaphore(WRITES_IN_FLIGHT)

        async def write(ready: list[_Candidate], letters_in_batch: int) -> None:
            try:
                done.update(await self._write(sink, plan, ready, strategy.strategy, report))
                shown.advance(plan.name, letters_in_batch)
            finally:
                gate.release()

        async with asyncio.TaskGroup() as writes:
            for start in range(0, len(letters), REPLAY_BATCH):
                batch = letters[start : start + REPLAY_BATCH]
                await self._prefetch(source, batch)
                ready = self._judge(source, plan, batch, brought, dead, report)
                await gate.acquire()
                writes.create_task(write(ready, len(batch)))
        return done

    def _strategy(self, sink: Sink, plan: ObjectPlan, count: int) -> StrategyChoice:
        """The run's planner over the direct strategies: a remote job's crash-safety lives in its journal of
        outbox rows (``engine.loader``), and replayed records are not in the outbox; at replay sizes the
        cheapest direct strategy (Salesforce: Composite, 1,000 records a call) costs little more."""
        costs = [c for c in sink.write_costs(plan.name, count) if not c.remote_job]
        choice = choose_write(costs, remaining_calls=sink.budget_left())
        log.info("dlq.replay.strategy", object=plan.name, letters=count, strategy=choice.strategy, reason=choice.reason)
        return choice

    def _read_ahead(self, source: Source, letters: Sequence[DeadLetter]) -> None:
        """Start reading the letters' source records that are neither read nor being read, a chunk of keys per
        task (``Source.fetch_many``), at most ``READS_IN_FLIGHT`` tasks at once, in the letters' order."""
        self._load_stored([d for d in letters if not (d.stream and d.source_key)])
        wanted: dict[str, dict[str, None]] = {}  # stream -> keys, in order, once
        for d in letters:
            stream, key = letter_source(source, d)
            known = (stream, key) in self._read_again or (stream, key) in self._pending
            if stream is not None and key is not None and not known:
                wanted.setdefault(stream, {})[key] = None
        for stream, unique in wanted.items():
            keys = list(unique)
            for start in range(0, len(keys), READ_AHEAD_CHUNK):
                chunk = keys[start : start + READ_AHEAD_CHUNK]
                task = asyncio.ensure_future(self._read(source, stream, chunk))
                for key in chunk:
                    self._pending[(stream, key)] = task

    async def _read(self, source: Source, stream: str, keys: list[str]) -> None:
        """Read the keys' source records and keep each as its canonical records and its payload's bytes: the
        parsed payload (a whole order, ~12 KB of JSON, for each of its lines' letters) is let go at once, so
        a replay holds what its letters need, not every record it read as Python objects."""
        async with self._reads:
            found = await source.fetch_many(stream, keys)
        for key in keys:
            raw = found.pop(key, None)
            self._read_again[(stream, key)] = None if raw is None else _source_record(source, [stream], raw)
            self._pending.pop((stream, key), None)

    async def _prefetch(self, source: Source, batch: Sequence[DeadLetter]) -> None:
        """The batch's source records read again (``_read_ahead``; waited for here). Letters are loaded
        without their stored source payloads (they can be large: a whole order per line); those are read only
        for letters that need them: stored without stream and key, or gone from the source."""
        self._read_ahead(source, batch)
        tasks = {self._pending[k] for d in batch if (k := letter_source(source, d)) in self._pending}
        await asyncio.gather(*tasks)
        self._load_stored(
            [d for d in batch if d.stream and d.source_key and self._read_again.get((d.stream, d.source_key)) is None]
        )

    def _load_stored(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            stored = self.store.dead_letter_source_payloads([d.id for d in letters])
            for d in letters:
                d.source_payload = stored.get(d.id)

    def _judge(
        self,
        source: Source,
        plan: ObjectPlan,
        batch: Sequence[DeadLetter],
        brought: dict[int, str],
        dead: dict[str, set[str]],
        report: ReplayReport,
    ) -> list[_Candidate]:
        """Map and validate each letter's record with the current mapping; what cannot be written stays open."""
        ready: list[_Candidate] = []
        kept: list[tuple[DeadLetter, NewDeadLetter]] = []
        valid: list[tuple[ReplayOutcome, DeadLetter, Any, dict[str, Any]]] = []
        for d in batch:
            read, origin = self._source_record(source, d)
            record = read.records.get((plan.entity, d.record_key)) if read is not None else None
            outcome = ReplayOutcome(d.id, d.object, d.record_key, "", origin, as_child_of=brought.get(d.id))
            if record is None:
                outcome.outcome = "not_in_source"
                outcome.message = f"{d.object} {d.record_key} is no longer part of its source record; left open"
                report.outcomes.append(outcome)
                continue
            mapped, errors = plan.map_and_validate(record)
            errs = [e.as_dict() for e in errors] or orphan_errors(plan, d.record_key, mapped, dead)
            if errs:
                report.outcomes.append(outcome)
                outcome.outcome = "still_invalid" if errors else "parent_dead_lettered"
                outcome.errors, outcome.message = errs, "; ".join(str(e["message"]) for e in errs)
                kept.append((d, _still_open(plan, d, record, read.payload if read else None, mapped, errs)))
                continue
            valid.append((outcome, d, record, mapped))
        self._book(self._keep_open, kept)
        known = self._held_versions(plan.name, [d.record_key for _, d, _, _ in valid])
        current: list[Written] = []
        for outcome, d, record, mapped in valid:
            held = known.get(d.record_key)
            if held is not None and held >= record.version:
                outcome.outcome = "up_to_date"
                outcome.message = f"the target already holds version {held} (newer or the same); resolved"
                current.append(Written(d.record_key, held))
                report.outcomes.append(outcome)
                continue
            ready.append(_Candidate(d, record, outcome.source, mapped, outcome.as_child_of))
        if current and not self.dry_run:
            self._book(self.store.record_written, self.pipeline, plan.name, current, "replayed")
            self._resolved(plan.name, {w.key for w in current})
        return ready

    async def _write(
        self, sink: Sink, plan: ObjectPlan, ready: list[_Candidate], strategy: str, report: ReplayReport
    ) -> set[str]:
        if not ready:
            return set()
        if self.dry_run:
            for c in ready:
                report.outcomes.append(
                    ReplayOutcome(
                        c.letter.id,
                        plan.name,
                        c.letter.record_key,
                        "would_replay",
                        c.source,
                        "valid under the current mapping; would be written",
                        as_child_of=c.as_child_of,
                    )
                )
            return {c.letter.record_key for c in ready}
        self._check_booked()  # a failure to record outcomes stops the replay before it writes more
        results = await sink.upsert(plan.name, plan.external_id, [c.mapped for c in ready], strategy)
        written: list[Written] = []
        digests: dict[str, str] = {}
        kept: list[tuple[DeadLetter, NewDeadLetter]] = []
        done: set[str] = set()
        for c, res in zip(ready, results, strict=True):
            d = c.letter
            outcome = ReplayOutcome(d.id, plan.name, d.record_key, "replayed", c.source, as_child_of=c.as_child_of)
            if res.success:
                written.append(Written(d.record_key, c.record.version, res.id))
                digests[d.record_key] = payload_digest(c.mapped)
                done.add(d.record_key)
                outcome.message = f"written ({'created' if res.created else 'updated'} {res.id})"
            else:
                errs = [e.as_dict() for e in res.errors]
                outcome.outcome = "still_failing"
                outcome.errors, outcome.message = errs, "; ".join(str(e["message"]) for e in errs)
                kept.append((d, _still_open(plan, d, c.record, None, c.mapped, errs)))
            report.outcomes.append(outcome)
        self._book(self._record_outcomes, plan.name, written, kept, digests)
        self._resolved(plan.name, done)
        log.info("dlq.replayed", object=plan.name, written=len(written), failed=len(ready) - len(written))
        return done

    def _record_outcomes(
        self, obj: str, written: Sequence[Written], kept: Sequence[tuple[DeadLetter, NewDeadLetter]],
        digests: Mapping[str, str],
    ) -> None:
        self.store.record_written(self.pipeline, obj, written, "replayed")
        if self.spec.two_way is not None and digests:
            # A two-way pipeline's replayed write comes back through the other direction like any other: what
            # it wrote is remembered, so that echo is dropped (engine/twoway.py).
            self.store.save_written_digests(self.pipeline, obj, digests)
        self._keep_open(kept)

    def _keep_open(self, kept: Sequence[tuple[DeadLetter, NewDeadLetter]]) -> None:
        """Update the letters that stay open (new errors, one more attempt), one transaction per run they came from."""
        if self.dry_run:
            return
        by_run: dict[int | None, list[NewDeadLetter]] = {}
        for d, letter in kept:
            by_run.setdefault(d.run_id, []).append(letter)
        for run_id, letters in by_run.items():
            self.store.dead_letter(self.pipeline, run_id, letters)

    def _source_record(self, source: Source, d: DeadLetter) -> tuple[_SourceRecord | None, str]:
        """The letter's source record as read again (``_prefetch``), else the payload stored with it (a payload
        of unknown stream is tried as each of the source's)."""
        stream, key = letter_source(source, d)
        if stream is None or key is None:
            stored = d.source_payload
            return (_source_record(source, source.streams, stored) if stored else None), FROM_STORED
        read = self._read_again.get((stream, key))
        if read is None:
            stored = d.source_payload
            found = _source_record(source, [stream], stored) if stored else None
            return found, f"{FROM_STORED} (the source no longer has {stream} {key})"
        return read, FROM_SOURCE


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic collector off for the replay. Nearly all it allocates lives to its end (letters, canonical
    records, mapped payloads, outcomes), so every young-generation pass walked them again: ~10% of a replay's
    CPU, with the objects frozen as they arrived (``gc.freeze``) and thresholds raised 30-fold still ~5%. The
    reference cycles a replay makes are a few per HTTP call (a call carries up to 1,000 records), not per
    record: they wait for the collector's next pass once it is back on. Process-wide, as ``gc.freeze`` is: a
    replay in a long-lived process (``ferry serve``) pauses the collector for that process meanwhile."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class _OrderedProgress:
    """One progress phase per object, shown in the objects' replay order although siblings run at once: an
    object's phase opens when the ones before it are finished, with what it did meanwhile."""

    def __init__(self, progress: LoadProgress, names: Sequence[str]) -> None:
        self.progress = progress
        self.names = list(names)
        self.head = 0  # index of the first object not finished
        self.titles: dict[str, tuple[str, int]] = {}
        self.finished: set[str] = set()
        self.pending: Counter[str] = Counter()  # letters done by an object whose phase is not shown yet
        self.shown: str | None = None

    def phase(self, name: str, title: str, total: int) -> None:
        self.titles[name] = (title, total)
        self._show()

    def advance(self, name: str, n: int) -> None:
        if name == self.shown:
            self.progress.advance(n)
        else:
            self.pending[name] += n

    def finish(self, name: str) -> None:
        self.finished.add(name)
        self._show()

    def _show(self) -> None:
        while self.head < len(self.names):
            name = self.names[self.head]
            if name in self.titles and name != self.shown:
                self.shown = name
                self.progress.phase(*self.titles[name])
                if self.pending[name]:
                    self.progress.advance(self.pending.pop(name))
            if name not in self.finished:
                return
            self.head += 1


def _first_error(grouped: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group's (nested) group: one object's or batch's failure, as it was raised."""
    first = grouped.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


def _batches_by_object(letters: Sequence[DeadLetter]) -> list[list[DeadLetter]]:
    """Letters (in replay order) cut where the object changes and every ``REPLAY_BATCH``: the unit each read
    ahead serves, so an object's first batch waits only for its own records."""
    out: list[list[DeadLetter]] = []
    for d in letters:
        if not out or out[-1][0].object != d.object or len(out[-1]) >= REPLAY_BATCH:
            out.append([])
        out[-1].append(d)
    return out


def _still_open(
    plan: ObjectPlan,
    d: DeadLetter,
    record: Any,
    payload: bytes | None,
    mapped: dict[str, Any],
    errors: list[dict[str, Any]],
) -> NewDeadLetter:
    return NewDeadLetter(plan.name, d.record_key, record.version, errors, payload, mapped, d.stream, d.source_key)


def letter_source(source: Source, d: DeadLetter) -> tuple[str | None, str | None]:
    """Stream and source id of a letter; for letters from before they were stored, the source reads them off
    the payload."""
    if d.stream and d.source_key:
        return d.stream, d.source_key
    raw = d.source_payload
    located = source.locate(raw) if isinstance(raw, dict) else None
    return located if located is not None else (None, None)
