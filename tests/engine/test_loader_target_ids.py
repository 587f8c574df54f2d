"""The loader hands a sink without a native upsert the id map's target ids (``SinkCapabilities.native_upsert``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from ferry.core.contracts import SinkCapabilities
from ferry.core.dialect import PlainDialect
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult
from ferry.core.schema import FieldSchema, ObjectSchema
from ferry.core.writes import WriteCost
from ferry.engine.loader import Loader, RetryBudget
from ferry.engine.plan import build_plans
from ferry.engine.stats import RunStats
from ferry.mapping.spec import ObjectMapping
from ferry.store import PlannedRow, Store, Written


class _Progress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


class _RecordingSink:
    """Answers every record as written under id ``T-<Name>`` and keeps what it was given."""

    system = "fake"
    dialect = PlainDialect()

    def __init__(self, native_upsert: bool) -> None:
        self.capabilities = SinkCapabilities(native_upsert=native_upsert)
        self.given: list[Sequence[str | None] | None] = []

    @property
    def api_calls(self) -> dict[str, int]:
        return {}

    def write_costs(self, obj: str, count: int) -> list[WriteCost]:
        return [WriteCost("single", count, count)]

    def budget_left(self) -> int | None:
        return None

    async def upsert(self, obj: str, external_id: str, records: Sequence[MappedRecord], strategy: str, *,
                     target_ids: Sequence[str | None] | None = None) -> list[RecordResult]:
        self.given.append(target_ids)
        return [RecordResult(str(r["Name"]), True, f"T-{r['Name']}", created=True) for r in records]


def _load(tmp_path: Path, native_upsert: bool) -> tuple[_RecordingSink, Store]:
    store = Store(tmp_path / "ferry.db")
    mapping = ObjectMapping.model_validate({"name": "Customer", "from": "customer", "external_id": "Name",
                                            "fields": {"Name": "key"}})
    schema = ObjectSchema("Customer", {"Name": FieldSchema("Name", "string", 100, id_lookup=True)})
    [plan] = build_plans([mapping], {"Customer": schema}, {}, PlainDialect())
    store.record_written("p", "Customer", [Written("a", "v0", "QB-1")])  # written by an earlier run
    store.put_outbox("p", "Customer", [PlannedRow("a", "v1", {"Name": "a"}), PlannedRow("b", "v1", {"Name": "b"})])
    sink = _RecordingSink(native_upsert)
    loader = Loader(store, "p", store.start_run("p"), RunStats(run_id=1, pipeline="p"), RetryBudget())
    asyncio.run(loader.load(sink, plan, _Progress()))  # type: ignore[arg-type]
    return sink, store


def test_a_sink_without_native_upsert_gets_the_id_maps_target_ids_in_record_order(tmp_path: Path) -> None:
    sink, store = _load(tmp_path, native_upsert=False)
    assert sink.given == [["QB-1", None]]
    # ... and the ids it answered are the id map from now on.
    assert store.target_ids("p", "Customer", ["a", "b"]) == {"a": "T-a", "b": "T-b"}


def test_a_sink_with_native_upsert_gets_none(tmp_path: Path) -> None:
    sink, _ = _load(tmp_path, native_upsert=True)
    assert sink.given == [None]


