"""Bulk API 2.0 beyond the basics: hardDelete, delimiters and line endings, query paging headers, job lists,
chunked processing states; through simple-salesforce's bulk2 and raw httpx for the headers."""

from __future__ import annotations

import csv
import io
import ssl
import time
from typing import Any

import httpx
import pytest
from simple_salesforce import Salesforce

from .conftest import Org

API = "/services/data/v62.0"


def rows(text: str, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def http(org: Org) -> httpx.Client:
    token = org.token().json()["access_token"]
    return httpx.Client(base_url=org.url, verify=ssl.create_default_context(cafile=str(org.running.ca_file)),
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)


def wait_done(c: httpx.Client, kind: str, job_id: str) -> dict[str, Any]:
    for _ in range(400):
        info = c.get(f"{API}/jobs/{kind}/{job_id}").json()
        if info["state"] in ("JobComplete", "Failed", "Aborted"):
            return dict(info)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_insert_upsert_delete_hard_delete_through_bulk2(org: Org, sf: Salesforce) -> None:
    records = [{"Name": f"H{i}", "Shopify_Customer_Id__c": f"h{i}"} for i in range(1200)]
    (ins,) = sf.bulk2.Account.insert(records=records, wait=0.1)
    assert ins["numberRecordsProcessed"] == 1200 and ins["numberRecordsFailed"] == 0
    (ups,) = sf.bulk2.Account.upsert(records=[{"Shopify_Customer_Id__c": "h0", "Name": "H0 renamed"},
                                              {"Shopify_Customer_Id__c": "new", "Name": "New"}],
                                     external_id_field="Shopify_Customer_Id__c", wait=0.1)
    created = {r["Shopify_Customer_Id__c"]: r["sf__Created"] for r in
               rows(sf.bulk2.Account.get_successful_records(ups["job_id"]))}
    assert created == {"h0": "false", "new": "true"}
    ids = [r["sf__Id"] for r in rows(sf.bulk2.Account.get_successful_records(ins["job_id"]))]
    (soft,) = sf.bulk2.Account.delete(records=[{"Id": i} for i in ids[:10]], wait=0.1)
    (hard,) = sf.bulk2.Account.hard_delete(records=[{"Id": i} for i in ids[10:20]], wait=0.1)
    assert soft["numberRecordsFailed"] == hard["numberRecordsFailed"] == 0
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 1201 - 20
    # soft-deleted rows stay in the recycle bin (queryAll sees them); hard-deleted ones are gone
    assert sf.query("SELECT COUNT() FROM Account WHERE IsDeleted = true", include_deleted=True)["totalSize"] == 10
    pages = list(sf.bulk2.Account.query("SELECT Id FROM Account", max_records=500, wait=0.1))
    assert [len(rows(p)) for p in pages] == [500, 500, 181]


def test_delimiters_line_endings_relationships_and_null(org: Org, sf: Salesforce) -> None:
    sf.Account.upsert("Shopify_Customer_Id__c/P9", {"Name": "Parent"})
    sf.Contact.upsert("Shopify_Customer_Id__c/c1", {"LastName": "Old", "Email": "old@example.com"})
    with http(org) as c:
        for delimiter, char in (("TAB", "\t"), ("PIPE", "|"), ("SEMICOLON", ";"), ("CARET", "^"),
                                ("BACKQUOTE", "`"), ("COMMA", ",")):
            job = c.post(f"{API}/jobs/ingest", json={
                "object": "Contact", "operation": "upsert", "externalIdFieldName": "Shopify_Customer_Id__c",
                "columnDelimiter": delimiter, "lineEnding": "CRLF"}).json()
            body = char.join(["Shopify_Customer_Id__c", "LastName", "Email", "Account.Shopify_Customer_Id__c"])
            body += "\r\n" + char.join(["c1", f"New {delimiter}", "#N/A", "P9"]) + "\r\n"
            assert c.put(f"{API}/jobs/ingest/{job['id']}/batches", content=body.encode(),
                         headers={"Content-Type": "text/csv"}).status_code == 201
            c.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
            info = wait_done(c, "ingest", job["id"])
            assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (
                "JobComplete", 1, 0), info
            assert (info["columnDelimiter"], info["lineEnding"]) == (delimiter, "CRLF")
            result = c.get(f"{API}/jobs/ingest/{job['id']}/successfulResults")
            assert result.text.startswith(char.join(['"sf__Id"', '"sf__Created"', '"Shopify_Customer_Id__c"']))
            assert "\r\n" in result.text  # results come back in the job's delimiter and line ending
    contact = sf.Contact.get_by_custom_id("Shopify_Customer_Id__c", "c1")
    parent = sf.Account.get_by_custom_id("Shopify_Customer_Id__c", "P9")
    assert (contact["LastName"], contact["Email"], contact["AccountId"]) == ("New COMMA", None, parent["Id"])


def test_chunked_processing_goes_through_the_states(org: Org, sf: Salesforce) -> None:
    # the module's org processes 500-row chunks (bulk_chunk_rows=500), like the org's 10,000-record batches
    with http(org) as c:
        job = c.post(f"{API}/jobs/ingest", json={"object": "Account", "operation": "insert"}).json()
        assert job["state"] == "Open" and job["contentUrl"].endswith(f"{job['id']}/batches")
        data = "Name\n" + "".join(f"A{i}\n" for i in range(3000)) + "\n"
        c.put(f"{API}/jobs/ingest/{job['id']}/batches", content=data.encode(), headers={"Content-Type": "text/csv"})
        closed = c.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"}).json()
        assert closed["state"] == "UploadComplete"
        info = wait_done(c, "ingest", job["id"])
        assert info["state"] == "JobComplete" and info["numberRecordsProcessed"] == 3000
        assert "contentUrl" not in info
        failed = c.get(f"{API}/jobs/ingest/{job['id']}/failedResults")
        assert failed.text.strip() == '"sf__Id","sf__Error","Name"'
        unprocessed = c.get(f"{API}/jobs/ingest/{job['id']}/unprocessedrecords")
        assert unprocessed.text.strip() == '"Name"'
    assert org.sandbox.state.budget.bulk_batches >= 6  # 3000 rows in 500-row chunks


def test_query_results_headers_and_paging(org: Org, sf: Salesforce) -> None:
    sf.bulk2.Account.insert(records=[{"Name": f"Q{i:04d}"} for i in range(2500)], wait=0.1)
    with http(org) as c:
        job = c.post(f"{API}/jobs/query", json={"operation": "query",
                                                "query": "SELECT Name FROM Account ORDER BY Name"}).json()
        assert wait_done(c, "query", job["id"])["numberRecordsProcessed"] == 2500
        names: list[str] = []
        locator = None
        sizes = []
        for _ in range(10):
            params = {"maxRecords": "1000", **({"locator": locator} if locator else {})}
            page = c.get(f"{API}/jobs/query/{job['id']}/results", params=params)
            assert page.headers["content-type"].startswith("text/csv")
            sizes.append(int(page.headers["sforce-numberofrecords"]))
            names += [r["Name"] for r in rows(page.text)]
            locator = page.headers["sforce-locator"]
            if locator == "null":
                break
        assert sizes == [1000, 1000, 500] and names == sorted(names) and len(set(names)) == 2500
        whole = c.get(f"{API}/jobs/query/{job['id']}/results")  # without maxRecords: one set here
        assert whole.headers["sforce-locator"] == "null" and whole.headers["sforce-numberofrecords"] == "2500"
        bad = c.get(f"{API}/jobs/query/{job['id']}/results", params={"maxRecords": "0"})
        assert bad.status_code == 400


def test_job_lists(org: Org, sf: Salesforce) -> None:
    sf.bulk2.Account.insert(records=[{"Name": "L"}], wait=0.1)
    list(sf.bulk2.Account.query("SELECT Id FROM Account", wait=0.1))
    with http(org) as c:
        ingest = c.get(f"{API}/jobs/ingest").json()
        query = c.get(f"{API}/jobs/query").json()
        classic = c.get(f"{API}/jobs/ingest", params={"jobType": "Classic"}).json()
    assert set(ingest) == {"done", "records", "nextRecordsUrl"}
    assert ingest["done"] is True and ingest["nextRecordsUrl"] is None and len(ingest["records"]) == 1
    entry = ingest["records"][0]
    assert entry["jobType"] == "V2Ingest" and entry["state"] == "JobComplete" and entry["object"] == "Account"
    assert "numberRecordsProcessed" not in entry  # Get All Jobs lists JobInfo without processing figures
    assert query["records"][0]["jobType"] == "V2Query" and classic["records"] == []


def test_upload_over_the_size_limit_is_refused(org: Org, sf: Salesforce, monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.sandbox.salesforce import bulk

    monkeypatch.setattr(bulk, "MAX_UPLOAD_BYTES", 64)  # the real limit is 150 MB; the rule is the same
    with http(org) as c:
        job = c.post(f"{API}/jobs/ingest", json={"object": "Account", "operation": "insert"}).json()
        too_big = c.put(f"{API}/jobs/ingest/{job['id']}/batches", content=b"Name\n" + b"x" * 100 + b"\n",
                        headers={"Content-Type": "text/csv"})
        assert too_big.status_code == 413 and too_big.json()[0]["errorCode"] == "EXCEEDED_QUOTA"
        ok = c.put(f"{API}/jobs/ingest/{job['id']}/batches", content=b"Name\nsmall\n",
                   headers={"Content-Type": "text/csv"})
        assert ok.status_code == 201  # the refused upload left the job Open and empty
