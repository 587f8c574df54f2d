"""persist=True (org.db survives a restart) and the `real` latency profile."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from simple_salesforce import Salesforce

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.latency import REAL, LatencyProfile

from .conftest import Org, start_org

MIN_JITTER = 0.8


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def api_used(org: Org) -> int:
    return int(org.admin("stats")["daily_api_requests"]["used"])


def test_in_memory_by_default_writes_no_database(tmp_path: Path) -> None:
    SalesforceSandbox(tmp_path)
    assert not (tmp_path / "salesforce" / "org.db").exists()


def test_persisted_org_survives_a_restart(tmp_path: Path) -> None:
    first = start_org(tmp_path, persist=True, bulk_chunk_rows=2)
    org = next(first)
    sf = org.client()
    acc = sf.Account.upsert("Shopify_Customer_Id__c/A1", {"Name": "Acme"})
    assert acc == 201
    acc_id = sf.query("SELECT Id FROM Account WHERE Shopify_Customer_Id__c = 'A1'")["records"][0]["Id"]
    gone = sf.Account.create({"Name": "Gone"})["id"]
    sf.Account.delete(gone)
    records = [{"LastName": f"L{i}", "Shopify_Customer_Id__c": f"C{i}", "Account.Shopify_Customer_Id__c": "A1"}
               for i in range(5)]
    (job,) = sf.bulk2.Contact.upsert(records=records, external_id_field="Shopify_Customer_Id__c", wait=0.1)
    assert int(job["numberRecordsProcessed"]) == 5 and int(job["numberRecordsFailed"]) == 0
    contacts = {r["Shopify_Customer_Id__c"]: r["Id"] for r in org.admin("records/Contact")}
    query_job = sf.restful("jobs/query", method="POST", json={
        "operation": "query", "query": "SELECT Shopify_Customer_Id__c, Account.Name FROM Contact"})["id"]
    assert sf.restful(f"jobs/query/{query_job}")["state"] == "JobComplete"
    used = api_used(org)
    creds = org.creds
    first.close()  # stop the server; org.db is not closed, as if the process were killed

    second = start_org(tmp_path, persist=True, bulk_chunk_rows=2)
    org2 = next(second)
    try:
        assert org2.creds["client_id"] == creds["client_id"]
        assert api_used(org2) == used
        sf2 = org2.client()
        assert {r["Shopify_Customer_Id__c"]: r["Id"] for r in org2.admin("records/Contact")} == contacts
        assert all(r["AccountId"] == acc_id for r in org2.admin("records/Contact"))
        # upserts by an existing external id (the rebuilt index matches case-insensitively) update
        assert sf2.Account.upsert("Shopify_Customer_Id__c/a1", {"Name": "Acme 2"}) == 200
        result = sf2.restful("composite/sobjects/Contact/Shopify_Customer_Id__c", method="PATCH", json={
            "allOrNone": False,
            "records": [{"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": "C3", "LastName": "New"},
                        {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": "C9", "LastName": "Nine"}]})
        assert [(r["id"], r["created"]) for r in result] == [(contacts["C3"], False), (result[1]["id"], True)]
        # ids continue from the persisted counters
        assert result[1]["id"] not in contacts.values()
        assert result[1]["id"][:15] > max(contacts.values())[:15]
        new_acc = sf2.Account.create({"Name": "After restart"})["id"]
        assert new_acc[:15] > max(acc_id, gone)[:15]
        # soft-deleted rows, Bulk results and the API counter are all still there
        deleted = sf2.query_all("SELECT Id FROM Account WHERE IsDeleted = true", include_deleted=True)["records"]
        assert [r["Id"] for r in deleted] == [gone]
        ok = rows(sf2.bulk2.Contact.get_successful_records(job["job_id"]))
        assert sorted(r["Shopify_Customer_Id__c"] for r in ok) == [f"C{i}" for i in range(5)]
        # a Bulk query job's result set comes back from the stored record ids
        page = sf2.session.get(f"{sf2.base_url}jobs/query/{query_job}/results", headers=sf2.headers)
        assert page.headers["Sforce-NumberOfRecords"] == "5"
        assert sorted(r["Shopify_Customer_Id__c"] for r in rows(page.text)) == [f"C{i}" for i in range(5)]
        assert {r["Account.Name"] for r in rows(page.text)} == {"Acme 2"}  # parent fields read at render time
        assert api_used(org2) > used + 4
        names = {r["Shopify_Customer_Id__c"]: r["Name"] for r in org2.admin("records/Account")
                 if r["Shopify_Customer_Id__c"]}
        assert names == {"A1": "Acme 2"}
    finally:
        second.close()
        org2.sandbox.close()
        org.sandbox.close()

    # A reset empties the database too.
    third = start_org(tmp_path, persist=True)
    org3 = next(third)
    try:
        org3.admin("reset", "POST")
        assert org3.admin("stats")["records"]["Contact"] == 0
    finally:
        third.close()
        org3.sandbox.close()
    reloaded = SalesforceSandbox(tmp_path, persist=True)
    try:
        assert reloaded.state.store.counts()["Contact"] == 0
        assert reloaded.state.store.counts()["User"] == 1
        assert reloaded.state.budget.used == 0
    finally:
        reloaded.close()


def test_latency_profile_is_deterministic_and_bounded() -> None:
    with pytest.raises(ValueError):
        LatencyProfile("slow")
    off = LatencyProfile("off")
    assert off.call_delay("GET", "sobjects/{sobject}/{id}", 0, None) == 0
    assert off.bulk_chunk_delay(10_000) == 0
    a, b = LatencyProfile("real", seed=7), LatencyProfile("real", seed=7)
    seq_a = [a.call_delay("GET", "limits", 0, None) for _ in range(20)]
    assert seq_a == [b.call_delay("GET", "limits", 0, None) for _ in range(20)]
    assert all(REAL.rest * 0.8 <= d < REAL.rest * 1.2 for d in seq_a)
    assert len(set(seq_a)) > 1
    results = [{"id": "x", "success": True}] * 200
    assert a.base_delay("PATCH", "composite/sobjects/{sobject}/{field}", 0, results) == pytest.approx(
        REAL.collections_call + 200 * REAL.collections_write_record)
    assert a.base_delay("POST", "composite", 0, {"compositeResponse": [{}] * 4}) == pytest.approx(
        REAL.composite_call + 4 * REAL.composite_subrequest)
    assert a.base_delay("GET", "query/{locator}", 0, {}) == REAL.query_page
    assert a.base_delay("PUT", "jobs/ingest/{job}/batches", 2_000_000, None) == pytest.approx(
        REAL.bulk_upload + 2 * REAL.bulk_upload_per_mb)
    assert REAL.bulk_chunk_10k * 0.4 <= a.bulk_chunk_delay(5_000) < REAL.bulk_chunk_10k * 0.6
    query = REAL.bulk_query_base + 5 * REAL.bulk_query_10k
    assert query * 0.8 <= a.bulk_query_delay(50_000) < query * 1.2 and off.bulk_query_delay(50_000) == 0


def test_real_latency_profile_slows_calls(tmp_path: Path) -> None:
    gen = start_org(tmp_path, latency="real")
    org = next(gen)
    try:
        sf: Salesforce = org.client()
        started = time.perf_counter()
        sf.Account.create({"Name": "Slow"})
        assert time.perf_counter() - started >= REAL.rest * MIN_JITTER * 0.9

        records = [{"attributes": {"type": "Account"}, "Name": f"A{i}"} for i in range(200)]
        started = time.perf_counter()
        sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
        expected = REAL.collections_call + 200 * REAL.collections_write_record
        assert time.perf_counter() - started >= expected * MIN_JITTER * 0.9

        started = time.perf_counter()
        sf.query("SELECT Id FROM Account LIMIT 1")
        assert time.perf_counter() - started >= REAL.query_page * MIN_JITTER * 0.9

        started = time.perf_counter()
        (job,) = sf.bulk2.Account.insert(records=[{"Name": "B"}], wait=0.1)
        assert int(job["numberRecordsProcessed"]) == 1
        minimum = REAL.bulk_create + REAL.bulk_upload + REAL.bulk_close + REAL.bulk_queue
        assert time.perf_counter() - started >= minimum * MIN_JITTER * 0.9

        # a query job is InProgress for its processing time, then JobComplete
        started = time.perf_counter()
        job_id = sf.restful("jobs/query", method="POST", json={"operation": "query",
                                                                "query": "SELECT Id FROM Account"})["id"]
        states = [sf.restful(f"jobs/query/{job_id}")["state"]]
        while states[-1] != "JobComplete" and time.perf_counter() - started < 30:
            time.sleep(0.2)
            states.append(sf.restful(f"jobs/query/{job_id}")["state"])
        assert states[0] == "InProgress" and states[-1] == "JobComplete"
        assert time.perf_counter() - started >= REAL.bulk_query_base * MIN_JITTER * 0.9
    finally:
        gen.close()


def test_cli_build_sandbox_passes_persist_and_latency(tmp_path: Path) -> None:
    from ferry.cli.serve import build_sandbox
    from ferry.errors import ConfigError

    sb = build_sandbox("salesforce", seed=1, customers=0, products=0, orders=0, state_dir=tmp_path,
                       persist=True, latency="real")
    try:
        assert sb.db is not None and sb.latency.name == "real"
        assert (tmp_path / "salesforce" / "org.db").exists()
    finally:
        sb.close()
    with pytest.raises(ConfigError):
        build_sandbox("salesforce", seed=1, customers=0, products=0, orders=0, state_dir=tmp_path, latency="fast")
