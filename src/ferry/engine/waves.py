"""Load waves: which objects of one run may be written at the same time without breaking parents-before-children.

A batch run loads object after object in dependency order (``order_plans``): a child's reference to its parent
(``AccountId`` by the Account's external id) only resolves once the parent is in the target. For a stream of
small micro-batches (``ferry serve``) most records update what the target holds already: the parent a Contact
names was written by an earlier run. Waiting for the Account call of this batch before sending the Contact
call then only adds a round trip per batch, and with an org's real latency that round trip is what makes the
processor fall behind a steady stream (bench/RESULTS.md).

So a child joins its parents' wave when EVERY row of its outbox names, for every parent, either nothing or a
parent record already written to the target (the version map has its key; a child whose parent is an open
dead letter is still dead-lettered as an orphan before its wave is sent). A single row naming a parent the
target has not got yet keeps the whole object in the next wave, exactly as the batch run's order. Only refs by
the parent's external id are judged (the version map is keyed by it); any other ref keeps the order.

What differs from the strict order: a parent's update that fails in this batch no longer holds back its child's
update (the child is written under the parent record the target already has). And a parent the version map
knows but someone deleted in the target since: the strict order would re-create it before the child; here the
child's write can come first and fail on its reference, a dead letter (kept, replayable), not a loss.

A batch run judges row by row instead (``ready_rows``, engine/overlap.py rules 3 and 4): which rows of an object
may go ahead of the rest, each naming only parent rows written with nothing newer queued. That keeps the strict
rule (a child row never goes before its parent row's answer is recorded) while the rest waits for its parents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ferry.engine.plan import ObjectPlan, ParentRef, order_plans
from ferry.store import OutboxRow, Store


def load_waves(store: Store, pipeline: str, plans: Sequence[ObjectPlan]) -> list[list[ObjectPlan]]:
    """The plans in waves (parents first): each wave's objects can be written concurrently."""
    ordered = order_plans(plans)
    by_name = {p.name: p for p in ordered}
    wave_of: dict[str, int] = {}
    for plan in ordered:
        parents = [ref for ref in plan.parents if ref.object in by_name and ref.object != plan.name]
        if not parents:
            wave_of[plan.name] = 0
            continue
        latest = max(wave_of[ref.object] for ref in parents)
        wave_of[plan.name] = latest if _parents_in_target(store, pipeline, plan, by_name) else latest + 1
    waves: list[list[ObjectPlan]] = [[] for _ in range(max(wave_of.values(), default=-1) + 1)]
    for plan in ordered:
        waves[wave_of[plan.name]].append(plan)
    return waves


def by_external_id(ref: ParentRef, parent: ObjectPlan) -> bool:
    """Whether ``ref`` names its parent by the parent's external id, the key of the parent's outbox and version
    map. The payload key is the ref in the sink's dialect, e.g. ``Account.Shopify_Customer_Id__c``; a sub-record's
    ref (``each``) or a ref by another field is not judged."""
    return "." not in ref.field and ref.payload_key.rsplit(".", 1)[-1] == parent.external_id


def _parents_in_target(store: Store, pipeline: str, plan: ObjectPlan, by_name: dict[str, ObjectPlan]) -> bool:
    """Whether every outbox row of ``plan`` names only parents the target already holds (see the module doc)."""
    refs = [ref for ref in plan.parents if ref.object in by_name and ref.object != plan.name]
    if not all(by_external_id(ref, by_name[ref.object]) for ref in refs):
        return False  # a sub-record's ref (``each``) or a ref by another field: keep the order
    for rows in store.outbox(pipeline, plan.name, with_source=False):
        for ref in refs:
            if any(ref.payload_key not in row.payload for row in rows):
                return False  # the ref is not where it is looked for: do not guess
            named = {str(v) for row in rows if (v := row.payload[ref.payload_key]) is not None}
            if not named:
                continue
            if len(store.versions_for(pipeline, ref.object, sorted(named))) < len(named):
                return False
    return True


# A parent whose outbox holds more rows than this is not split against: the rows it still owes are held in memory
# while the child's part runs (a run of guests' Accounts is a few thousand; a parent still entirely unwritten
# makes no child row ready anyway).
MAX_PENDING_PARENTS = 50_000

RowSelector = Callable[[list[OutboxRow]], list[OutboxRow]]


def ready_rows(
    store: Store, pipeline: str, plan: ObjectPlan, plans: Sequence[ObjectPlan], streams: frozenset[str],
    *, parents_planned: bool = False,
) -> RowSelector | None:
    """Which of ``plan``'s outbox rows may go now, ahead of the rest (engine/overlap.py, rules 3 and 4): a row
    planned from one of ``streams`` whose every parent ref names nothing or a parent row written to the target
    with no newer version still queued (its answer in this run is recorded, or an earlier run wrote it and this
    run has nothing newer). None: this object cannot be judged so (a ref not by the parent's external id, or a
    parent owing too many rows to hold); it then loads in one go.

    ``parents_planned``: every stream feeding the parents is read and planned, so a parent that owes nothing now
    never will in this run: it is written, or a dead letter (the caller drops its orphans first), or was never
    read (the child's write fails as it would after the parent's load). The version map is then not asked.

    The parents owing rows are taken once, now: a row naming one of them stays out of this part for good, even
    if that parent is written meanwhile. The caller splits only once every parent's rows are planned, so the
    answer for a row never changes while the part runs, and the rest (``not in`` the selector's answer) is
    exactly what the part leaves."""
    by_name = {p.name: p for p in plans}
    refs = [ref for ref in plan.parents if ref.object in by_name and ref.object != plan.name]
    if not all(by_external_id(ref, by_name[ref.object]) for ref in refs):
        return None
    owing: dict[str, set[str]] = {}
    for obj in {ref.object for ref in refs}:
        if store.outbox_count(pipeline, obj) > MAX_PENDING_PARENTS:
            return None
        owing[obj] = {row.key for rows in store.outbox(pipeline, obj, with_source=False) for row in rows}

    def select(rows: list[OutboxRow]) -> list[OutboxRow]:
        rows = [row for row in rows if row.stream in streams]
        if not refs or not rows:
            return rows
        if parents_planned:
            return [row for row in rows if all(_names_settled(row, ref, owing[ref.object]) for ref in refs)]
        written: dict[str, set[str]] = {}
        for obj in owing:
            named = {str(v) for ref in refs if ref.object == obj for row in rows
                     if (v := row.payload.get(ref.payload_key)) is not None}
            written[obj] = set(store.versions_for(pipeline, obj, sorted(named - owing[obj])))
        return [row for row in rows if all(_names_written(row, ref, written[ref.object]) for ref in refs)]

    return select


def _names_settled(row: OutboxRow, ref: ParentRef, owing: set[str]) -> bool:
    if ref.payload_key not in row.payload:
        return False  # the ref is not where it is looked for: do not guess
    value = row.payload[ref.payload_key]
    return value is None or str(value) not in owing


def _names_written(row: OutboxRow, ref: ParentRef, written: set[str]) -> bool:
    if ref.payload_key not in row.payload:
        return False  # the ref is not where it is looked for: do not guess
    value = row.payload[ref.payload_key]
    return value is None or str(value) in written
