"""After a run has loaded, hand the target's ids back to a source that records them (``LinksBack``).

A source that writes the target's id onto its records (a CRM field showing the accounting system's id)
changes those records, and its next read sees them changed: a newer version. Were that version compared to
the version map alone, every record written back would be sent to the target again, and written back again,
a loop. So the source reads each record it changed again right after the write, and this module compares
the two versions' target payloads, object by object: where the mapping of the new version equals the
mapping of the version the target holds, the new version is recorded as written (latest wins by content:
nothing to send). A record someone edited meanwhile maps differently and is synced next run; nothing is
hidden.

Runs before staging is cleared: a run that dies here is finished by the next, which links again (the source
skips records that already carry their id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from ferry.core.contracts import LinksBack, Source, TargetLink
from ferry.core.ports import StateStore, Written
from ferry.engine.plan import ObjectPlan

log = structlog.get_logger("ferry.engine.linkback")

LINK_BATCH = 1000  # staged records handed to the source at a time


async def link_back(source: Source, store: StateStore, pipeline: str, plans: Sequence[ObjectPlan]) -> dict[str, int]:
    """Link every staged record of each stream the source links back; records changed, by stream."""
    if not isinstance(source, LinksBack):
        return {}
    by_entity: dict[str, list[ObjectPlan]] = {}
    for plan in plans:
        by_entity.setdefault(plan.entity, []).append(plan)
    linked: dict[str, int] = {}
    for stream in source.streams:
        if not source.links_back(stream):
            continue
        latest = _latest_seqs(store, pipeline, stream)
        linked[stream] = 0
        # Chunk by chunk, each key once (its newest staged version): memory holds keys, not payloads.
        for chunk in store.staged(pipeline, [stream], chunk=LINK_BATCH):
            batch = {s.key: orjson.loads(s.payload) for s in chunk if latest.get(s.key) == s.seq}
            if batch:
                linked[stream] += await _link_batch(source, store, pipeline, stream, batch, by_entity)
    return linked


def _latest_seqs(store: StateStore, pipeline: str, stream: str) -> dict[str, int]:
    """Each staged key's newest version, by its staging seq (a key is staged again when it changed)."""
    latest: dict[str, tuple[str, int]] = {}
    for chunk in store.staged(pipeline, [stream]):
        for staged in chunk:
            known = latest.get(staged.key)
            if known is None or staged.version >= known[0]:
                latest[staged.key] = (staged.version, staged.seq)
    return {key: seq for key, (_, seq) in latest.items()}


async def _link_batch(
    source: Source,
    store: StateStore,
    pipeline: str,
    stream: str,
    raws: dict[str, dict[str, Any]],
    by_entity: dict[str, list[ObjectPlan]],
) -> int:
    assert isinstance(source, LinksBack)
    # Each staged record's own canonical records (same key), with the plans that map them.
    own = {key: _own_records(source, stream, key, raw, by_entity) for key, raw in raws.items()}
    objects = {plan.name for records in own.values() for plan, _ in records}
    ids = {obj: store.target_ids(pipeline, obj, list(raws)) for obj in objects}
    links = []
    for key, raw in raws.items():
        found = {plan.name: ids[plan.name][key] for plan, _ in own[key] if key in ids[plan.name]}
        if found:
            links.append(TargetLink(key, raw, found))
    if not links:
        return 0
    echoed = await source.link_back(stream, links)
    for plan_name in objects:
        _record_echoes(source, store, pipeline, stream, plan_name, echoed, own, by_entity)
    return len(echoed)


def _own_records(
    source: Source, stream: str, key: str, raw: dict[str, Any], by_entity: dict[str, list[ObjectPlan]]
) -> list[tuple[ObjectPlan, Any]]:
    return [
        (plan, record)
        for entity, record in source.normalize(stream, raw)
        if str(record.key) == key
        for plan in by_entity.get(entity, ())
    ]


def _record_echoes(
    source: Source,
    store: StateStore,
    pipeline: str,
    stream: str,
    plan_name: str,
    echoed: dict[str, dict[str, Any]],
    own: dict[str, list[tuple[ObjectPlan, Any]]],
    by_entity: dict[str, list[ObjectPlan]],
) -> None:
    """The echoed versions that map to what the target holds, recorded as written for ``plan_name``."""
    keys = [k for k in echoed if any(p.name == plan_name for p, _ in own.get(k, ()))]
    held = store.versions_for(pipeline, plan_name, keys)
    rows: list[Written] = []
    for key in keys:
        plan, before = next((p, r) for p, r in own[key] if p.name == plan_name)
        if held.get(key) != before.version:
            continue  # the target does not hold the version that was linked (dead-lettered, or newer)
        after = next((r for p, r in _own_records(source, stream, key, echoed[key], by_entity) if p.name == plan_name),
                     None)
        if after is None or after.version <= before.version:
            continue
        mapped_before, errors_before = plan.map_and_validate(before)
        mapped_after, errors_after = plan.map_and_validate(after)
        if not errors_before and not errors_after and mapped_before == mapped_after:
            rows.append(Written(key, after.version))
        else:
            log.info("link_back.changed_meanwhile", pipeline=pipeline, object=plan_name, key=key)
    if rows:
        store.record_written(pipeline, plan_name, rows, resolution="linked back")
