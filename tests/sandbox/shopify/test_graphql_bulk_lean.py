"""The sandbox's lean bulk executor gives byte for byte the result file graphql-core's executor gives, over
HTTP: ferry's three bulk queries, the fidelity tests' query, and documents with fragments, aliases, an
abstract type and a directive (left to graphql-core); on the plain and the sharded store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ferry.connectors.shopify.gql_reader import bulk_query

from .conftest import Served, _serve, configure_graphql, gql_session, sandbox_http
from .test_graphql_bulk import ORDERS_BULK, POLL, RUN, gql_run, wait_until_done

FRAGMENTS = """{ products(sortKey: ID, query: "status:active") { edges { node { ...P t: title
  variants { edges { node { ... on Node { id } ... on ProductVariant { sku price } } } } } } } }
fragment P on Product { id handle __typename }"""
DIRECTIVE = """{ customers { edges { node { id email @include(if: false) firstName @skip(if: false) } } } }"""
QUERIES = {
    "ferry customers": bulk_query("customers", None),
    "ferry products": bulk_query("products", None),
    "ferry orders": bulk_query("orders", "2020-01-01T00:00:00Z"),
    "ferry orders, one id range": bulk_query("orders", None, "id:>1 id:<=999999999999999"),
    "fidelity orders": ORDERS_BULK,
    "fragments and an abstract type": FRAGMENTS,
    "directives": DIRECTIVE,
}


@pytest.fixture(scope="module", params=["plain", "sharded"])
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    extra: dict[str, Any] = {"shard_orders": 60, "spill": True} if request.param == "sharded" else {}
    yield from _serve(tmp_path_factory.mktemp("shopify-lean"), customers=40, products=15, orders=120,
                      graphql_plan="plus", **extra)


def _result_file(shop: Served, session: Any, query: str, *, lean: bool) -> bytes:
    configure_graphql(shop, {"bulk": {"seconds_per_object": 0.0, "page_size": 25, "lean": lean}})
    started = gql_run(session, RUN, q=query)["bulkOperationRunQuery"]
    assert started["userErrors"] == [], started
    op, _ = wait_until_done(lambda: gql_run(session, POLL, id=started["bulkOperation"]["id"])["node"])
    assert op["status"] == "COMPLETED" and op["url"], op
    with sandbox_http(shop) as http:
        return http.get(op["url"]).content


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_lean_and_graphql_core_write_the_same_file(shop: Served, name: str) -> None:
    pages = shop.sandbox.graphql.bulk.pages_by_executor
    with gql_session(shop) as session:
        try:
            core = _result_file(shop, session, QUERIES[name], lean=False)
            before = dict(pages)
            lean = _result_file(shop, session, QUERIES[name], lean=True)
        finally:
            configure_graphql(shop, {"bulk": {"seconds_per_object": 0.0005, "page_size": 100, "lean": True}})
    assert core.count(b"\n") > 10
    assert lean == core
    # The lean executor ran every page, but for the document with directives (graphql-core's to run).
    ran = "graphql-core" if name == "directives" else "lean"
    assert pages[ran] > before[ran] and sum(pages.values()) - sum(before.values()) == pages[ran] - before[ran]
