"""Record validation through the save path shared by every API (no HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.dml import SaveResult
from ferry.sandbox.salesforce.errors import RecordError
from ferry.sandbox.salesforce.validate import parse_body


@pytest.fixture
def sb(tmp_path: Path) -> SalesforceSandbox:
    return SalesforceSandbox(tmp_path)


def create(sb: SalesforceSandbox, sobject: str, body: dict[str, Any]) -> SaveResult:
    obj = sb.state.schema.objects[sobject]
    return sb.state.org.create(obj, parse_body(sb.state.schema, obj, body))


def error(result: SaveResult) -> tuple[str, str, list[str]]:
    assert not result.success
    e = result.errors[0]
    return e.status_code, e.message, e.fields


def test_required_fields_listed_together(sb: SalesforceSandbox) -> None:
    assert error(create(sb, "Order", {"Name": "x"})) == (
        "REQUIRED_FIELD_MISSING", "Required fields are missing: [AccountId, EffectiveDate, Status]",
        ["AccountId", "EffectiveDate", "Status"])


def test_string_too_long_uses_label(sb: SalesforceSandbox) -> None:
    code, message, fields = error(create(sb, "Contact", {"LastName": "x" * 81}))
    assert code == "STRING_TOO_LONG" and fields == ["LastName"]
    assert message == f"Last Name: data value too large: {'x' * 81} (max length=80)"


def test_email_type_and_picklist_and_numbers(sb: SalesforceSandbox) -> None:
    assert error(create(sb, "Contact", {"LastName": "x", "Email": "not an email"}))[0] == "INVALID_EMAIL_ADDRESS"
    acct = create(sb, "Account", {"Name": "A"}).id
    bad_status = create(sb, "Order", {"AccountId": acct, "EffectiveDate": "2024-01-01", "Status": "Shipped"})
    assert error(bad_status)[:2] == ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                     "Status: bad value for restricted picklist field: Shipped")
    assert error(create(sb, "Account", {"Name": "A", "NumberOfEmployees": "many"}))[0] == \
        "INVALID_TYPE_ON_FIELD_IN_RECORD"
    assert error(create(sb, "Order", {"AccountId": acct, "EffectiveDate": "2024-13-45", "Status": "Draft"}))[0] == \
        "INVALID_TYPE_ON_FIELD_IN_RECORD"


def test_unknown_and_read_only_fields(sb: SalesforceSandbox) -> None:
    obj = sb.state.schema.objects["Account"]
    with pytest.raises(RecordError) as exc:
        parse_body(sb.state.schema, obj, {"Name": "a", "Nope__c": 1})
    assert (exc.value.status_code, exc.value.message) == ("INVALID_FIELD", "No such column 'Nope__c' on sobject of "
                                                                           "type Account")
    assert error(create(sb, "Account", {"Name": "a", "CreatedDate": "2024-01-01T00:00:00Z"}))[0] == \
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert error(create(sb, "Account", {"Name": "a", "Id": "001000000000001AAA"}))[0] == "INVALID_FIELD"


def test_unique_external_id_and_references(sb: SalesforceSandbox) -> None:
    first = create(sb, "Account", {"Name": "a", "Shopify_Customer_Id__c": "X1"})
    code, message, _ = error(create(sb, "Account", {"Name": "b", "Shopify_Customer_Id__c": "x1"}))
    assert code == "DUPLICATE_VALUE" and message.endswith(str(first.id))
    assert error(create(sb, "Contact", {"LastName": "c", "AccountId": "001000000000999AAA"}))[0] == \
        "INVALID_CROSS_REFERENCE_KEY"
    assert error(create(sb, "Contact", {"LastName": "c", "AccountId": "garbage"}))[0] == "MALFORMED_ID"
    assert error(create(sb, "Contact", {"LastName": "c", "Account": {"Shopify_Customer_Id__c": "nope"}}))[1] == \
        "Foreign key external ID: nope not found for field Shopify_Customer_Id__c in entity Account"


def test_deleted_records_and_cascade(sb: SalesforceSandbox) -> None:
    acct = create(sb, "Account", {"Name": "a"}).id
    contact = create(sb, "Contact", {"LastName": "c", "AccountId": acct}).id
    assert acct and contact and sb.state.org.delete(acct).success
    assert contact in sb.state.store.table("Contact").deleted  # contacts cascade with their account
    obj = sb.state.schema.objects["Account"]
    result = sb.state.org.update(obj, acct, parse_body(sb.state.schema, obj, {"Name": "z"}))
    assert error(result)[0] == "ENTITY_IS_DELETED"
    assert error(sb.state.org.delete(acct))[0] == "ENTITY_IS_DELETED"


def test_price_book_rules(sb: SalesforceSandbox) -> None:
    std = next(iter(sb.state.store.table("Pricebook2").rows))
    product = create(sb, "Product2", {"Name": "P"}).id
    entry = create(sb, "PricebookEntry", {"Pricebook2Id": std, "Product2Id": product, "UnitPrice": 10})
    assert entry.success
    assert sb.state.store.table("PricebookEntry").rows[str(entry.id)]["Name"] == "P"
    assert error(create(sb, "PricebookEntry", {"Pricebook2Id": std, "Product2Id": product, "UnitPrice": 1}))[0] == \
        "DUPLICATE_VALUE"
    acct = create(sb, "Account", {"Name": "a"}).id
    no_book = create(sb, "Order", {"AccountId": acct, "EffectiveDate": "2024-01-01", "Status": "Draft"}).id
    item = create(sb, "OrderItem", {"OrderId": no_book, "PricebookEntryId": entry.id, "Quantity": 2, "UnitPrice": 5})
    assert error(item)[0] == "FIELD_INTEGRITY_EXCEPTION"
    order = create(sb, "Order", {"AccountId": acct, "EffectiveDate": "2024-01-01", "Status": "Draft",
                                 "Pricebook2Id": std}).id
    item = create(sb, "OrderItem", {"OrderId": order, "PricebookEntryId": entry.id, "Quantity": 2, "UnitPrice": 5})
    row = sb.state.store.table("OrderItem").rows[str(item.id)]
    assert row["TotalPrice"] == 10.0 and row["Product2Id"] == product and row["OrderItemNumber"] == "0000000001"


def test_transaction_rollback_restores_indexes(sb: SalesforceSandbox) -> None:
    store = sb.state.store
    with store.transaction() as sp:
        create(sb, "Account", {"Name": "a", "Shopify_Customer_Id__c": "R1"})
        sp.rollback()
    assert create(sb, "Account", {"Name": "a", "Shopify_Customer_Id__c": "R1"}).success
