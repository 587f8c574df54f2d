"""Entity selection: a source is told, before it reads, which canonical entities the pipeline maps.

Singer's catalog selection and Airbyte's configured catalog are the precedent: a source reads what is selected.
A source that implements ``SelectsEntities`` may leave out of its reads what only feeds other entities (Shopify
over GraphQL: a refund's line items, one node query per refund, when no object maps ``refund``); one that does
not reads everything. Every path that opens a source to read or fetch calls ``select_for_pipeline`` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from ferry.core.contracts import SelectsEntities, Source
from ferry.mapping.spec import ObjectMapping, mapped_entities

log = structlog.get_logger("ferry.engine.selection")


def select_for_pipeline(source: Source, mappings: Sequence[ObjectMapping]) -> list[str]:
    """Tell ``source`` (when it selects) the entities ``mappings`` read; the entities its reads will no longer
    yield whole, sorted (empty: it reads everything, as a source without the capability does)."""
    if not isinstance(source, SelectsEntities):
        return []
    entities = mapped_entities(mappings)
    skipped = sorted(source.select_entities(entities))
    if skipped:
        log.info("read.selection", selected=sorted(entities), skipped=skipped)
    return skipped
