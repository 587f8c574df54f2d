"""Bulk API 2.0 through simple-salesforce's bulk2 handler, plus the raw lifecycle rules."""

from __future__ import annotations

import csv
import io
import time

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceOperationError

from .conftest import Org


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_bulk_insert_with_successful_and_failed_results(sf: Salesforce) -> None:
    records = [{"Name": f"Bulk {i}", "Shopify_Customer_Id__c": f"b{i}"} for i in range(1200)]
    records.append({"Name": "", "Shopify_Customer_Id__c": "missing-name"})
    (result,) = sf.bulk2.Account.insert(records=records, wait=0.1)
    assert result["numberRecordsProcessed"] == 1201 and result["numberRecordsFailed"] == 1
    ok = rows(sf.bulk2.Account.get_successful_records(result["job_id"]))
    assert len(ok) == 1200 and ok[0]["sf__Created"] == "true" and ok[0]["sf__Id"].startswith("001")
    assert {"sf__Id", "sf__Created", "Name", "Shopify_Customer_Id__c"} == set(ok[0])
    (failed,) = rows(sf.bulk2.Account.get_failed_records(result["job_id"]))
    assert failed["sf__Error"] == "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"
    assert failed["Shopify_Customer_Id__c"] == "missing-name"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 1200


def test_bulk_upsert_with_relationship_columns_and_null_marker(sf: Salesforce) -> None:
    sf.bulk2.Account.insert(records=[{"Name": "Parent", "Shopify_Customer_Id__c": "P1"}], wait=0.1)
    sf.Contact.upsert("Shopify_Customer_Id__c/k1", {"LastName": "Before", "Email": "a@b.co"})
    records = [
        {"Shopify_Customer_Id__c": "k1", "LastName": "After", "Email": "#N/A", "Account.Shopify_Customer_Id__c": "P1"},
        {"Shopify_Customer_Id__c": "k2", "LastName": "New", "Email": "", "Account.Shopify_Customer_Id__c": "P1"},
        {"Shopify_Customer_Id__c": "k3", "LastName": "Orphan", "Email": "", "Account.Shopify_Customer_Id__c": "nope"},
    ]
    (result,) = sf.bulk2.Contact.upsert(records=records, external_id_field="Shopify_Customer_Id__c", wait=0.1)
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (3, 1)
    ok = {r["Shopify_Customer_Id__c"]: r for r in rows(sf.bulk2.Contact.get_successful_records(result["job_id"]))}
    assert (ok["k1"]["sf__Created"], ok["k2"]["sf__Created"]) == ("false", "true")
    (failed,) = rows(sf.bulk2.Contact.get_failed_records(result["job_id"]))
    assert failed["sf__Error"].startswith("INVALID_FIELD:Foreign key external ID: nope not found")
    k1 = sf.Contact.get_by_custom_id("Shopify_Customer_Id__c", "k1")
    parent = sf.Account.get_by_custom_id("Shopify_Customer_Id__c", "P1")
    assert (k1["LastName"], k1["Email"], k1["AccountId"]) == ("After", None, parent["Id"])


def test_bulk_update_and_delete(sf: Salesforce) -> None:
    (ins,) = sf.bulk2.Product2.insert(records=[{"Name": f"P{i}"} for i in range(5)], wait=0.1)
    ids = [r["sf__Id"] for r in rows(sf.bulk2.Product2.get_successful_records(ins["job_id"]))]
    # an empty cell leaves the field alone on update
    (upd,) = sf.bulk2.Product2.update(records=[{"Id": i, "Name": "", "IsActive": "true"} for i in ids], wait=0.1)
    assert upd["numberRecordsFailed"] == 0
    assert sf.Product2.get(ids[0])["Name"] == "P0" and sf.Product2.get(ids[0])["IsActive"] is True
    (dele,) = sf.bulk2.Product2.delete(records=[{"Id": i} for i in ids[:2]] + [{"Id": "01t000000000999AAA"}],
                                       wait=0.1)
    assert (dele["numberRecordsProcessed"], dele["numberRecordsFailed"]) == (3, 1)
    assert sf.query("SELECT COUNT() FROM Product2")["totalSize"] == 3


def test_unknown_column_fails_the_job(sf: Salesforce) -> None:
    with pytest.raises(SalesforceOperationError) as exc:
        sf.bulk2.Account.insert(records=[{"Name": "x", "Bogus__c": "1"}], wait=0.1)
    assert "InvalidBatch : Field name not found : Bogus__c" in str(exc.value)


def test_ingest_lifecycle_rules(org: Org, sf: Salesforce) -> None:
    s, base = sf.session, f"{org.url}/services/data/v62.0/jobs/ingest"
    headers = {"Authorization": f"Bearer {sf.session_id}", "Content-Type": "application/json"}
    job = s.post(base, headers=headers, json={"object": "Account", "operation": "insert", "lineEnding": "LF"}).json()
    assert job["state"] == "Open" and job["apiVersion"] == 62.0 and job["id"].startswith("750")
    assert job["contentUrl"] == f"services/data/v62.0/jobs/ingest/{job['id']}/batches"
    csv_headers = {**headers, "Content-Type": "text/csv"}
    first = s.put(f"{base}/{job['id']}/batches", headers=csv_headers, data=b"Name\r\nA\r\n")
    assert first.status_code == 201 and first.content == b""
    second = s.put(f"{base}/{job['id']}/batches", headers=csv_headers, data=b"Name\nB\n")
    assert second.status_code == 400 and second.json()[0]["errorCode"] == "BULK_API_ERROR"
    closed = s.patch(f"{base}/{job['id']}", headers=headers, json={"state": "UploadComplete"}).json()
    assert closed["state"] == "UploadComplete"
    for _ in range(100):
        info = s.get(f"{base}/{job['id']}", headers=headers).json()
        if info["state"] in ("JobComplete", "Failed"):
            break
        time.sleep(0.02)
    # CRLF data on an LF job fails the job the way the org does
    assert info["state"] == "Failed" and info["errorMessage"].startswith("ClientInputError : LineEnding is invalid")
    listed = s.get(base, headers=headers).json()
    assert job["id"] in [j["id"] for j in listed["records"]] and listed["done"] is True
    unprocessed = s.get(f"{base}/{job['id']}/unprocessedrecords", headers=headers)
    assert unprocessed.status_code == 200 and "A" in unprocessed.text


def test_bulk_create_job_errors(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.bulk2.Account.upsert(records=[{"Name": "x"}], external_id_field="Name", wait=0.1)
    assert "does not match an External ID for Account" in exc.value.content[0]["message"]


def test_bulk_query_job(sf: Salesforce) -> None:
    sf.bulk2.Account.insert(records=[{"Name": f"Q{i}", "Shopify_Customer_Id__c": f"q{i}"} for i in range(25)],
                            wait=0.1)
    pages = list(sf.bulk2.Account.query("SELECT Id, Name FROM Account ORDER BY Name", max_records=10, wait=0.1))
    assert len(pages) == 3
    got = [r for page in pages for r in rows(page)]
    assert len(got) == 25 and got[0]["Name"] == "Q0" and set(got[0]) == {"Id", "Name"}
