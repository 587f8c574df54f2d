"""Cost of saving Bulk ingest rows in 200-record transactions, side by side with row-by-row commits.

    .venv/bin/python bench/sandbox_bulk_transactions.py [rows]

In-process (no HTTP): the same job code with `BulkApi.transaction_rows` 0 (each row its own commit, as before)
and 200 (the org's Bulk transaction size, the default), CDC on, interleaved rounds, best of 3, CPU time of the job.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

from sandbox_salesforce import account_csv, contact_csv

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.bulk import IngestJob
from ferry.sandbox.salesforce.validate import ParsedBody


def run_job(sb: SalesforceSandbox, obj_name: str, operation: str, data: bytes, job_id: str) -> float:
    obj = sb.state.schema.objects[obj_name]
    key = obj.field("Shopify_Customer_Id__c") if operation == "upsert" else None
    job = IngestJob(job_id, operation, obj, key, "COMMA", "LF", "62.0", "", "")
    job.data = data
    sb.bulk.ingest_jobs[job.id] = job
    started = time.process_time()
    asyncio.run(sb.bulk._process(job))
    elapsed = time.process_time() - started
    assert job.state == "JobComplete" and job.failed == 0, (job.error_message, job.failed_rows[:1])
    return elapsed


def one_round(n: int, transaction_rows: int, contacts: bytes, accounts: bytes) -> tuple[float, float, float]:
    sb = SalesforceSandbox(Path(tempfile.mkdtemp()))
    sb.bulk.transaction_rows = transaction_rows
    account = sb.state.schema.objects["Account"]
    sb.state.org.upsert(account, account.fields["Shopify_Customer_Id__c"], "A1",
                        ParsedBody([(account.fields["Name"], "Parent")]))
    creates = run_job(sb, "Contact", "upsert", contacts, "750c")
    updates = run_job(sb, "Contact", "upsert", contacts, "750u")
    inserts = run_job(sb, "Account", "insert", accounts, "750i")
    return n / creates, n / updates, n / inserts


def main(n: int) -> None:
    contacts, accounts = contact_csv(n, "c"), account_csv(n)
    best: dict[int, list[float]] = {0: [0.0, 0.0, 0.0], 200: [0.0, 0.0, 0.0]}
    for _ in range(3):
        for size in (0, 200):
            rates = one_round(n, size, contacts, accounts)
            best[size] = [max(a, b) for a, b in zip(best[size], rates, strict=True)]
            gc.collect()
    print(f"Bulk ingest in-process, {n:,} rows, CDC on, best of 3, rows per CPU-second of the job")
    for size, (creates, updates, inserts) in best.items():
        label = "row by row (before)" if size == 0 else "200-row transactions"
        print(f"transaction_rows={size:3d} {label:22s}: Contact upsert creates {creates:,.0f} | "
              f"updates {updates:,.0f} | Account insert {inserts:,.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
