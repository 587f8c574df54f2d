"""sObject Collections and Composite semantics through simple-salesforce's restful()."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "message": "Record rolled back because not all records were valid and the request was using "
                          "AllOrNone header", "fields": []}
HALTED = [{"errorCode": "PROCESSING_HALTED",
           "message": "The transaction was rolled back since another operation in the same transaction failed."}]


def _acct(name: str, **extra: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Account"}, "Name": name, **extra}


def test_collections_create_partial_success_and_all_or_none_rollback(sf: Salesforce) -> None:
    partial = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        _acct("ok"), {"attributes": {"type": "Lead"}, "LastName": "NoCompany"}, _acct("ok2")]})
    assert [r["success"] for r in partial] == [True, False, True]
    assert partial[1] == {"id": None, "success": False, "errors": [{
        "statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]",
        "fields": ["Company"]}]}
    before = sf.query("SELECT COUNT() FROM Account")["totalSize"]
    rolled = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": [
        _acct("a"), _acct("b", Site="s" * 81), _acct("c")]})
    assert [r["errors"][0]["statusCode"] for r in rolled] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "STRING_TOO_LONG", "ALL_OR_NONE_OPERATION_ROLLED_BACK"]
    assert rolled[0]["errors"] == [ROLLED_BACK] and rolled[0]["success"] is False
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == before
    # A value that cannot be deserialized fails the whole list before any record is saved.
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
            _acct("first"), _acct("second", NumberOfEmployees="lots")]})
    assert exc.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == before


def test_collections_update_delete_retrieve_errors(sf: Salesforce) -> None:
    ids = [r["id"] for r in sf.restful("composite/sobjects", method="POST",
                                       json={"records": [_acct("x"), _acct("y")]})]
    sf.Account.delete(ids[1])
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Account"}, "id": ids[0], "Name": "x2"},
        {"attributes": {"type": "Account"}, "id": ids[1], "Name": "y2"},
        {"attributes": {"type": "Account"}, "id": "003000000000001AAA", "Name": "z"}]})
    assert updated[0] == {"id": ids[0], "success": True, "errors": []}
    assert updated[1]["errors"] == [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}]
    assert updated[2]["errors"][0]["statusCode"] == "MALFORMED_ID"
    other = sf.Account.create({"Name": "other"})["id"]
    with_rollback = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Account"}, "id": ids[0], "Name": "rolled back"},
        {"attributes": {"type": "Account"}, "id": other, "Name": "n" * 256}]})
    assert with_rollback[0] == {"id": ids[0], "success": False, "errors": [ROLLED_BACK]}
    assert sf.Account.get(ids[0])["Name"] == "x2"
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": f"{ids[0]},{ids[1]},garbage"})
    assert deleted[0] == {"id": ids[0], "success": True, "errors": []}
    assert deleted[1]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert deleted[2]["errors"][0] == {"statusCode": "MALFORMED_ID", "message": "malformed id garbage", "fields": []}
    live = sf.Account.create({"Name": "live"})["id"]
    got = sf.restful("composite/sobjects/Account", method="POST", json={"ids": [live, ids[0]], "fields": ["Name"]})
    assert got[0]["Name"] == "live" and list(got[0]) == ["attributes", "Name"] and got[1] is None


def test_collections_upsert_created_flags_and_duplicate_keys(sf: Salesforce) -> None:
    sf.Account.upsert("Shopify_Customer_Id__c/k1", {"Name": "old"})
    results = sf.restful("composite/sobjects/Account/Shopify_Customer_Id__c", method="PATCH", json={
        "allOrNone": False, "records": [_acct("one", Shopify_Customer_Id__c="k1"),
                                        _acct("two", Shopify_Customer_Id__c="k2"),
                                        _acct("dup", Shopify_Customer_Id__c="k3"),
                                        _acct("dup", Shopify_Customer_Id__c="K3")]})
    assert [(r["success"], r["created"]) for r in results] == [(True, False), (True, True), (False, False),
                                                               (False, False)]
    assert results[2]["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.restful("composite/sobjects/Account/Name", method="PATCH", json={"records": [_acct("n")]})
    assert exc.value.content[0]["errorCode"] == "NOT_FOUND"


def test_composite_references_records_index_and_halting(sf: Salesforce) -> None:
    sf.Account.create({"Name": "Existing", "Shopify_Customer_Id__c": "ex"})
    body = {"allOrNone": False, "compositeRequest": [
        {"method": "GET", "referenceId": "q",
         "url": "/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account+WHERE+Shopify_Customer_Id__c='ex'"},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "c",
         "body": {"LastName": "Child", "AccountId": "@{q.records[0].Id}"}},
        {"method": "GET", "url": "/services/data/v62.0/sobjects/Contact/@{c.id}?fields=AccountId,LastName",
         "referenceId": "get"},
        {"method": "PATCH", "url": "/services/data/v62.0/sobjects/Contact/@{c.id}", "referenceId": "upd",
         "body": {"Title": "@{q.records[0].Name}"}},
        {"method": "GET", "url": "/services/data/v62.0/sobjects/Contact/@{missing.id}", "referenceId": "bad"},
    ]}
    out = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert [r["httpStatusCode"] for r in out] == [200, 201, 200, 204, 400]
    account_id = out[0]["body"]["records"][0]["Id"]
    assert out[1]["httpHeaders"] == {"Location": f"/services/data/v62.0/sobjects/Contact/{out[1]['body']['id']}"}
    assert out[2]["body"]["AccountId"] == account_id and out[3]["body"] is None
    assert out[4]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert "No value for missing.id found in missing" in out[4]["body"][0]["message"]
    assert sf.Contact.get(out[1]["body"]["id"])["Title"] == "Existing"
    halted = sf.restful("composite", method="POST", json={"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "a", "body": {"Name": "A"}},
        {"method": "POST", "url": "/services/data/v62.0/composite/sobjects", "referenceId": "coll",
         "body": {"allOrNone": False, "records": [_acct("in collection")]}},
        {"method": "PATCH", "url": "/services/data/v62.0/sobjects/Account/@{a.id}", "referenceId": "bad",
         "body": {"Name": None}},
    ]})["compositeResponse"]
    assert [r["httpStatusCode"] for r in halted] == [400, 400, 400]
    assert halted[0]["body"] == HALTED and halted[1]["body"] == HALTED
    assert halted[2]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.query("SELECT COUNT() FROM Account WHERE Name IN ('A', 'in collection')")["totalSize"] == 0


def test_composite_reference_spelled_with_a_json_escape_is_resolved(sf: Salesforce) -> None:
    # "\u0040{a.id}" is "@{a.id}" once parsed: a request whose text has no "@{" is still searched for
    # references when it holds an escape (the sandbox skips the search only when no reference can be spelled).
    raw = ('{"allOrNone": false, "compositeRequest": ['
           '{"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "a", '
           '"body": {"Name": "Escaped"}}, '
           '{"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "c", '
           '"body": {"LastName": "Kid", "AccountId": "\\u0040{a.id}"}}]}')
    assert "@{" not in raw
    out = sf.restful("composite", method="POST", data=raw)["compositeResponse"]
    assert [r["httpStatusCode"] for r in out] == [201, 201]
    assert sf.Contact.get(out[1]["body"]["id"])["AccountId"] == out[0]["body"]["id"]


def test_composite_limits(sf: Salesforce) -> None:
    too_many = [{"method": "GET", "url": "/services/data/v62.0/limits", "referenceId": f"r{i}"} for i in range(26)]
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite", method="POST", json={"compositeRequest": too_many})
    queries = [{"method": "GET", "url": "/services/data/v62.0/query?q=SELECT+Id+FROM+Account", "referenceId": f"q{i}"}
               for i in range(6)]
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite", method="POST", json={"compositeRequest": queries})
    ok = sf.restful("composite", method="POST", json={"compositeRequest": too_many[:25]})["compositeResponse"]
    assert len(ok) == 25 and all(r["httpStatusCode"] == 200 for r in ok)


def test_composite_batch_runs_independent_subrequests_and_halts_on_error(sf: Salesforce) -> None:
    account = sf.Account.create({"Name": "Batch"})["id"]
    subrequests = [
        {"method": "PATCH", "url": f"v62.0/sobjects/Account/{account}", "richInput": {"Industry": "Apparel"}},
        {"method": "GET", "url": "v62.0/sobjects/Account/001000000000000AAA"},
        {"method": "GET", "url": f"v62.0/sobjects/Account/{account}?fields=Industry"},
    ]
    independent = sf.restful("composite/batch", method="POST", json={"batchRequests": subrequests})
    assert independent["hasErrors"] is True
    assert [r["statusCode"] for r in independent["results"]] == [204, 404, 200]
    assert independent["results"][1]["result"][0]["errorCode"] == "NOT_FOUND"
    assert independent["results"][2]["result"]["Industry"] == "Apparel"  # not transactional: the update stays
    halted = sf.restful("composite/batch", method="POST", json={"haltOnError": True, "batchRequests": subrequests})
    assert [r["statusCode"] for r in halted["results"]] == [204, 404, 412]
    # the documented 412 and BATCH_PROCESSING_HALTED (the message text is the sandbox's)
    assert halted["hasErrors"] is True and halted["results"][2]["result"][0]["errorCode"] == "BATCH_PROCESSING_HALTED"
