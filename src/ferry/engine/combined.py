"""Combined calls: a micro-batch's objects written together, one API call carrying every object's records with
parents' parts before their children's, instead of one call per object (a sink with ``WritesTogether``;
Salesforce: a Composite call of sObject Collections subrequests).

Why: a micro-batch of ``ferry serve`` writes a few records of each object. Object by object it costs a call per
object (Account, then Contact), however few the records: 63 Salesforce calls per 1,000 events at 200 events/s
with a 150 ms window. Together it costs one.

How a batch is cut into calls: ``realtime.records_per_call`` (pipeline) bounds the records of one call (a call's
time grows with its records, calls in flight overlap: latency). When every child names a parent the target holds
already (``waves.load_waves`` puts all objects in one wave: a stream of updates), nothing orders the calls: the
parts are packed full into as few calls as the bounds allow, all sent at the same time. Otherwise a batch of N
records becomes ceil(N / records_per_call) groups sent at the same time; a child record goes in the group of
the parent it names when that parent is in this batch (so the parent is written first, in the same call); a
child whose parent the batch does not carry, and every root record, goes to the smallest group. Inside a group,
parts (one object's records, at most the sink's records a part) go in dependency order, as many as one call
carries; a group needing more calls sends them one after another, so order holds there too.

A batch is NOT combined (the caller writes object by object, as a batch run) when: the sink cannot now
(``together_limits`` None: Composite off or refused), a ref names its parent by something other than the
parent's external id (the group of its parent cannot be told), a crashed run left a remote job to resume, or the
batch needs more than ``MAX_GROUPS`` groups (a backlog after a restart: Composite of 1,000 records a call and
Bulk are the better tools there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ferry.core.contracts import TogetherLimits
from ferry.engine.plan import ObjectPlan, ParentRef, order_plans
from ferry.engine.waves import by_external_id, load_waves
from ferry.store import OutboxRow, Store

MAX_GROUPS = 8  # groups (calls) in flight at once for one micro-batch


@dataclass(slots=True)
class CallPart:
    plan: ObjectPlan
    rows: list[OutboxRow]


Call = list[CallPart]  # one API call: parts in dependency order
Group = list[Call]  # calls sent one after another


def plan_calls(
    store: Store, pipeline: str, plans: Sequence[ObjectPlan], limits: TogetherLimits, records_per_call: int
) -> list[Group] | None:
    """The batch's outbox as groups (sent at the same time) of calls (sent in turn), or None: object by object."""
    ordered = order_plans(plans)
    by_name = {p.name: p for p in ordered}
    refs = {p.name: [r for r in p.parents if r.object in by_name and r.object != p.name] for p in ordered}
    if not all(by_external_id(r, by_name[r.object]) for rs in refs.values() for r in rs):
        return None
    rows: dict[str, list[OutboxRow]] = {}
    for plan in ordered:
        if store.remote_jobs(pipeline, plan.name):
            return None
        rows[plan.name] = [row for page in store.outbox(pipeline, plan.name, with_source=False) for row in page]
    total = sum(len(r) for r in rows.values())
    per_call = max(1, min(records_per_call, limits.parts * limits.records))
    groups = -(-total // per_call)
    if total == 0 or groups > MAX_GROUPS:
        return None
    if len(load_waves(store, pipeline, ordered)) == 1:
        # Every child names a parent the target holds already: no order between calls, so pack them full.
        packed = _packed(ordered, rows, limits, per_call)
        return [[call] for call in packed] if len(packed) <= MAX_GROUPS else None
    members = _assign(ordered, rows, refs, groups)
    return [_calls(ordered, member, limits) for member in members if member]


def _packed(
    ordered: Sequence[ObjectPlan], rows: dict[str, list[OutboxRow]], limits: TogetherLimits, per_call: int
) -> list[Call]:
    """Parts of <= min(records a part, records a call), first fit by size into calls of <= ``limits.parts``
    parts and ``per_call`` records (1,000 Accounts and 1,000 Contacts: two calls of 5 x 200). Each call's parts
    stay in dependency order."""
    size = min(limits.records, per_call)
    rank = {plan.name: n for n, plan in enumerate(ordered)}
    parts = sorted(
        (CallPart(plan, rows[plan.name][start:start + size])
         for plan in ordered for start in range(0, len(rows[plan.name]), size)),
        key=lambda part: -len(part.rows),
    )
    calls: list[Call] = []
    for part in parts:
        fits = next((call for call in calls if len(call) < limits.parts
                     and sum(len(p.rows) for p in call) + len(part.rows) <= per_call), None)
        if fits is None:
            calls.append([part])
        else:
            fits.append(part)
    return [sorted(call, key=lambda part: rank[part.plan.name]) for call in calls]


def _assign(
    ordered: Sequence[ObjectPlan], rows: dict[str, list[OutboxRow]], refs: dict[str, list[ParentRef]], groups: int
) -> list[dict[str, list[OutboxRow]]]:
    """Each row's group: its in-batch parent's, else the smallest."""
    home: dict[tuple[str, str], int] = {}
    sizes = [0] * groups
    members: list[dict[str, list[OutboxRow]]] = [{} for _ in range(groups)]
    for plan in ordered:
        for row in rows[plan.name]:
            group = _parent_group(row, refs[plan.name], home)
            if group is None:
                group = sizes.index(min(sizes))
            home[(plan.name, row.key)] = group
            sizes[group] += 1
            members[group].setdefault(plan.name, []).append(row)
    return members


def _parent_group(row: OutboxRow, refs: Sequence[ParentRef], home: dict[tuple[str, str], int]) -> int | None:
    for ref in refs:
        value = row.payload.get(ref.payload_key)
        if value is not None and (ref.object, str(value)) in home:
            return home[(ref.object, str(value))]
    return None


def _calls(ordered: Sequence[ObjectPlan], member: dict[str, list[OutboxRow]], limits: TogetherLimits) -> Group:
    parts = [
        CallPart(plan, member[plan.name][start:start + limits.records])
        for plan in ordered if plan.name in member
        for start in range(0, len(member[plan.name]), limits.records)
    ]
    return [parts[start:start + limits.parts] for start in range(0, len(parts), limits.parts)]


def parent_failed(part: CallPart, failed: dict[str, set[str]]) -> dict[str, tuple[ParentRef, str]]:
    """Rows of ``part`` naming a parent that failed earlier in the same group: row key -> (ref, parent key)."""
    out: dict[str, tuple[ParentRef, str]] = {}
    for row in part.rows:
        for ref in part.plan.parents:
            value = row.payload.get(ref.payload_key)
            if value is not None and str(value) in failed.get(ref.object, ()):
                out[row.key] = (ref, str(value))
                break
    return out
