"""Throughput of the Salesforce sandbox (not collected by pytest; run it directly).

    .venv/bin/python tests/sandbox/salesforce/bench_sandbox.py

1. Bulk 2.0 ingest processing, measured inside the server (rows/s of the job task).
2. Bulk 2.0 end to end through simple-salesforce (create, upload, close, poll).
3. sObject Collections upsert through simple-salesforce, 200 records a call, sequential and 8 threads.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import start_org

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.bulk import IngestJob


def contact_csv(n: int, prefix: str = "") -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["Shopify_Customer_Id__c", "FirstName", "LastName", "Email", "Phone", "MailingCity",
                "Account.Shopify_Customer_Id__c"])
    for i in range(n):
        w.writerow([f"{prefix}{i}", "Jane", f"Doe {i}", f"jane{i}@example.com", "+1 555 0100", "Berlin", "A1"])
    return out.getvalue().encode()


def bench_bulk_in_process(n: int, persist: bool = False) -> None:
    sb = SalesforceSandbox(Path(tempfile.mkdtemp()), persist=persist)
    mode = " (persist=True)" if persist else ""
    st = sb.state
    acct = st.schema.objects["Account"]
    from ferry.sandbox.salesforce.validate import parse_body

    st.org.create(acct, parse_body(st.schema, acct, {"Name": "A", "Shopify_Customer_Id__c": "A1"}))
    obj = st.schema.objects["Contact"]
    for label, data in (("upsert (all creates)", contact_csv(n)), ("upsert (all updates)", contact_csv(n))):
        job = IngestJob("750bench", "upsert", obj, obj.field("Shopify_Customer_Id__c"), "COMMA", "LF", "62.0", "",
                        "")
        job.data = data
        sb.bulk.ingest_jobs[job.id] = job  # with persist=True, its result rows are written too
        t = time.perf_counter()
        asyncio.run(sb.bulk._process(job))
        dt = time.perf_counter() - t
        assert job.state == "JobComplete" and job.failed == 0, (job.state, job.error_message, job.failed_rows[:1])
        print(f"bulk ingest in-process{mode}, {label}: {n} rows in {dt:.2f}s = {n / dt:,.0f} rows/s")
    job = IngestJob("750bench2", "insert", st.schema.objects["Account"], None, "COMMA", "LF", "62.0", "", "")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["Name", "BillingCity", "Phone"])
    w.writerows([[f"Acct {i}", "Berlin", "123"] for i in range(n)])
    job.data = out.getvalue().encode()
    sb.bulk.ingest_jobs[job.id] = job
    t = time.perf_counter()
    asyncio.run(sb.bulk._process(job))
    dt = time.perf_counter() - t
    print(f"bulk ingest in-process{mode}, insert Account 3 cols: {n} rows in {dt:.2f}s = {n / dt:,.0f} rows/s")


def bench_over_https(bulk_rows: int, collection_records: int) -> None:
    gen = start_org(Path(tempfile.mkdtemp()))
    org = next(gen)
    try:
        sf = org.client()
        sf.Account.create({"Name": "A", "Shopify_Customer_Id__c": "A1"})
        records = list(csv.DictReader(io.StringIO(contact_csv(bulk_rows, "b").decode())))
        t = time.perf_counter()
        (result,) = sf.bulk2.Contact.upsert(records=records, external_id_field="Shopify_Customer_Id__c", wait=0.05)
        dt = time.perf_counter() - t
        assert result["numberRecordsFailed"] == 0
        print(f"bulk 2.0 end-to-end via simple-salesforce: {bulk_rows} rows in {dt:.2f}s = {bulk_rows / dt:,.0f} "
              "rows/s (client CSV build + upload + polling included)")

        def batch(start: int) -> None:
            body = {"allOrNone": False, "records": [
                {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": f"c{i}", "LastName": f"Doe {i}",
                 "FirstName": "Jane", "Email": f"c{i}@example.com", "Account": {"Shopify_Customer_Id__c": "A1"}}
                for i in range(start, start + 200)]}
            out = sf.restful("composite/sobjects/Contact/Shopify_Customer_Id__c", method="PATCH", json=body)
            assert all(r["success"] for r in out)

        starts = list(range(0, collection_records, 200))
        t = time.perf_counter()
        for s in starts:
            batch(s)
        dt = time.perf_counter() - t
        print(f"collections upsert, 1 client thread: {collection_records} records in {dt:.2f}s = "
              f"{collection_records / dt:,.0f} records/s")
        clients = [org.client() for _ in range(8)]

        def batch_with(i_start: tuple[int, int]) -> None:
            i, start = i_start
            c = clients[i % len(clients)]
            body = {"records": [{"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": f"d{j}",
                                 "LastName": f"Doe {j}"} for j in range(start, start + 200)]}
            c.restful("composite/sobjects/Contact/Shopify_Customer_Id__c", method="PATCH", json=body)

        t = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(batch_with, enumerate(starts)))
        dt = time.perf_counter() - t
        print(f"collections upsert, 8 client threads: {collection_records} records in {dt:.2f}s = "
              f"{collection_records / dt:,.0f} records/s")
    finally:
        next(gen, None)


if __name__ == "__main__":
    bench_bulk_in_process(100_000)
    bench_bulk_in_process(100_000, persist=True)
    bench_over_https(50_000, 20_000)
