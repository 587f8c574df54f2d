"""REST, Collections, Composite and query through the real simple-salesforce client."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from .conftest import Org


def test_versions_list_needs_no_auth(org: Org) -> None:
    versions = org.session().get(f"{org.url}/services/data/").json()
    assert {"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"} in versions


def test_crud(sf: Salesforce) -> None:
    created = sf.Account.create({"Name": "Acme", "BillingCity": "Berlin"})
    assert created["success"] is True and created["errors"] == [] and created["id"].startswith("001")
    record = sf.Account.get(created["id"])
    assert record["attributes"]["type"] == "Account" and record["Name"] == "Acme" and record["IsDeleted"] is False
    assert sf.Account.update(created["id"], {"Name": "Acme GmbH"}) == 204
    assert sf.Account.get(created["id"])["Name"] == "Acme GmbH"
    assert sf.Account.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Account.get(created["id"])
    assert exc.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_unknown_id_and_object(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Account.get("001000000000999AAA")
    assert exc.value.content == [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Nonexistent__c.describe()


def test_validation_errors_are_400s(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"FirstName": "x"})
    assert exc.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "x", "Bogus": 1})
    assert exc.value.content[0] == {"message": "No such column 'Bogus' on sobject of type Contact",
                                    "errorCode": "INVALID_FIELD", "fields": []}


def test_upsert_by_external_id_then_relationship(sf: Salesforce) -> None:
    assert sf.Account.upsert("Shopify_Customer_Id__c/42", {"Name": "Jane"}) == 201
    raw = sf.Account.upsert("Shopify_Customer_Id__c/42", {"Name": "Jane D."}, raw_response=True)
    assert raw.status_code == 200 and raw.json()["created"] is False
    account = sf.Account.get_by_custom_id("Shopify_Customer_Id__c", "42")
    assert account["Name"] == "Jane D."
    assert sf.Contact.upsert("Shopify_Customer_Id__c/42", {"LastName": "Doe",
                                                           "Account": {"Shopify_Customer_Id__c": "42"}}) == 201
    contact = sf.Contact.get_by_custom_id("Shopify_Customer_Id__c", "42")
    assert contact["AccountId"] == account["Id"] and contact["Name"] == "Doe"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "x", "Account": {"Shopify_Customer_Id__c": "123"}})
    assert exc.value.content[0]["message"] == (
        "Foreign key external ID: 123 not found for field Shopify_Customer_Id__c in entity Account")
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.upsert("Name/x", {"Name": "x"})


def test_upsert_on_non_unique_key_answers_300(sf: Salesforce) -> None:
    sf.Contact.create({"LastName": "a", "Email": "same@example.com"})
    sf.Contact.create({"LastName": "b", "Email": "same@example.com"})
    with pytest.raises(SalesforceMoreThanOneRecord) as exc:
        sf.Contact.upsert("Email/same@example.com", {"LastName": "c"})
    assert len(exc.value.content) == 2


def test_collections_upsert_in_input_order_with_per_record_errors(sf: Salesforce) -> None:
    sf.Contact.upsert("Shopify_Customer_Id__c/c2", {"LastName": "Old"})
    records = [
        {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": "c1", "LastName": "One"},
        {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": "c2", "LastName": "Two"},
        {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": "c3", "Email": "bad"},
    ]
    results = sf.restful("composite/sobjects/Contact/Shopify_Customer_Id__c", method="PATCH",
                         json={"allOrNone": False, "records": records})
    assert [r["success"] for r in results] == [True, True, False]
    assert [r["created"] for r in results] == [True, False, False]
    assert results[2]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert results[2]["errors"][0]["fields"] == ["Email"]
    all_or_none = sf.restful("composite/sobjects/Contact/Shopify_Customer_Id__c", method="PATCH",
                             json={"allOrNone": True, "records": [
                                 {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": "c9", "LastName": "x"},
                                 {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": "c10"}]})
    assert all_or_none[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert sf.query("SELECT COUNT() FROM Contact WHERE Shopify_Customer_Id__c = 'c9'")["totalSize"] == 0


def test_collections_create_update_retrieve_delete(sf: Salesforce) -> None:
    created = sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Account"}, "Name": "A"}, {"attributes": {"type": "Contact"}, "LastName": "C"}]})
    ids = [r["id"] for r in created]
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Account"}, "id": ids[0], "Name": "A2"}]})
    assert updated[0]["success"]
    got = sf.restful("composite/sobjects/Account", params={"ids": f"{ids[0]},001000000000999AAA",
                                                           "fields": "Id,Name"})
    assert got[0]["Name"] == "A2" and got[1] is None
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids)})
    assert all(r["success"] for r in deleted)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="POST",
                   json={"records": [{"attributes": {"type": "Account"}, "Name": str(i)} for i in range(201)]})
    assert exc.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_composite_references_and_all_or_none(sf: Salesforce) -> None:
    body = {"allOrNone": False, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "acct",
         "body": {"Name": "Composite"}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "ct",
         "body": {"LastName": "Ref", "AccountId": "@{acct.id}"}},
        {"method": "GET", "url": "/services/data/v62.0/query/?q=SELECT+Id+FROM+Contact+WHERE+AccountId='@{acct.id}'",
         "referenceId": "q"},
        {"method": "PATCH", "url": "/services/data/v62.0/composite/sobjects/Account/Shopify_Customer_Id__c",
         "referenceId": "coll", "body": {"records": [{"attributes": {"type": "Account"},
                                                      "Shopify_Customer_Id__c": "k1", "Name": "K"}]}},
    ]}
    out = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert [r["httpStatusCode"] for r in out] == [201, 201, 200, 200]
    assert out[2]["body"]["records"][0]["Id"] == out[1]["body"]["id"]
    assert out[3]["body"][0]["created"] is True
    failing = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "a", "body": {"Name": "Z"}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "b", "body": {}},
    ]}
    out = sf.restful("composite", method="POST", json=failing)["compositeResponse"]
    assert out[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert out[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.query("SELECT COUNT() FROM Account WHERE Name = 'Z'")["totalSize"] == 0


def test_query_all_iter_pages_over_2000_rows(org: Org, sf: Salesforce) -> None:
    for start in range(0, 2300, 200):
        batch = [{"attributes": {"type": "Account"}, "Shopify_Customer_Id__c": f"p{i}", "Name": f"N{i:05d}"}
                 for i in range(start, min(start + 200, 2300))]
        sf.restful("composite/sobjects/Account/Shopify_Customer_Id__c", method="PATCH", json={"records": batch})
    first = sf.query("SELECT Id, Name FROM Account ORDER BY Name")
    assert first["totalSize"] == 2300 and first["done"] is False and len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/")
    names = [r["Name"] for r in sf.query_all_iter("SELECT Id, Name FROM Account ORDER BY Name")]
    assert names == [f"N{i:05d}" for i in range(2300)]
    small = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=500"})
    assert len(small["records"]) == 500
    assert sf.query("SELECT COUNT() FROM Account") == {"totalSize": 2300, "done": True, "records": []}


def test_bad_soql_is_malformed_request(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FORM Account")
    assert exc.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Nope FROM Account")
    assert exc.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_describe_shapes(sf: Salesforce) -> None:
    desc = sf.Contact.describe()
    assert (desc["name"], desc["keyPrefix"], desc["createable"]) == ("Contact", "003", True)
    fields = {f["name"]: f for f in desc["fields"]}
    assert len(fields["Email"]) == 57
    assert (fields["Email"]["type"], fields["Email"]["length"], fields["Email"]["idLookup"]) == ("email", 80, True)
    assert (fields["LastName"]["nillable"], fields["LastName"]["length"]) == (False, 80)
    ext = fields["Shopify_Customer_Id__c"]
    assert ext["externalId"] and ext["unique"] and ext["custom"] and ext["length"] == 255
    assert fields["AccountId"]["referenceTo"] == ["Account"] and fields["AccountId"]["relationshipName"] == "Account"
    status = {f["name"]: f for f in sf.Order.describe()["fields"]}["Status"]
    assert status["restrictedPicklist"] and [p["value"] for p in status["picklistValues"]] == ["Draft", "Activated"]
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Contact", "Product2", "Pricebook2", "PricebookEntry", "Order", "OrderItem", "User"} <= names


def test_seeded_standard_price_book_and_user(sf: Salesforce) -> None:
    books = sf.query("SELECT Id, Name FROM Pricebook2 WHERE IsStandard = true")["records"]
    assert [b["Name"] for b in books] == ["Standard Price Book"]
    users = sf.query("SELECT Username FROM User")["records"]
    assert users[0]["Username"] == "integration@ferry.sandbox"
