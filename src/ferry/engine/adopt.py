"""Two-way sync: before a micro-batch (or run) loads, the target records the other direction made this
pipeline's source records FROM are adopted, so the upsert by external id addresses them instead of creating a
second record.

A person creates an Account (and its Contact) in Salesforce; the Salesforce -> shop pipeline creates a shop
customer from it. The shop announces that customer, and this (shop -> Salesforce) pipeline receives a record
whose key (the customer id) no Account carries: upserting it by ``Shopify_Customer_Id__c`` would create a
second Account. ``TwoWay.linked`` names the Account through the peer's id map read backwards; a sink with the
``Adopts`` capability writes the key onto that Account and its primary Contact, then the load upserts them.

Why here, at load, and from the outbox: the decision rests on state in the store only (the outbox row, this
pipeline's id map, the peer's id map), so it holds after a restart, and a batch that dies between the adoption
and the upsert adopts again on the next pass (adoption is idempotent; the key is still missing from this
pipeline's id map until the upsert's result is recorded). The adoption happens in THIS direction, just before
its own upsert, not as a link-back in the other direction after its write: the shop's webhook may be processed
before the other direction would have linked, and nothing would then stop the second Account.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from ferry.core.contracts import Adopts, ChildAdoption, Sink
from ferry.core.ports import StateStore
from ferry.engine.plan import ObjectPlan
from ferry.engine.twoway import TwoWay

log = structlog.get_logger("ferry.engine.adopt")


async def adopt_linked(
    sink: Sink, store: StateStore, pipeline: str, plans: Sequence[ObjectPlan], two_way: TwoWay | None,
    keys: Sequence[str] | None = None,
) -> int:
    """Adopt the target records behind the outbox rows of the ``via`` object (``keys``, or all of them) that the
    peer pipeline made from the target and this pipeline has no id for yet; the records changed (0 without a
    peer or the capability)."""
    peer = two_way.spec.peer if two_way is not None else None
    if two_way is None or peer is None or not isinstance(sink, Adopts):
        return 0
    via = next((p for p in plans if p.name == peer.via), None)
    if via is None:
        return 0
    if keys is None:
        keys = [row.key for chunk in store.outbox(pipeline, via.name, with_source=False) for row in chunk]
    ids = two_way.linked(via.name, keys) if keys else {}
    if not ids:
        return 0
    children = [
        ChildAdoption(p.name, p.external_id, ref.field)
        for p in plans
        for ref in p.parents
        # the same source record's other objects (same key): a Contact mapped from the customer, as the Account
        if ref.object == via.name and p.name != via.name and p.entity == via.entity
    ]
    changed = await sink.adopt(via.name, via.external_id, ids, children)
    log.info("adopt.linked", pipeline=pipeline, object=via.name, records=len(ids), changed=changed)
    return changed
