"""ferry's Salesforce connector vs simple-salesforce, side by side, against the sandbox with --latency real.

Run: .venv/bin/python bench/salesforce_connector.py [--rows 10000,100000] [--read-rows 1000000] [--sample 200]

One Salesforce sandbox runs as a child process (`ferry sandbox serve salesforce --latency real`). Every
measured run is its own child process, so its peak RSS is its own; API calls are the sandbox's own
count (DailyApiRequests) before and after. Each run creates a fresh key range, so all do the same work.

Writes, per row count: (a) ferry, strategy chosen by the planner (Bulk above bulk_threshold) through
the streamed `upsert_stream`, plus ferry forced onto Composite-wrapped Collections and plain
Collections to show the REST paths; (b) simple-salesforce's per-record `sf.Contact.upsert` loop, timed
on a sample and scaled (marked "scaled"); (c) simple-salesforce `sf.bulk2.Contact.upsert`.
Read: a Bulk API 2.0 query of --read-rows Contacts, ferry's streamed `SalesforceSource.read(bulk=True)`
vs simple-salesforce `sf.bulk2.Contact.query` (pages iterated, not kept).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXT = "Shopify_Customer_Id__c"
HERE = Path(__file__).resolve()


# --------------------------------------------------------------------------- data


def contact(prefix: str, i: int) -> dict[str, Any]:
    return {
        EXT: f"{prefix}{i}",
        "FirstName": "Ann",
        "LastName": f"Example {i}",
        "Email": f"{prefix}{i}@example.com",
        "Phone": f"+1 555 {i:07d}",
        "MailingCity": "Springfield",
        "Description": "bench row, with a comma",
    }


def chunks(prefix: str, n: int, size: int = 5000) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, n, size):
        yield [contact(prefix, i) for i in range(start, min(n, start + size))]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- workers (child processes)


def ferry_config(info: dict[str, Any], **kw: Any) -> Any:
    from ferry.connectors.salesforce import SalesforceConfig

    base = {
        "system": "salesforce",
        "login_url": info["login_url"],
        "client_id": info["client_id"],
        "auth": "client_credentials",
        "client_secret": info["client_secret"],
        "ca_file": info["ca_file"],
        "api_version": info["api_version"],
    }
    return SalesforceConfig.model_validate(base | kw)


async def ferry_write(info: dict[str, Any], mode: str, prefix: str, n: int) -> dict[str, Any]:
    from ferry.connectors.salesforce import SalesforceSink
    from ferry.connectors.salesforce.strategy import Strategy
    from ferry.core.results import JobSucceeded

    ok = failed = 0
    note = ""
    cfg = ferry_config(info, max_concurrency=10) if mode != "auto" else ferry_config(info)
    async with SalesforceSink(cfg) as sink:
        choice = sink.choose_strategy("Contact", n)
        if mode == "auto" and choice.strategy is Strategy.BULK:
            async for batch in sink.bulk_stream("Contact", EXT, chunks(prefix, n)):
                if isinstance(batch, JobSucceeded):  # the job's counts proved the rest succeeded
                    ok += batch.rows
                    continue
                ok += sum(r.success for r in batch)
                failed += sum(not r.success for r in batch)
            note = f"planner: {choice.strategy.value}, streamed; polls {sink._bulk.polls}"
        else:
            strategy = choice.strategy if mode == "auto" else Strategy(mode)
            for part in chunks(prefix, n, 10_000):
                results = await sink.upsert("Contact", EXT, part, strategy)
                ok += sum(r.success for r in results)
                failed += sum(not r.success for r in results)
            note = f"{strategy.value}, 10 in flight"
    return {"ok": ok, "failed": failed, "note": note}


def ss_client(info: dict[str, Any]) -> Any:
    import requests
    from simple_salesforce import Salesforce

    session = requests.Session()
    session.verify = info["ca_file"]
    session.trust_env = False
    token = session.post(
        f"{info['login_url']}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
        timeout=60,
    ).json()
    return Salesforce(
        instance_url=token["instance_url"], session_id=token["access_token"], version=info["api_version"],
        session=session,
    )


def ss_loop(info: dict[str, Any], prefix: str, n: int, sample: int) -> dict[str, Any]:
    sf = ss_client(info)
    done = 0
    for part in chunks(prefix, min(n, sample)):
        for rec in part:
            key = rec.pop(EXT)
            status = sf.Contact.upsert(f"{EXT}/{key}", rec)
            done += status in (200, 201, 204)
    return {"ok": done, "failed": min(n, sample) - done, "note": f"sample of {min(n, sample):,}"}


def ss_bulk2(info: dict[str, Any], prefix: str, n: int) -> dict[str, Any]:
    sf = ss_client(info)
    records = [r for part in chunks(prefix, n) for r in part]  # simple-salesforce takes a list (or a CSV file)
    result = sf.bulk2.Contact.upsert(records=records, external_id_field=EXT)
    ok = sum(int(r.get("numberRecordsProcessed", 0)) - int(r.get("numberRecordsFailed", 0)) for r in result)
    failed = sum(int(r.get("numberRecordsFailed", 0)) for r in result)
    return {"ok": ok, "failed": failed, "note": "counts only; per-record results need 2 more calls"}


def ss_bulk2_results(info: dict[str, Any], prefix: str, n: int) -> dict[str, Any]:
    """(c) plus what per-record accounting needs: the success and failure files of each job."""
    sf = ss_client(info)
    records = [r for part in chunks(prefix, n) for r in part]
    ok = failed = 0
    for job in sf.bulk2.Contact.upsert(records=records, external_id_field=EXT):
        results = sf.bulk2.Contact.get_all_ingest_records(job["job_id"])
        ok += len(results["successfulRecords"])
        failed += len(results["failedRecords"])
    return {"ok": ok, "failed": failed, "note": "plus get_all_ingest_records: per-record results"}


async def ferry_read(info: dict[str, Any], n: int) -> dict[str, Any]:
    from ferry.connectors.salesforce import SalesforceSource

    rows = 0
    async with SalesforceSource(ferry_config(info)) as source:
        async for batch in source.read("Contact", [EXT, "LastName", "Email"], bulk=True):
            rows += len(batch)
        note = f"{source.bulk.pages} pages, {source.bulk.polls} polls"
    return {"ok": rows, "failed": 0, "note": note}


def ss_read(info: dict[str, Any], n: int) -> dict[str, Any]:
    sf = ss_client(info)
    rows = 0
    query = f"SELECT {EXT}, LastName, Email, Id, SystemModstamp FROM Contact"
    for page in sf.bulk2.Contact.query(query):
        # The rows as a user gets them (dicts), as ferry hands them out; the page text is dropped after.
        rows += sum(1 for _ in csv.DictReader(io.StringIO(page)))
    return {"ok": rows, "failed": 0, "note": "pages of 50,000 (default), parsed with csv.DictReader"}


def worker(args: argparse.Namespace) -> None:
    info = json.loads(args.info)
    started = time.monotonic()
    if args.worker.startswith("ferry-write-"):
        out = asyncio.run(ferry_write(info, args.worker.removeprefix("ferry-write-"), args.prefix, args.n))
    elif args.worker == "ss-loop":
        out = ss_loop(info, args.prefix, args.n, args.sample)
    elif args.worker == "ss-bulk2":
        out = ss_bulk2(info, args.prefix, args.n)
    elif args.worker == "ss-bulk2-results":
        out = ss_bulk2_results(info, args.prefix, args.n)
    elif args.worker == "ferry-read":
        out = asyncio.run(ferry_read(info, args.n))
    elif args.worker == "ss-read":
        out = ss_read(info, args.n)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    out |= {"wall": time.monotonic() - started, "rss_mb": peak_rss_mb()}
    print(json.dumps(out))


# --------------------------------------------------------------------------- driver


def sandbox_stats(info: dict[str, Any]) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{info['url']}/__sandbox/stats", verify=info["ca_file"], timeout=60).json()


def run_worker(info: dict[str, Any], name: str, n: int, prefix: str, sample: int) -> dict[str, Any]:
    before = sandbox_stats(info)["api_calls"]
    proc = subprocess.run(
        [sys.executable, str(HERE), "--worker", name, "--info", json.dumps(info), "--n", str(n),
         "--prefix", prefix, "--sample", str(sample)],
        capture_output=True, text=True, timeout=3 * 3600, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["calls"] = sandbox_stats(info)["api_calls"] - before
    if name == "ss-loop" and n > sample:
        factor = n / sample
        out |= {"wall": out["wall"] * factor, "calls": round(out["calls"] * factor), "scaled": True,
                "ok": round(out["ok"] * factor)}
    return out


def line(label: str, n: int, r: dict[str, Any]) -> str:
    per = f"{n / r['calls']:,.0f}" if r["calls"] else "-"
    flag = " (scaled)" if r.get("scaled") else ""
    return (f"| {label} | {n:,} | {r['calls']:,}{flag} | {per} | {r['wall']:,.1f}{flag} | {r['rss_mb']:,.0f} | "
            f"{r['ok']:,} | {r['note']} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="10000,100000")
    parser.add_argument("--read-rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--rest-max", type=int, default=100_000, help="largest row count for the REST paths")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sandbox's latency jitter")
    parser.add_argument("--reverse", action="store_true", help="run the contenders of each row count in reverse order")
    parser.add_argument("--worker")
    parser.add_argument("--info")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from ferry.cli.sandboxes import start_sandbox

    state = Path(tempfile.mkdtemp(prefix="ferry-bench-sf-"))
    sandbox = start_sandbox("salesforce", state, ["--latency", "real", "--seed", str(args.seed)])
    info = sandbox.info
    sandbox_pid = sandbox.process.pid
    print(f"sandbox pid {sandbox_pid} at {info['url']} (latency real, seed {args.seed}); "
          f"machine load {os.getloadavg()[0]:.1f}")
    table = ["| tool | rows | API calls | rows/call | wall s | peak RSS MB | ok | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    try:
        for n in [int(x) for x in args.rows.split(",") if x]:
            runs = [("(a) ferry (planner)", "ferry-write-auto")]
            if n <= args.rest_max:
                runs += [("(a) ferry composite", "ferry-write-composite")]
            if n <= 10_000:
                runs += [("(a) ferry collections", "ferry-write-collections")]
            runs += [("(b) simple-salesforce loop", "ss-loop"), ("(c) simple-salesforce bulk2", "ss-bulk2"),
                     ("(c') simple-salesforce bulk2 + results", "ss-bulk2-results")]
            # The jitter draws follow the call order: --seed and --reverse change which run gets which draws.
            for label, name in reversed(runs) if args.reverse else runs:
                result = run_worker(info, name, n, f"{name}-{n}-", args.sample)
                table.append(line(label, n, result))
                print(table[-1], flush=True)
        if args.read_rows:
            # Seeding the read is itself ferry's streamed Bulk write of --read-rows records: a row of its own.
            result = run_worker(info, "ferry-write-auto", args.read_rows, "read-", args.sample)
            table.append(line("(a) ferry (planner), seeds the read", args.read_rows, result))
            print(table[-1], flush=True)
            # The query reads every Contact in the org: the seeded rows and those written above.
            readers = [("(a) ferry Bulk query", "ferry-read"), ("(c) simple-salesforce bulk2 query", "ss-read")]
            for label, name in readers:
                result = run_worker(info, name, args.read_rows, "", args.sample)
                table.append(line(label, result["ok"], result))
                print(table[-1], flush=True)
    finally:
        sandbox.stop()
    print("\n".join(table))


if __name__ == "__main__":
    main()
