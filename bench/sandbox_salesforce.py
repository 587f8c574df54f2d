"""Throughput of the Salesforce sandbox, so it never bottlenecks ferry's own benchmarks.

    .venv/bin/python bench/sandbox_salesforce.py                    # 200k-row Bulk, 200k-row query
    .venv/bin/python bench/sandbox_salesforce.py --query-rows 1000000   # the 1M-row Bulk read
    .venv/bin/python bench/sandbox_salesforce.py --persist              # with the SQLite state directory

The sandbox runs as `ferry sandbox serve salesforce` in a child process (latency off), the client is httpx in
this process. Measured:

1. Bulk 2.0 ingest: server-side processing rate (rows / the job's totalProcessingTime) and end to end (create,
   upload, close, poll until JobComplete), for a Contact upsert with a relationship column and an Account insert.
2. Bulk 2.0 query: job creation, then downloading every result set (maxRecords=50,000, Sforce-Locator paging),
   with the sandbox's peak RSS before and after, which shows whether the results are held in bounded memory.
3. REST: single-record upsert by external id (PATCH sobjects/Contact/Shopify_Customer_Id__c/{id}) in calls/s
   from 8 concurrent connections, and sObject Collections upsert (200 records a call) in records/s.

Peers in the same run, on the same machine: Python's csv module parsing / writing the same CSV (the floor of any
Python Bulk implementation), and a bare uvicorn+FastAPI app over the same TLS answering a canned upsert reply
(the floor of the HTTP stack every sandbox call goes through).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import multiprocessing
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ferry.cli.sandboxes import SandboxProcess, start_sandbox

API = "/services/data/v62.0"
CONCURRENCY = 8


def contact_csv(n: int, prefix: str) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["Shopify_Customer_Id__c", "FirstName", "LastName", "Email", "Phone", "MailingCity",
                "Account.Shopify_Customer_Id__c"])
    for i in range(n):
        w.writerow([f"{prefix}{i}", "Jane", f"Doe {i}", f"jane{i}@example.com", "+1 555 0100", "Berlin", "A1"])
    return out.getvalue().encode()


def account_csv(n: int) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["Name", "BillingCity", "Phone", "Shopify_Customer_Id__c"])
    w.writerows([f"Acct {i}", "Berlin", "+1 555 0100", f"acct{i}"] for i in range(n))
    return out.getvalue().encode()


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used: load-independent, unlike wall time on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    def __init__(self, proc: SandboxProcess) -> None:
        self.ca = ssl.create_default_context(cafile=proc.info["ca_file"])
        token = httpx.post(f"{proc.url}/services/oauth2/token", verify=self.ca,
                           data={"grant_type": "client_credentials"},
                           auth=(proc.info["client_id"], proc.info["client_secret"])).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=proc.url, verify=self.ca, headers=self.headers, timeout=600)

    def ingest(self, obj: str, operation: str, data: bytes, external_id: str | None = None) -> tuple[float, dict]:
        start = time.perf_counter()
        body: dict[str, Any] = {"object": obj, "operation": operation}
        if external_id:
            body["externalIdFieldName"] = external_id
        job = self.http.post(f"{API}/jobs/ingest", json=body).json()
        self.http.put(f"{API}/jobs/ingest/{job['id']}/batches", content=data, headers={"Content-Type": "text/csv"})
        self.http.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
        info = self.wait("ingest", job["id"])
        return time.perf_counter() - start, info

    def wait(self, kind: str, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 900
        delay = 0.05
        while time.monotonic() < deadline:
            info = self.http.get(f"{API}/jobs/{kind}/{job_id}").json()
            if info["state"] in ("JobComplete", "Failed", "Aborted"):
                assert info["state"] == "JobComplete", info
                return dict(info)
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise TimeoutError(job_id)


def bench_ingest(client: Client, proc: SandboxProcess, rows: int, table: list[tuple[str, str, str]]) -> None:
    client.http.patch(f"{API}/sobjects/Account/Shopify_Customer_Id__c/A1", json={"Name": "Parent"})
    cases = (("Contact upsert, 7 columns incl. Account.Shopify_Customer_Id__c, all creates", "Contact", "upsert",
              contact_csv(rows, "c"), "Shopify_Customer_Id__c"),
             ("Contact upsert, same rows again, all updates", "Contact", "upsert", contact_csv(rows, "c"),
              "Shopify_Customer_Id__c"),
             ("Account insert, 4 columns", "Account", "insert", account_csv(rows), None))
    for label, obj, op, data, key in cases:
        cpu = cpu_seconds(proc.process.pid)
        wall, info = client.ingest(obj, op, data, key)
        cpu = cpu_seconds(proc.process.pid) - cpu
        assert info["numberRecordsFailed"] == 0, info
        server = info["numberRecordsProcessed"] / max(info["totalProcessingTime"] / 1000, 1e-9)
        table.append((f"Bulk ingest {label}: server processing", f"{server:,.0f} rows/s",
                      f"{rows:,} rows; {rows / cpu:,.0f} rows per sandbox CPU-second"))
        table.append((f"Bulk ingest {label}: end to end (create/upload/close/poll)", f"{rows / wall:,.0f} rows/s",
                      f"{wall:.2f} s, {len(data) / 1e6:.1f} MB upload"))
    data = contact_csv(rows, "c")
    start = time.perf_counter()
    parsed = sum(1 for _ in csv.reader(io.StringIO(data.decode())))
    table.append(("peer: csv.reader parsing the same Contact CSV, nothing else",
                  f"{parsed / (time.perf_counter() - start):,.0f} rows/s", "the floor of CSV in Python"))


def bench_query(client: Client, proc: SandboxProcess, rows: int, table: list[tuple[str, str, str]]) -> None:
    have = client.http.get(f"{API}/query", params={"q": "SELECT COUNT() FROM Account"}).json()["totalSize"]
    left = rows - have
    while left > 0:  # load in 500k-row jobs (the 150 MB upload limit is never near)
        n = min(left, 500_000)
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["Name", "BillingCity", "Phone"])
        w.writerows([f"Q {have + i}", "Berlin", "+1 555 0100"] for i in range(n))
        client.ingest("Account", "insert", out.getvalue().encode())
        left -= n
        have += n
    before = rss_mib(proc.process.pid)
    soql = "SELECT Id, Name, BillingCity, Phone, CreatedDate FROM Account"
    start = time.perf_counter()
    job = client.http.post(f"{API}/jobs/query", json={"operation": "query", "query": soql}).json()
    info = client.wait("query", job["id"])
    created = time.perf_counter() - start
    total = info["numberRecordsProcessed"]
    got = pages = 0
    size = 0
    locator = None
    start = time.perf_counter()
    with client.http.stream("GET", f"{API}/jobs/query/{job['id']}/results",
                            params={"maxRecords": "50000"}) as first:
        response = first
        size += sum(len(c) for c in response.iter_bytes())
    while True:
        pages += 1
        got += int(response.headers["sforce-numberofrecords"])
        locator = response.headers["sforce-locator"]
        if locator == "null":
            break
        with client.http.stream("GET", f"{API}/jobs/query/{job['id']}/results",
                                params={"maxRecords": "50000", "locator": locator}) as nxt:
            response = nxt
            size += sum(len(c) for c in response.iter_bytes())
    download = time.perf_counter() - start
    after = rss_mib(proc.process.pid)
    assert got == total, (got, total)
    table.append((f"Bulk query job over {total:,} Accounts, 5 columns: create until JobComplete",
                  f"{created:.2f} s", ""))
    table.append(("Bulk query results download (maxRecords=50,000, Sforce-Locator paging)",
                  f"{got / download:,.0f} rows/s", f"{pages} sets, {size / 1e6:.0f} MB CSV"))
    table.append(("sandbox RSS before / after the query (peak)", f"{before[0]:,.0f} / {after[0]:,.0f} MiB",
                  f"peak {before[1]:,.0f} -> {after[1]:,.0f} MiB, {total:,} records stored"))
    peer_rows = [[f"001000000000{i:06d}AAA", f"Q {i}", "Berlin", "+1 555 0100", "2026-01-01T00:00:00.000+0000"]
                 for i in range(min(total, 200_000))]
    out = io.StringIO()
    start = time.perf_counter()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(peer_rows)
    table.append(("peer: csv.writer rendering the same-shaped rows, nothing else",
                  f"{len(peer_rows) / (time.perf_counter() - start):,.0f} rows/s", "the floor of CSV in Python"))


async def upsert_calls(url: str, ca: ssl.SSLContext, headers: dict[str, str], calls: int) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, verify=ca, headers=headers, limits=limits, timeout=60) as c:
        queue = iter(range(calls))

        async def worker() -> None:
            for i in queue:
                r = await c.patch(f"{API}/sobjects/Contact/Shopify_Customer_Id__c/r{i % 5000}",
                                  json={"LastName": f"Doe {i}", "Email": f"r{i}@example.com"})
                assert r.status_code in (200, 201), r.text

        await worker_start(c)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return calls / (time.perf_counter() - start)


async def worker_start(c: httpx.AsyncClient) -> None:
    # open the connections (TLS handshakes) before the clock starts
    await asyncio.gather(*(c.get(f"{API}/limits") for _ in range(CONCURRENCY)))


async def collection_records(url: str, ca: ssl.SSLContext, headers: dict[str, str], calls: int) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, verify=ca, headers=headers, limits=limits, timeout=60) as c:
        queue = iter(range(calls))

        async def worker() -> None:
            for n in queue:
                body = {"allOrNone": False, "records": [
                    {"attributes": {"type": "Contact"}, "Shopify_Customer_Id__c": f"k{n * 200 + j}",
                     "LastName": f"Doe {j}", "Email": f"k{j}@example.com",
                     "Account": {"Shopify_Customer_Id__c": "A1"}} for j in range(200)]}
                r = await c.patch(f"{API}/composite/sobjects/Contact/Shopify_Customer_Id__c", json=body)
                assert r.status_code == 200 and all(x["success"] for x in r.json()), r.text[:300]

        await worker_start(c)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return calls * 200 / (time.perf_counter() - start)


def _peer_server(state_dir: str, urls: Any) -> None:
    from fastapi import FastAPI, Response

    from ferry.sandbox.serve import serve_forever

    app = FastAPI()
    reply = b'{"id":"003000000000001AAA","success":true,"errors":[],"created":false}'

    @app.get(API + "/limits")
    async def limits() -> Response:
        return Response(b"{}", media_type="application/json")

    @app.patch(API + "/sobjects/{rest:path}")
    async def upsert() -> Response:
        return Response(reply, media_type="application/json")

    serve_forever(app, Path(state_dir), 0, lambda url, tls: urls.put((url, str(tls.ca_file))))


def bench_rest(client: Client, proc: SandboxProcess, calls: int, table: list[tuple[str, str, str]]) -> None:
    cpu = cpu_seconds(proc.process.pid)
    rate = asyncio.run(upsert_calls(proc.url, client.ca, client.headers, calls))
    cpu = cpu_seconds(proc.process.pid) - cpu
    table.append((f"REST upsert by external id, single record, {CONCURRENCY} connections", f"{rate:,.0f} calls/s",
                  f"{calls:,} calls; {calls / cpu:,.0f} calls per sandbox CPU-second"))
    rate = asyncio.run(collection_records(proc.url, client.ca, client.headers, max(calls // 40, 20)))
    table.append((f"sObject Collections upsert, 200 records a call, {CONCURRENCY} connections",
                  f"{rate:,.0f} records/s", f"{max(calls // 40, 20) * 200:,} records"))
    ctx = multiprocessing.get_context("spawn")
    urls = ctx.Queue()
    peer = ctx.Process(target=_peer_server, args=(tempfile.mkdtemp(), urls), daemon=True)
    peer.start()
    try:
        url, ca_file = urls.get(timeout=60)
        rate = asyncio.run(upsert_calls(url, ssl.create_default_context(cafile=ca_file), {}, calls))
        table.append(("peer: bare uvicorn+FastAPI over TLS answering a canned upsert reply",
                      f"{rate:,.0f} calls/s", "the floor of the HTTP stack"))
    finally:
        peer.terminate()
        peer.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ingest-rows", type=int, default=200_000)
    parser.add_argument("--query-rows", type=int, default=200_000)
    parser.add_argument("--rest-calls", type=int, default=4_000)
    parser.add_argument("--persist", action="store_true", help="run the sandbox with --persist (SQLite org.db)")
    args = parser.parse_args()
    table: list[tuple[str, str, str]] = []
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    extra = ["--daily-api-limit", "100000000", *(["--persist"] if args.persist else [])]
    proc = start_sandbox("salesforce", Path(tempfile.mkdtemp()), extra)
    try:
        client = Client(proc)
        bench_ingest(client, proc, args.ingest_rows, table)
        bench_rest(client, proc, args.rest_calls, table)
        bench_query(client, proc, args.query_rows, table)
    finally:
        proc.stop()
    width = max(len(r[0]) for r in table)
    mode = ", persist=True" if args.persist else ""
    print(f"Salesforce sandbox throughput, latency off{mode}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"load average before the run {load_before}")
    print(f"{'measure':<{width}}  {'figure':>18}  note")
    for name, figure, note in table:
        print(f"{name:<{width}}  {figure:>18}  {note}")


if __name__ == "__main__":
    main()
