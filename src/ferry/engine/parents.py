"""Parents first, in real time: before a micro-batch is planned, the records its staged records refer to that
the target does not hold yet, and that no staged record brings along, are fetched from the source and staged
with them.

A batch run reads every stream, parents' streams first, so an order's customer and products are in the run
already. Events come one resource at a time and in no promised order: Shopify sends ``orders/create`` for an
order of a customer created a moment ago, maybe before ``customers/create`` (or that delivery is lost), and
the Order's write would fail on an Account the org does not have. Staged together, the parents are planned in
the same micro-batch and the load writes them first (``engine/waves.py``: a child naming a parent not yet
written waits for its parent's wave).

A reference is taken as held when the pipeline's version map has its key for every target object built from
its entity (an Account and a Contact from a customer). A parent that is an open dead letter is not fetched
again (it would only fail again; its children go to the dead-letter queue naming it). A parent the source no
longer has is not staged: the child's write then fails on the reference and is dead-lettered with the
target's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import structlog

from ferry.core.contracts import Reference, RefersTo, Source
from ferry.core.ports import StagedRow
from ferry.engine.plan import ObjectPlan
from ferry.store import Store

log = structlog.get_logger("ferry.engine.parents")

FETCHED_RUN_ID = 0  # staged by no read (like webhook deliveries): the micro-batch that plans them is the run
_CHUNK = 2000


@dataclass
class _Wanted:
    """References of one entity by key, and which (stream, key) the batch already stages."""

    by_entity: dict[str, dict[str, Reference]] = field(default_factory=dict)
    staged: set[tuple[str, str]] = field(default_factory=set)


async def stage_missing_parents(source: Source, store: Store, pipeline: str, plans: Sequence[ObjectPlan],
                                after: int) -> dict[str, int]:
    """Fetch and stage what the records staged after seq ``after`` refer to and the target lacks; the records
    staged per source stream (empty when the source refers to nothing: no ``RefersTo``)."""
    if not isinstance(source, RefersTo):
        return {}
    objects: dict[str, list[str]] = {}
    for plan in plans:
        objects.setdefault(plan.entity, []).append(plan.name)
    wanted = _references(source, source, store, pipeline, objects, after)
    missing = _missing(store, pipeline, objects, wanted)
    staged: dict[str, int] = {}
    for stream, keys in sorted(missing.items()):
        fetched = await source.fetch_many(stream, sorted(keys))
        rows = []
        for raw in fetched.values():
            key, version = source.identify(stream, raw)
            rows.append(StagedRow(key, version, orjson.dumps(raw)))
        staged[stream] = store.stage(pipeline, stream, FETCHED_RUN_ID, rows, None) if rows else 0
        if len(fetched) < len(keys):
            log.warning("parents.not_in_source", pipeline=pipeline, stream=stream,
                        keys=sorted(set(keys) - set(fetched))[:20])
    if staged:
        log.info("parents.fetched", pipeline=pipeline, **{f"stream_{k}": v for k, v in staged.items()})
    return staged


def _references(source: Source, refers: RefersTo, store: Store, pipeline: str, objects: dict[str, list[str]],
                after: int) -> _Wanted:
    wanted = _Wanted()
    for chunk in store.staged(pipeline, source.streams, chunk=_CHUNK, after=after):
        for record in chunk:
            wanted.staged.add((record.stream, record.key))
            for ref in refers.references(record.stream, orjson.loads(record.payload)):
                if ref.entity in objects:  # the pipeline maps the entity: it has parents to write
                    wanted.by_entity.setdefault(ref.entity, {}).setdefault(ref.key, ref)
    return wanted


def _missing(store: Store, pipeline: str, objects: dict[str, list[str]], wanted: _Wanted) -> dict[str, set[str]]:
    """(stream -> fetch keys) of references no staged record brings and some target object of theirs lacks."""
    missing: dict[str, set[str]] = {}
    for entity, refs in wanted.by_entity.items():
        todo = {k: r for k, r in refs.items() if (r.stream, r.fetch_key) not in wanted.staged}
        if not todo:
            continue
        keys = list(todo)
        for obj in objects[entity]:
            held = store.versions_for(pipeline, obj, keys)
            for key in keys:
                # Looked up only for the few keys not held (an object may have many open letters).
                if key not in held and not _open_letter(store, pipeline, obj, key):
                    missing.setdefault(todo[key].stream, set()).add(todo[key].fetch_key)
    return missing


def _open_letter(store: Store, pipeline: str, obj: str, key: str) -> bool:
    letter = store.dead_letter_for(pipeline, obj, key)
    return letter is not None and letter.status == "open"
