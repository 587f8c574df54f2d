"""A batch's per-item failures reach the dead-letter queue one by one, with record, field and reason, through
the engine's loader (which hands the sink the id map's target ids: the second load updates, never creates)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ferry.connectors.quickbooks.dialect import QUICKBOOKS
from ferry.connectors.quickbooks.schema import SCHEMAS
from ferry.engine.loader import Loader, RetryBudget
from ferry.engine.plan import build_plans
from ferry.engine.stats import RunStats
from ferry.mapping.spec import ObjectMapping
from ferry.store import LetterFilter, PlannedRow, Store
from tests.connectors.quickbooks.conftest import Books


class _Quiet:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


def _item_plan() -> object:
    mapping = ObjectMapping.model_validate({"name": "Item", "from": "product_variant", "external_id": "Name",
                                            "fields": {"Name": "key", "UnitPrice": "price", "Type": {"value": "x"},
                                                       "IncomeAccountRef": {"value": "1"}}})
    [plan] = build_plans([mapping], {"Item": SCHEMAS["Item"]}, {}, QUICKBOOKS)
    return plan


def _load(books: Books, store: Store, rows: list[PlannedRow]) -> RunStats:
    store.put_outbox("p", "Item", rows)
    stats = RunStats(run_id=1, pipeline="p")

    async def run() -> None:
        sink = books.sink("p")
        async with sink:
            loader = Loader(store, "p", store.start_run("p"), stats, RetryBudget(max_attempts=2))
            await loader.load(sink, _item_plan(), _Quiet())  # type: ignore[arg-type]

    asyncio.run(run())
    return stats


def test_batch_item_failures_are_dead_lettered_with_field_and_reason(books: Books, tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    income = next(a["Id"] for a in books.records("Account") if a["Name"] == "Sales of Product Income")
    good = {"Type": "NonInventory", "UnitPrice": 3.0, "IncomeAccountRef": income}
    rows = [
        PlannedRow("v1", "1", {"Name": "Good one", **good}),
        PlannedRow("v2", "1", {"Name": "No account", "Type": "NonInventory", "UnitPrice": 1.0}),
        PlannedRow("v3", "1", {"Name": "Bad type", **good, "Type": "Gadget"}),
        PlannedRow("v4", "1", {"Name": "Good two", **good}),
    ]
    stats = _load(books, store, rows)
    s = stats.object("Item")
    assert (s.written, s.created, s.dead_lettered) == (2, 2, 2)
    letters = {d.record_key: d for d in store.find_dead_letters(LetterFilter(pipeline="p"))}
    assert set(letters) == {"v2", "v3"}
    assert letters["v2"].error_code == "QBO_6000" and letters["v2"].fields == ["IncomeAccountRef"]
    assert "income account" in letters["v2"].message
    assert letters["v3"].error_code == "QBO_2170" and letters["v3"].fields == ["Type"]
    assert letters["v2"].mapped_payload["Name"] == "No account"

    # A newer version of a written one goes out as an update of the Id the id map holds, not a create.
    ids = store.target_ids("p", "Item", ["v1", "v4"])
    again = _load(books, store, [PlannedRow("v1", "2", {"Name": "Good one", **good, "UnitPrice": 9.5})])
    assert (again.object("Item").updated, again.object("Item").created) == (1, 0)
    stored = {r["Id"]: r for r in books.records("Item")}
    assert stored[ids["v1"]]["UnitPrice"] == 9.5 and len([r for r in stored.values() if r["Name"] == "Good one"]) == 1
