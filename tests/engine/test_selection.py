"""Entity selection (``SelectsEntities``): the engine tells the source which canonical entities the pipeline's
objects map before it reads, and ``ferry plan`` and the run report say what is not read. Against the sandboxes:
the example pipeline over Shopify's GraphQL maps no refund, so no refund is read, and every Order still carries
the total refunded that REST's refunds add up to."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.connectors.shopify import normalize as shopify_normalize
from ferry.engine.inspect import inspect_pipeline
from ferry.engine.runner import Runner
from ferry.mapping.spec import ObjectMapping, mapped_entities
from ferry.store import Store
from tests.engine.world import world


def test_mapped_entities_are_each_objects_from_and_what_an_each_walks() -> None:
    invoice = ObjectMapping.model_validate({
        "name": "Invoice", "from": "order", "external_id": "DocNumber",
        "fields": {"DocNumber": "key", "Line": {"each": "lines", "fields": {"Amount": "unit_price"}}},
    })
    customer = ObjectMapping.model_validate({
        "name": "Customer", "from": "customer", "external_id": "Id", "fields": {"Id": "key"},
    })
    assert mapped_entities([invoice, customer]) == {"order", "order_line", "customer"}
    assert mapped_entities([customer]) == {"customer"}


@pytest.mark.parametrize("api", ["graphql", "rest"])
async def test_the_example_pipeline_reads_no_refund_over_graphql_and_loads_every_total_refunded(
    tmp_path: Path, api: str
) -> None:
    with world(tmp_path, customers=40, products=10, orders=120, shopify_api=api) as w:
        spec = w.spec(w.pipeline_file())
        store = Store(tmp_path / "ferry.db")
        skipped = ["refund"] if api == "graphql" else []  # REST's order pages carry refunds at no extra call

        plan = await inspect_pipeline(spec, store)
        assert plan.skipped_entities == skipped and plan.as_dict()["skipped_entities"] == skipped

        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert stats.skipped_entities == skipped and stats.as_dict()["skipped_entities"] == skipped
        with w.shopify() as shop:
            orders = shop.get("/orders.json", params={"status": "any", "limit": 250}).json()["orders"]
        expected = {str(o["id"]): shopify_normalize.order(o).total_refunded for o in orders}
        loaded = {r["Shopify_Order_Id__c"]: r.get("Shopify_Total_Refunded__c") for r in w.records("Order")}
        assert len(loaded) >= 100
        for key, total in loaded.items():
            assert total == pytest.approx(float(expected[key] or 0)), key
        assert sum(1 for total in loaded.values() if total) >= 5  # refunded orders were among those compared
