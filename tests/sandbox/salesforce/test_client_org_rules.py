"""An org's configured rules (validation rules, record types, duplicate rules, master-detail, required lookups)
declared in a --schema file, exercised through simple-salesforce against the running sandbox."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from ferry.sandbox.salesforce.ids import to18
from ferry.sandbox.salesforce.schema import SchemaError, load_schema
from tests.sandbox.salesforce.conftest import Org, start_org

SCHEMA = """
objects:
  Contact:
    fields:
      - {name: Tier__c, type: picklist, restricted: true, picklist: [Gold, Silver, Bronze]}
      - {name: Code__c, type: string, length: 20}
    validationRules:
      - name: Email_Or_Phone
        formula: AND(ISBLANK(Email), ISBLANK(Phone))
        message: A contact needs an email or a phone
      - name: Code_Format
        formula: NOT(ISBLANK(Code__c)) && NOT(REGEX(Code__c, "[A-Z]{3}-[0-9]{4}"))
        message: Code must look like ABC-1234
        errorField: Code__c
      - name: Gold_Keeps_Name
        formula: ISCHANGED(LastName) && ISPICKVAL(Tier__c, "Gold")
        message: Gold contacts keep their last name
    recordTypes:
      - {developerName: Partner, name: Partner Contact, default: true, picklists: {Tier__c: [Gold, Silver]}}
      - {developerName: Retail, picklists: {Tier__c: [Bronze]}}
    duplicateRules:
      - {name: Standard_Contact_Duplicate_Rule, matchRule: Standard_Contact_Match_Rule_v1_1, matchFields: [Email],
         action: allow}
  Account:
    duplicateRules:
      - {name: Account_Name_City, matchFields: [Name, BillingCity], action: block, message: This account exists}
    validationRules:
      - name: Employees_Positive
        formula: NumberOfEmployees < 0
        message: Employees cannot be negative
        errorField: NumberOfEmployees
  Shipment__c:
    fields:
      - {name: Account__c, type: reference, referenceTo: [Account], nillable: false}
  Shipment_Line__c:
    fields:
      - {name: Shipment__c, type: reference, referenceTo: [Shipment__c], masterDetail: true}
