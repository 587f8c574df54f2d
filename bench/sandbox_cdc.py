"""Cost of Change Data Capture in the Salesforce sandbox, and Streaming API delivery rate.

    .venv/bin/python bench/sandbox_cdc.py [rows]

1. Bulk 2.0 ingest processed inside the server (the job task), CDC on (default: every entity) side by
   side with CDC off, interleaved rounds, best of 3 each.
2. Streaming API: a real CometD client (aiosfstream-ng) replays the retained events with replay -2 over
   HTTPS, side by side with a REST queryAll of the same records through simple-salesforce.
"""

from __future__ import annotations

import asyncio
import csv
import io
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sandbox" / "salesforce"))

from aiosfstream_ng import Client, ReplayOption
from streaming_auth import SandboxAuthenticator

from conftest import start_org
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.bulk import IngestJob


def account_csv(n: int) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["Name", "BillingCity", "Phone"])
    w.writerows([[f"Acct {i}", "Berlin", "123"] for i in range(n)])
    return out.getvalue().encode()


def ingest_rate(n: int, cdc: bool) -> float:
    sb = SalesforceSandbox(Path(tempfile.mkdtemp()))
    if not cdc:
        sb.state.store.changes = None
    job = IngestJob("750bench", "insert", sb.state.schema.objects["Account"], None, "COMMA", "LF", "62.0", "", "")
    job.data = account_csv(n)
    sb.bulk.ingest_jobs[job.id] = job
    t = time.perf_counter()
    asyncio.run(sb.bulk._process(job))
    elapsed = time.perf_counter() - t
    assert job.state == "JobComplete" and job.failed == 0
    assert len(sb.cdc.bus.events) == (n if cdc else 0)
    return n / elapsed


def bench_ingest(n: int) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(3):
        for cdc in (False, True):
            rates[cdc].append(ingest_rate(n, cdc))
    off, on = max(rates[False]), max(rates[True])
    print(f"bulk ingest in-process, insert Account, {n} rows: CDC off {off:,.0f} rows/s | CDC on {on:,.0f} rows/s "
          f"({(1 - on / off) * 100:.0f}% slower)")


async def replay_all(org: object, count: int) -> float:
    context = ssl.create_default_context(cafile=str(org.running.ca_file))  # type: ignore[attr-defined]
    auth = SandboxAuthenticator(org.url, context, org.sandbox.login_credentials())  # type: ignore[attr-defined]
    client = Client(auth, replay=ReplayOption.ALL_EVENTS, max_pending_count=0)
    client.ssl = context
    await client.open()
    t = time.perf_counter()
    await client.subscribe("/data/AccountChangeEvent")
    for _ in range(count):
        await asyncio.wait_for(client.receive(), 30)
    elapsed = time.perf_counter() - t
    await client.close()
    return count / elapsed


def bench_streaming(n: int) -> None:
    gen = start_org(Path(tempfile.mkdtemp()), streaming_timeout_seconds=1.0)
    org = next(gen)
    try:
        sf = org.client()
        (result,) = sf.bulk2.Account.insert(records=[{"Name": f"S {i}"} for i in range(n)], wait=0.1)
        assert result["numberRecordsProcessed"] == n
        rate = asyncio.run(replay_all(org, n))
        t = time.perf_counter()
        rows = sum(1 for _ in sf.query_all_iter("SELECT Id, Name FROM Account"))
        query_rate = rows / (time.perf_counter() - t)
        print(f"streaming replay -2 via aiosfstream-ng: {n} events at {rate:,.0f} events/s | "
              f"REST queryAll of the same records via simple-salesforce: {query_rate:,.0f} rows/s")
    finally:
        next(gen, None)


if __name__ == "__main__":
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    bench_ingest(rows)
    bench_streaming(min(rows, 20_000))
