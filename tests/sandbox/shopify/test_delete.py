"""DELETE /customers/{id}.json: gone afterwards (404), refused with 422 while the customer has orders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import shopify
from pyactiveresource.connection import ResourceInvalid, ResourceNotFound

from .conftest import Served, _serve


@pytest.fixture
def deletable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("shopify-delete"), customers=40, products=3, orders=20)


def test_customer_delete_with_the_real_client(deletable: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(deletable.running.ca_file))
    shopify.ShopifyResource.set_site(deletable.api)
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": deletable.token})
    try:
        buyers = {(o.get("customer") or {}).get("id") for o in deletable.sandbox.store.orders}
        idle = next(c["id"] for c in deletable.sandbox.store.customers if c["id"] not in buyers)
        busy = next(c["id"] for c in deletable.sandbox.store.customers if c["id"] in buyers)
        shopify.Customer.find(idle).destroy()
        with pytest.raises(ResourceNotFound):
            shopify.Customer.find(idle)
        assert idle not in {c["id"] for c in deletable.sandbox.store.customers}
        with pytest.raises(ResourceInvalid):
            shopify.Customer.find(busy).destroy()
        assert shopify.Customer.find(busy).id == busy
    finally:
        shopify.ShopifyResource.clear_session()
