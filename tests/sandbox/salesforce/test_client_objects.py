"""Every standard object, upsert paths, describe and validation through the real simple-salesforce client."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from ferry.sandbox.salesforce.ids import normalize_id

from .conftest import Org


def _id_ok(record_id: str, prefix: str) -> None:
    assert len(record_id) == 18 and record_id.startswith(prefix) and normalize_id(record_id) == record_id


def _setup_catalog(sf: Salesforce) -> dict[str, str]:
    """An account, a product with a standard price and an entry in a custom price book."""
    std = sf.query("SELECT Id FROM Pricebook2 WHERE IsStandard = true")["records"][0]["Id"]
    account = sf.Account.create({"Name": "Acme"})["id"]
    product = sf.Product2.create({"Name": "Widget", "ProductCode": "W-1", "IsActive": True})["id"]
    std_entry = sf.PricebookEntry.create({"Pricebook2Id": std, "Product2Id": product, "UnitPrice": 10,
                                          "IsActive": True})["id"]
    return {"std": std, "account": account, "product": product, "std_entry": std_entry}


# (object, key prefix, create body, update body) - bodies may name "{account}" etc. from _setup_catalog
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("Account", "001", {"Name": "A", "Industry": "Retail"}, {"Name": "A2"}),
    ("Contact", "003", {"LastName": "Doe", "FirstName": "Jane", "AccountId": "{account}"}, {"Title": "CTO"}),
    ("Lead", "00Q", {"LastName": "Lee", "Company": "Initech"}, {"Status": "Working - Contacted"}),
    ("Opportunity", "006", {"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2030-01-31",
                            "AccountId": "{account}"}, {"StageName": "Closed Won"}),
    ("Product2", "01t", {"Name": "Gadget"}, {"IsActive": True}),
    ("Pricebook2", "01s", {"Name": "Wholesale", "IsActive": True}, {"Description": "B2B"}),
    ("PricebookEntry", "01u", {"Pricebook2Id": "{std}", "Product2Id": "{product2}", "UnitPrice": 5},
     {"UnitPrice": 6}),
    ("Order", "801", {"AccountId": "{account}", "EffectiveDate": "2030-01-01", "Status": "Draft",
                      "Pricebook2Id": "{std}"}, {"Description": "rush"}),
    ("OrderItem", "802", {"OrderId": "{order}", "PricebookEntryId": "{std_entry}", "Quantity": 2, "UnitPrice": 10},
     {"Quantity": 3}),
    ("OpportunityLineItem", "00k", {"OpportunityId": "{opportunity}", "PricebookEntryId": "{std_entry}",
                                    "Quantity": 1, "UnitPrice": 10}, {"Quantity": 4}),
    ("Case", "500", {"Subject": "Broken", "Origin": "Web", "AccountId": "{account}"}, {"Status": "Closed"}),
    ("User", "005", {"Username": "new.user@example.com", "LastName": "User", "Email": "new.user@example.com",
                     "Alias": "nuser", "TimeZoneSidKey": "GMT", "LocaleSidKey": "en_US",
                     "EmailEncodingKey": "UTF-8", "LanguageLocaleKey": "en_US", "ProfileId": "{profile}"},
     {"Title": "Ops"}),
]


def _fill(body: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    return {k: (refs[v[1:-1]] if isinstance(v, str) and v.startswith("{") else v) for k, v in body.items()}


def test_crud_on_every_standard_object(sf: Salesforce) -> None:
    refs = _setup_catalog(sf)
    refs["product2"] = sf.Product2.create({"Name": "Second"})["id"]
    refs["order"] = sf.Order.create({"AccountId": refs["account"], "EffectiveDate": "2030-01-01",
                                     "Status": "Draft", "Pricebook2Id": refs["std"]})["id"]
    refs["opportunity"] = sf.Opportunity.create({"Name": "O", "StageName": "Qualification",
                                                 "CloseDate": "2030-02-01", "Pricebook2Id": refs["std"]})["id"]
    refs["profile"] = sf.query("SELECT Id FROM Profile WHERE Name = 'Standard User'")["records"][0]["Id"]
    for sobject, prefix, create, update in CASES:
        api = getattr(sf, sobject)
        created = api.create(_fill(create, refs))
        assert created["success"] and created["errors"] == [], sobject
        _id_ok(created["id"], prefix)
        record = api.get(created["id"])
        assert record["attributes"] == {"type": sobject,
                                        "url": f"/services/data/v62.0/sobjects/{sobject}/{created['id']}"}
        assert record["Id"] == created["id"] and record["IsDeleted"] is False
        assert api.update(created["id"], update) == 204, sobject
        changed = api.get(created["id"])
        assert all(changed[k] == v for k, v in update.items()), sobject
        if sobject == "User":
            continue  # users are deactivated, never deleted
        assert api.delete(created["id"]) == 204, sobject
        with pytest.raises(SalesforceResourceNotFound) as exc:
            api.update(created["id"], update)
        assert exc.value.content[0]["errorCode"] == "ENTITY_IS_DELETED", sobject


def test_derived_fields_of_standard_objects(sf: Salesforce) -> None:
    refs = _setup_catalog(sf)
    opp = sf.Opportunity.create({"Name": "Big", "StageName": "Closed Won", "CloseDate": "2030-01-01",
                                 "Amount": 200})["id"]
    keys = ("IsClosed", "IsWon", "Probability", "ForecastCategoryName", "ExpectedRevenue")
    assert {k: sf.Opportunity.get(opp)[k] for k in keys} == {
        "IsClosed": True, "IsWon": True, "Probability": 100, "ForecastCategoryName": "Closed", "ExpectedRevenue": 200}
    sf.Opportunity.update(opp, {"StageName": "Value Proposition"})
    assert {k: sf.Opportunity.get(opp)[k] for k in keys} == {
        "IsClosed": False, "IsWon": False, "Probability": 50, "ForecastCategoryName": "Pipeline",
        "ExpectedRevenue": 100}
    case = sf.Case.get(sf.Case.create({"Subject": "s"})["id"])
    assert (case["Status"], case["Priority"], case["CaseNumber"], case["IsClosed"]) == (
        "New", "Medium", "00001000", False)
    lead = sf.Lead.get(sf.Lead.create({"LastName": "Lee", "FirstName": "Ann", "Company": "X"})["id"])
    assert (lead["Name"], lead["Status"]) == ("Ann Lee", "Open - Not Contacted")
    entry = sf.PricebookEntry.get(refs["std_entry"])
    assert (entry["Name"], entry["ProductCode"]) == ("Widget", "W-1")
    book = sf.Pricebook2.create({"Name": "Custom"})["id"]
    no_std = sf.Product2.create({"Name": "Lonely"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.PricebookEntry.create({"Pricebook2Id": book, "Product2Id": no_std, "UnitPrice": 1})
    assert exc.value.content[0]["errorCode"] == "STANDARD_PRICE_NOT_DEFINED"


@pytest.mark.parametrize(("sobject", "missing"), [
    ("Account", ["Name"]),
    ("Contact", ["LastName"]),
    ("Lead", ["LastName", "Company"]),
    ("Opportunity", ["Name", "StageName", "CloseDate"]),
    ("Order", ["AccountId", "EffectiveDate", "Status"]),
    ("OrderItem", ["OrderId", "PricebookEntryId", "Quantity", "UnitPrice"]),
    ("PricebookEntry", ["Pricebook2Id", "Product2Id", "UnitPrice"]),
    ("User", ["Username", "LastName", "Email", "Alias", "TimeZoneSidKey", "LocaleSidKey", "EmailEncodingKey",
              "ProfileId", "LanguageLocaleKey"]),
])
def test_required_fields_per_object(sf: Salesforce, sobject: str, missing: list[str]) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        getattr(sf, sobject).create({})
    assert exc.value.content == [{"message": f"Required fields are missing: [{', '.join(missing)}]",
                                  "errorCode": "REQUIRED_FIELD_MISSING", "fields": missing}]


def test_fifteen_char_ids_are_accepted_in_urls(sf: Salesforce) -> None:
    rid = sf.Account.create({"Name": "Short"})["id"]
    assert sf.Account.get(rid[:15])["Id"] == rid
    assert sf.Account.update(rid[:15], {"Name": "Shorter"}) == 204
    assert sf.query(f"SELECT Name FROM Account WHERE Id = '{rid[:15]}'")["records"][0]["Name"] == "Shorter"


def test_upsert_paths_and_client_exceptions(org: Org, sf: Salesforce) -> None:
    created = sf.Contact.upsert("Shopify_Customer_Id__c/7", {"LastName": "Seven"}, raw_response=True)
    assert created.status_code == 201
    body = created.json()
    assert body["created"] is True and body["success"] is True and body["errors"] == []
    _id_ok(body["id"], "003")
    updated = sf.Contact.upsert("Shopify_Customer_Id__c/7", {"LastName": "Seven B"}, raw_response=True)
    assert updated.status_code == 200 and updated.json() == {"id": body["id"], "success": True, "errors": [],
                                                             "created": False}
    # Before API 46 an update by upsert answers 204 with no body.
    old = Salesforce(instance_url=org.url, session_id=sf.session_id, version="45.0", session=org.session())
    assert old.Contact.upsert("Shopify_Customer_Id__c/7", {"LastName": "Seven C"}) == 204
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Contact.upsert("No_Such_Field__c/1", {"LastName": "x"})
    assert exc.value.content == [{"message": "Provided external ID field does not exist or is not accessible: "
                                             "No_Such_Field__c", "errorCode": "NOT_FOUND"}]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.upsert("Shopify_Customer_Id__c/8", {"LastName": "x", "Id": body["id"]})
    assert exc.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.upsert("Shopify_Customer_Id__c/8", {"LastName": "x", "Shopify_Customer_Id__c": "9"})
    assert exc.value.content[0]["errorCode"] == "INVALID_FIELD"
    sf.Lead.create({"LastName": "a", "Company": "c", "Email": "dup@example.com"})
    sf.Lead.create({"LastName": "b", "Company": "c", "Email": "dup@example.com"})
    with pytest.raises(SalesforceMoreThanOneRecord) as many:
        sf.Lead.upsert("Email/dup@example.com", {"LastName": "c"})
    assert all(url.startswith("/services/data/v62.0/sobjects/Lead/00Q") for url in many.value.content)
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get_by_custom_id("Shopify_Customer_Id__c", "nope")


def test_relationship_reference_by_external_id_in_payloads(sf: Salesforce) -> None:
    account = sf.Account.create({"Name": "Parent", "Shopify_Customer_Id__c": "42"})["id"]
    opp = sf.Opportunity.create({"Name": "Ref", "StageName": "Prospecting", "CloseDate": "2030-01-01",
                                 "Account": {"Shopify_Customer_Id__c": "42"}})["id"]
    assert sf.Opportunity.get(opp)["AccountId"] == account
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Case.create({"Subject": "x", "Account": {"Name": "Parent"}})
    assert exc.value.content[0]["message"] == (
        "Field name provided, Name is not an External ID or indexed field for Account")


def test_validation_errors_as_the_org_sends_them(sf: Salesforce) -> None:
    refs = _setup_catalog(sf)

    def error(sobject: str, body: dict[str, Any], record_id: str | None = None) -> dict[str, Any]:
        with pytest.raises(SalesforceMalformedRequest) as exc:
            api = getattr(sf, sobject)
            api.update(record_id, body) if record_id else api.create(body)
        content: dict[str, Any] = exc.value.content[0]
        return content

    assert error("Lead", {"LastName": "x", "Company": "c" * 256}) == {
        "message": f"Company: data value too large: {'c' * 256} (max length=255)", "errorCode": "STRING_TOO_LONG",
        "fields": ["Company"]}
    assert error("Opportunity", {"Name": "o", "StageName": "Won!", "CloseDate": "2030-01-01"}) == {
        "message": "Stage: bad value for restricted picklist field: Won!",
        "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["StageName"]}
    # A value the JSON deserializer cannot read fails the request before validation, as in the org.
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Opportunity.create({"Name": "o", "StageName": "Prospecting", "CloseDate": "soon"})
    assert exc.value.content == [{
        "message": "Cannot deserialize instance of date from VALUE_STRING value soon or request may be missing a "
                   "required field at [line:1, column:62]", "errorCode": "JSON_PARSER_ERROR"}]
    for sobject, body, type_name in (("Account", {"Name": "a", "NumberOfEmployees": "many"}, "int"),
                                     ("Opportunity", {"Amount": True}, "double"),
                                     ("Contact", {"LastName": "x", "Birthdate": "2024-01-01T10:00:00Z"}, "date"),
                                     ("Contact", {"LastName": "x", "DoNotCall": "yes"}, "boolean"),
                                     ("Order", {"Shopify_Cancelled_At__c": "2024-07-30 20:54:16"}, "datetime"),
                                     ("Account", {"Name": {"nested": 1}}, "string")):
        with pytest.raises(SalesforceMalformedRequest) as exc:
            getattr(sf, sobject).create(body)
        assert exc.value.content[0]["errorCode"] == "JSON_PARSER_ERROR", body
        assert exc.value.content[0]["message"].startswith(f"Cannot deserialize instance of {type_name} from "), body
    # Values that deserialize are coerced as the org does: numeric strings, "true", an int for a double.
    coerced = sf.Account.get(sf.Account.create({"Name": "c", "NumberOfEmployees": "12", "AnnualRevenue": 5})["id"])
    assert (coerced["NumberOfEmployees"], coerced["AnnualRevenue"]) == (12, 5.0)
    first = sf.Contact.create({"LastName": "a", "Shopify_Customer_Id__c": "E1"})["id"]
    assert error("Contact", {"LastName": "b", "Shopify_Customer_Id__c": "E1"}) == {
        "message": f"duplicate value found: Shopify_Customer_Id__c duplicates value on record with id: {first}",
        "errorCode": "DUPLICATE_VALUE", "fields": []}
    assert error("Case", {"Subject": "s", "AccountId": "001000000000999AAA"})["errorCode"] == \
        "INVALID_CROSS_REFERENCE_KEY"
    assert error("Case", {"Subject": "s", "AccountId": "garbage"}) == {
        "message": "Account ID: id value of incorrect type: garbage", "errorCode": "MALFORMED_ID",
        "fields": ["AccountId"]}
    gone = sf.Account.create({"Name": "gone"})["id"]
    sf.Account.delete(gone)
    assert error("Case", {"Subject": "s", "AccountId": gone})["errorCode"] == "ENTITY_IS_DELETED"
    assert error("Account", {"Name": "x", "Bogus__c": 1}) == {
        "message": "No such column 'Bogus__c' on sobject of type Account", "errorCode": "INVALID_FIELD",
        "fields": []}
    order = sf.Order.create({"AccountId": refs["account"], "EffectiveDate": "2030-01-01", "Status": "Draft",
                             "Pricebook2Id": refs["std"]})["id"]
    other = sf.Order.create({"AccountId": refs["account"], "EffectiveDate": "2030-01-01", "Status": "Draft",
                             "Pricebook2Id": refs["std"]})["id"]
    item = sf.OrderItem.create({"OrderId": order, "PricebookEntryId": refs["std_entry"], "Quantity": 1,
                                "UnitPrice": 10})["id"]
    assert error("OrderItem", {"OrderId": other}, item) == {
        "message": "Unable to create/update fields: OrderId. Please check the security settings of this field and "
                   "verify that it is read/write for your profile or permission set.",
        "errorCode": "INVALID_FIELD_FOR_INSERT_UPDATE", "fields": ["OrderId"]}
    assert error("Account", {"Name": "x", "CreatedDate": "2024-01-01T00:00:00Z"})["errorCode"] == \
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("sobjects/Account", method="POST", data="{not json")
    assert exc.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_type_errors_in_bulk_rows_are_per_record(sf: Salesforce) -> None:
    records = [{"Name": "ok", "NumberOfEmployees": "3"}, {"Name": "bad", "NumberOfEmployees": "many"}]
    (result,) = sf.bulk2.Account.insert(records=records, wait=0.1)
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (2, 1)
    failed = sf.bulk2.Account.get_failed_records(result["job_id"])
    assert "INVALID_TYPE_ON_FIELD_IN_RECORD:Employees: value not of required type: many:NumberOfEmployees --" \
        in failed


def test_describe_shapes_of_the_standard_objects(sf: Salesforce) -> None:
    summary = {o["name"]: o for o in sf.describe()["sobjects"]}
    expected = {"Account": "001", "Contact": "003", "Lead": "00Q", "Opportunity": "006",
                "OpportunityLineItem": "00k", "Product2": "01t", "Pricebook2": "01s", "PricebookEntry": "01u",
                "Order": "801", "OrderItem": "802", "Case": "500", "User": "005", "Profile": "00e"}
    assert {name: summary[name]["keyPrefix"] for name in expected} == expected
    assert summary["Account"]["urls"]["sobject"] == "/services/data/v62.0/sobjects/Account"
    account = sf.Account.describe()
    assert account["sobjectDescribeOption"] == "FULL" and account["urls"]["rowTemplate"].endswith("/Account/{ID}")
    children = {(c["childSObject"], c["field"]): c for c in account["childRelationships"]}
    assert children[("Contact", "AccountId")]["relationshipName"] == "Contacts"
    assert children[("Contact", "AccountId")]["cascadeDelete"] is True
    assert children[("Opportunity", "AccountId")]["relationshipName"] == "Opportunities"
    assert children[("Case", "AccountId")]["relationshipName"] == "Cases"
    assert children[("Account", "ParentId")]["relationshipName"] == "ChildAccounts"
    assert {c["relationshipName"] for c in sf.Order.describe()["childRelationships"]} == {"OrderItems"}
    lead = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert (lead["Company"]["type"], lead["Company"]["length"], lead["Company"]["byteLength"],
            lead["Company"]["nillable"]) == ("string", 255, 765, False)
    status = lead["Status"]
    assert status["defaultedOnCreate"] and status["nillable"] is False and status["defaultValue"] is None
    assert status["picklistValues"][0] == {"active": True, "defaultValue": True, "label": "Open - Not Contacted",
                                           "validFor": None, "value": "Open - Not Contacted"}
    case = {f["name"]: f for f in sf.Case.describe()["fields"]}
    assert [p["value"] for p in case["Origin"]["picklistValues"]] == ["Phone", "Email", "Web"]
    assert [p["value"] for p in case["Priority"]["picklistValues"] if p["defaultValue"]] == ["Medium"]
    assert case["CaseNumber"]["autoNumber"] and not case["CaseNumber"]["createable"]
    item = {f["name"]: f for f in sf.OrderItem.describe()["fields"]}
    assert (item["OrderId"]["createable"], item["OrderId"]["updateable"]) == (True, False)
    assert item["OrderId"]["referenceTo"] == ["Order"] and item["OrderId"]["relationshipName"] == "Order"
    assert item["TotalPrice"]["calculated"] and item["TotalPrice"]["type"] == "currency"
    opp = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    assert opp["StageName"]["restrictedPicklist"] and opp["CloseDate"]["type"] == "date"
    user = {f["name"]: f for f in sf.User.describe()["fields"]}
    assert user["Username"]["unique"] and user["Username"]["idLookup"] and user["Email"]["length"] == 128
    assert user["ProfileId"]["referenceTo"] == ["Profile"]
    ident = {f["name"]: f for f in sf.Contact.describe()["fields"]}["Id"]
    assert (ident["type"], ident["length"], ident["byteLength"], ident["idLookup"], ident["createable"],
            ident["label"], ident["soapType"]) == ("id", 18, 18, True, False, "Contact ID", "tns:ID")


def test_get_updated_and_get_deleted_for_replication(sf: Salesforce) -> None:
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=5)
    kept = sf.Contact.create({"LastName": "Kept"})["id"]
    gone = sf.Contact.create({"LastName": "Gone"})["id"]
    sf.Contact.delete(gone)
    updated = sf.Contact.updated(start, end)
    assert updated["ids"] == [kept] and updated["latestDateCovered"].endswith("+0000")
    deleted = sf.Contact.deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [gone]
    assert deleted["deletedRecords"][0]["deletedDate"] >= deleted["earliestDateAvailable"]
    assert sf.Contact.updated(start - dt.timedelta(days=1), start)["ids"] == []
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.updated(now - dt.timedelta(days=31), now)
    assert exc.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    with pytest.raises(SalesforceMalformedRequest):
        sf.Contact.deleted(end, start)