"""
ALERT_BODY_MESSAGE = "Use one of these records?"


@pytest.fixture(scope="module")
def rules_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    tmp = tmp_path_factory.mktemp("sf_rules")
    path = tmp / "rules.yaml"
    path.write_text(SCHEMA)
    yield from start_org(tmp, extra_schema=path)


@pytest.fixture
def sf(rules_org: Org) -> Salesforce:
    rules_org.admin("reset", "POST")
    return rules_org.client()


def _error(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    body = exc.value.content
    assert isinstance(body, list) and len(body) == 1
    return dict(body[0])


def test_validation_rules_fail_with_the_rules_message_and_field(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Nobody"})
    assert _error(exc) == {"message": "A contact needs an email or a phone",
                           "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": []}
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Coded", "Phone": "1", "Code__c": "abc-12"})
    assert _error(exc) == {"message": "Code must look like ABC-1234",
                           "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": ["Code__c"]}
    ok = sf.Contact.create({"LastName": "Gold", "Phone": "1", "Code__c": "ABC-1234", "Tier__c": "Gold"})["id"]
    assert sf.Contact.update(ok, {"Title": "VP"}) == 204  # ISCHANGED(LastName) is false
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.update(ok, {"LastName": "Renamed"})
    assert _error(exc)["message"] == "Gold contacts keep their last name"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.create({"Name": "Neg", "NumberOfEmployees": -1})
    assert _error(exc)["fields"] == ["NumberOfEmployees"]
    assert sf.Account.create({"Name": "Blank employees"})["success"]  # a blank is not < 0


def test_validation_rules_in_collections_are_per_record(sf: Salesforce) -> None:
    results = sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Contact"}, "LastName": "A", "Email": "a@example.com"},
        {"attributes": {"type": "Contact"}, "LastName": "B"}]})
    assert results[0]["success"] is True
    assert results[1] == {"id": None, "success": False, "errors": [
        {"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "A contact needs an email or a phone",
         "fields": []}]}


def test_record_types_default_and_restrict_picklists(sf: Salesforce) -> None:
    infos = sf.Contact.describe()["recordTypeInfos"]
    by_name = {i["developerName"]: i for i in infos}
    assert list(by_name) == ["Partner", "Retail", "Master"]
    assert by_name["Partner"]["defaultRecordTypeMapping"] is True and by_name["Master"]["master"] is True
    partner, retail = by_name["Partner"]["recordTypeId"], by_name["Retail"]["recordTypeId"]
    assert partner.startswith("012") and len(partner) == 18
    created = sf.Contact.create({"LastName": "Typed", "Phone": "1", "Tier__c": "Silver"})["id"]
    assert sf.Contact.get(created)["RecordTypeId"] == partner
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Wrong tier", "Phone": "1", "Tier__c": "Bronze"})
    assert _error(exc) == {"message": "Tier: bad value for restricted picklist field: Bronze",
                           "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["Tier__c"]}
    bronze = sf.Contact.create({"LastName": "Retail", "Phone": "1", "Tier__c": "Bronze", "RecordTypeId": retail})
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.update(bronze["id"], {"RecordTypeId": partner})  # the kept value no longer fits
    assert _error(exc)["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    unknown = to18("012500000009999")
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Bad type", "Phone": "1", "RecordTypeId": unknown})
    assert _error(exc) == {"message": f"Record Type ID: this ID value isn't valid for the user: {unknown}",
                           "errorCode": "INVALID_CROSS_REFERENCE_KEY", "fields": ["RecordTypeId"]}
    rows = sf.query(f"SELECT Id FROM Contact WHERE RecordTypeId = '{retail}'")["records"]
    assert [r["Id"] for r in rows] == [bronze["id"]]


def test_duplicate_rule_alert_blocks_the_api_unless_allow_save(sf: Salesforce) -> None:
    first = sf.Contact.create({"LastName": "Dup", "Email": "dup@example.com"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Dup again", "Email": "DUP@example.com"})
    assert exc.value.content == [{
        "duplicateResult": {
            "allowSave": True, "duplicateRule": "Standard_Contact_Duplicate_Rule",
            "duplicateRuleEntityType": "Contact", "errorMessage": ALERT_BODY_MESSAGE,
            "matchResults": [{
                "entityType": "Contact", "errors": [], "matchEngine": "ExactMatchEngine",
                "matchRecords": [{"additionalInformation": [], "fieldDiffs": [], "matchConfidence": 100.0,
                                  "record": {"attributes": {"type": "Contact",
                                                            "url": f"/services/data/v62.0/sobjects/Contact/{first}"},
                                             "Id": first}}],
                "rule": "Standard_Contact_Match_Rule_v1_1", "size": 1, "success": True}]},
        "errorCode": "DUPLICATES_DETECTED", "message": ALERT_BODY_MESSAGE}]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Details", "Email": "dup@example.com"},
                          headers={"Sforce-Duplicate-Rule-Header": "allowSave=false; includeRecordDetails=true"})
    match = _error(exc)["duplicateResult"]["matchResults"][0]["matchRecords"][0]["record"]
    assert (match["Id"], match["LastName"], match["Email"]) == (first, "Dup", "dup@example.com")
    # The guide's spelling of the header: options separated by semicolons.
    allowed = sf.Contact.create({"LastName": "Dup saved", "Email": "dup@example.com"}, headers={
        "Sforce-Duplicate-Rule-Header": "allowSave=true; includeRecordDetails=false; runAsCurrentUser=true"})
    assert allowed["success"] is True
    results = sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Contact"}, "LastName": "In collection", "Email": "dup@example.com"}]})
    assert results[0]["errors"] == [{"statusCode": "DUPLICATES_DETECTED", "message": ALERT_BODY_MESSAGE,
                                     "fields": []}]
    composite = sf.restful("composite", method="POST", json={"compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "c",
         "httpHeaders": {"Sforce-Duplicate-Rule-Header": "allowSave=true"},
         "body": {"LastName": "Via composite", "Email": "dup@example.com"}}]})
    assert composite["compositeResponse"][0]["httpStatusCode"] == 201


def test_blocking_duplicate_rule_ignores_the_header(sf: Salesforce) -> None:
    sf.Account.create({"Name": "Acme", "BillingCity": "Paris"})
    assert sf.Account.create({"Name": "Acme", "BillingCity": "Lyon"})["success"]  # not every field matches
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.create({"Name": "acme", "BillingCity": "Paris"},
                          headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"})
    body = _error(exc)
    assert body["errorCode"] == "DUPLICATES_DETECTED" and body["message"] == "This account exists"
    assert body["duplicateResult"]["allowSave"] is False


def test_required_lookup_and_references_to_missing_or_deleted_records(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Shipment__c.create({"Name": "S"})
    assert _error(exc) == {"message": "Required fields are missing: [Account__c]",
                           "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Account__c"]}
    gone = sf.Account.create({"Name": "Gone"})["id"]
    sf.Account.delete(gone)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Shipment__c.create({"Name": "S", "Account__c": gone})
    assert _error(exc) == {"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}
    never = to18("001000000009999")
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Shipment__c.create({"Name": "S", "Account__c": never})
    assert _error(exc) == {"message": "invalid cross reference id", "errorCode": "INVALID_CROSS_REFERENCE_KEY",
                           "fields": []}
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Account.update(gone, {"Name": "again"})
    assert _error(exc) == {"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Account.delete(gone)
    assert _error(exc)["errorCode"] == "ENTITY_IS_DELETED"


def test_master_detail_is_required_not_reparentable_and_cascades(sf: Salesforce) -> None:
    field = next(f for f in sf.Shipment_Line__c.describe()["fields"] if f["name"] == "Shipment__c")
    assert (field["nillable"], field["updateable"], field["cascadeDelete"], field["relationshipOrder"]) == \
        (False, False, True, 0)
    acct = sf.Account.create({"Name": "Master"})["id"]
    ship, other = (sf.Shipment__c.create({"Name": n, "Account__c": acct})["id"] for n in ("S1", "S2"))
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Shipment_Line__c.create({"Name": "orphan"})
    assert _error(exc)["errorCode"] == "REQUIRED_FIELD_MISSING"
    line = sf.Shipment_Line__c.create({"Name": "L1", "Shipment__c": ship})["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Shipment_Line__c.update(line, {"Shipment__c": other})
    assert _error(exc)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    sf.Shipment__c.delete(ship)
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Shipment_Line__c.get(line)
    assert _error(exc)["errorCode"] == "ENTITY_IS_DELETED"
    rows = sf.query_all("SELECT Id, IsDeleted FROM Shipment_Line__c", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(line, True)]


@pytest.mark.parametrize(("spec", "message"), [
    ("validationRules: [{name: R, formula: 'FOO(Name)', message: m}]", "unsupported function FOO"),
    ("validationRules: [{name: R, formula: 'ISBLANK(Nope__c)', message: m}]", "unknown field Nope__c"),
    ("validationRules: [{name: R, formula: 'Owner.Name = \"x\"', message: m}]",
     "cross-object reference Owner.Name is not supported"),
    ("recordTypes: [{developerName: X, picklists: {Industry: [NotAValue]}}]", "must be a list of its picklist"),
    ("duplicateRules: [{name: D, matchFields: [Nope]}]", "matchFields must be fields of the object"),
])
def test_rule_declarations_are_checked_at_load(tmp_path: Path, spec: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"objects:\n  Account:\n    {spec}\n")
    with pytest.raises(SchemaError) as exc:
        load_schema(path)
    assert str(exc.value).startswith(f"{path}: objects.Account.") and message in str(exc.value)


def test_bulk_ingest_reports_rule_failures_per_row(sf: Salesforce) -> None:
    sf.Contact.create({"LastName": "Existing", "Email": "taken@example.com"})
    records = [{"LastName": "Fine", "Email": "fine@example.com"}, {"LastName": "No contact data"},
               {"LastName": "Dup", "Email": "taken@example.com"}]
    (result,) = sf.bulk2.Contact.insert(records=records, wait=0.1)
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (3, 2)
    failed = list(csv.DictReader(io.StringIO(sf.bulk2.Contact.get_failed_records(result["job_id"]))))
    errors = {r["LastName"]: r["sf__Error"] for r in failed}
    assert errors == {"No contact data": "FIELD_CUSTOM_VALIDATION_EXCEPTION:A contact needs an email or a phone: --",
                      "Dup": "DUPLICATES_DETECTED:Use one of these records?: --"}
