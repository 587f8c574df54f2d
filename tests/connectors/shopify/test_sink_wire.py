"""The Shopify sink's wire shapes: a mapped record as a CustomerInput, and one request of aliased mutations."""

from __future__ import annotations

from ferry.connectors.shopify.sink import _Item, customer_input, mutation_document


def test_a_create_leaves_out_empty_fields_and_nests_the_address() -> None:
    record = {"email": "a@example.com", "firstName": "Ann", "lastName": None, "note": "", "tags": "vip, crm ,",
              "address.city": "Austin", "address.zip": None, "address.countryCode": "US"}
    assert customer_input(record, update=False) == {
        "email": "a@example.com", "firstName": "Ann", "tags": ["vip", "crm"],
        "addresses": [{"city": "Austin", "countryCode": "US"}]}


def test_an_update_clears_what_the_source_cleared_but_never_email_or_phone() -> None:
    record = {"email": None, "phone": None, "lastName": None, "note": None, "tags": None, "address.city": None}
    assert customer_input(record, update=True) == {"lastName": None, "note": None, "tags": []}


def test_one_request_carries_creates_and_updates_under_aliases() -> None:
    items = [_Item("a@example.com", {"email": "a@example.com"}, None),
             _Item("b@example.com", {"email": "b@example.com"}, "gid://shopify/Customer/7")]
    document, variables = mutation_document(items)
    assert document.startswith("mutation ferryCustomers($i0: CustomerInput!, $i1: CustomerInput!) {")
    assert "m0: customerCreate(input: $i0)" in document and "m1: customerUpdate(input: $i1)" in document
    assert variables == {"i0": {"email": "a@example.com"},
                         "i1": {"email": "b@example.com", "id": "gid://shopify/Customer/7"}}
