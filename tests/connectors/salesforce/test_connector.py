"""Salesforce's registry entry: a `target:` block and a SinkContext open a sink whose calls go on the
pipeline's API ledger (the budget share holds across runs)."""

from __future__ import annotations

from pathlib import Path

from ferry.connectors import registry
from ferry.connectors.salesforce import SalesforceSink
from ferry.connectors.salesforce.budget import bucket_of, window_start
from ferry.core.contracts import SinkContext
from ferry.store import Store
from tests.connectors.salesforce.conftest import Org

NOW = 1_800_000_000.0


async def test_a_sink_opened_by_the_registry_spends_the_pipelines_ledger(org: Org, tmp_path: Path) -> None:
    store = Store(tmp_path / "ferry.db")
    jobs: list[object] = []
    ctx = SinkContext("p", ledger=store, clock=lambda: NOW, extras={"on_bulk_job": jobs.append})
    async with registry.open_sink(org.config(), ctx) as sink:
        assert isinstance(sink, SalesforceSink)
        await sink.describe(["Account"])
        calls = sink.api_calls
    assert sum(calls.values()) >= 1
    # Every call (the token request aside) was counted on the pipeline's ledger, in the context clock's minute.
    assert store.api_call_buckets("p", "salesforce", window_start(NOW)) == [(bucket_of(NOW), sum(calls.values()))]


async def test_without_a_ledger_the_sink_keeps_its_count_in_memory(org: Org, tmp_path: Path) -> None:
    async with registry.open_sink(org.config(), SinkContext("p")) as sink:
        await sink.describe(["Account"])
    assert Store(tmp_path / "ferry.db").api_call_buckets("p", "salesforce", 0) == []
