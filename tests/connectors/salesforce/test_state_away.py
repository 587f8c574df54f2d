"""The state store going away mid-write is the write's failure, never the records': the sink raises it (the run
stops, a worker's item is retried) instead of answering every record of the call as failed with
"StateUnavailable", which dead-lettered valid records when PostgreSQL restarted under `ferry worker`s (found by the
distributed chaos suite). The API ledger here is a real PostgreSQL store on a server of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.connectors.salesforce import SalesforceSink
from ferry.connectors.salesforce.strategy import Strategy
from ferry.core.contracts import SinkContext
from ferry.store.postgres import PostgresStore, StateUnavailable, migrate
from tests.store.postgres_server import PostgresServer, start_server

from .conftest import Org

EXT = "Shopify_Customer_Id__c"


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = start_server()
    yield server
    server.cleanup()


def _contacts(n: int, prefix: str) -> list[dict[str, object]]:
    return [{EXT: f"{prefix}{i}", "LastName": f"Last {i}", "Email": f"{prefix}{i}@example.com"} for i in range(n)]


async def test_a_ledger_that_is_away_stops_the_write_and_fails_no_record(
    org: Org, own_server: PostgresServer, tmp_path: Path
) -> None:
    url = own_server.fresh_database()
    migrate(url)
    store = PostgresStore(url, lock_dir=tmp_path, connect_timeout=1)
    try:
        async with SalesforceSink(org.config(api_budget=1000), SinkContext("p", ledger=store)) as sink:
            written = await sink.upsert("Contact", EXT, _contacts(3, "ok"), Strategy.COLLECTIONS)
            assert all(r.success for r in written)
            own_server.crash()
            used = org.sandbox.state.budget.used
            for strategy in (Strategy.COMPOSITE, Strategy.COLLECTIONS, Strategy.SINGLE):
                with pytest.raises(StateUnavailable):
                    await sink.upsert("Contact", EXT, _contacts(3, f"{strategy.value}-"), strategy)
            assert org.sandbox.state.budget.used == used  # not counted, so not sent
    finally:
        store.close()
