"""Where the time of one Bulk upsert job goes: ferry's streamed upsert vs simple-salesforce bulk2, event by event.

Run: .venv/bin/python bench/bulk_timeline.py [--rows 100000] [--runs 1] [--tools ferry,ss,ss-results]

One Salesforce sandbox (`--latency real`) runs as a child process with its Bulk handlers wrapped to log when
each thing happens on the server: job created, upload body received, UploadComplete, processing started
(after the modelled queue), each 10,000-row chunk saved, JobComplete, each poll answered (and the state it
reported), result files rendered. Each tool runs in its own child process with its HTTP calls wrapped the
same way on the client side (request sent, answer received). All times are wall-clock seconds from the
tool's process start, so server and client events line up on one axis. Diagnostics, not a benchmark table:
`bench/salesforce_connector.py` gives the figures that go in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from salesforce_connector import EXT, chunks, ss_client  # noqa: E402

_LOG: list[dict[str, Any]] = []


def mark(event: str, **extra: Any) -> None:
    _LOG.append({"t": time.time(), "event": event, **extra})


# --------------------------------------------------------------------------- the sandbox, instrumented


def serve_sandbox(log_path: str, argv: list[str]) -> None:
    """`ferry sandbox serve ...` with BulkApi's ingest handlers wrapped to append events to ``log_path``."""
    from ferry.sandbox.salesforce import bulk as sb

    out = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def emit(event: str, **extra: Any) -> None:
        out.write(json.dumps({"t": time.time(), "side": "sandbox", "event": event, **extra}) + "\n")

    api = sb.BulkApi

    def wrap(name: str, describe: Any) -> None:
        original = getattr(api, name)

        def wrapper(self: Any, call: Any, p: dict[str, str]) -> Any:
            started = time.time()
            reply = original(self, call, p)
            emit(name, started=started, **describe(self, call, p, reply))
            return reply

        setattr(api, name, wrapper)

    def job_state(self: Any, _call: Any, p: dict[str, str], _reply: Any) -> dict[str, Any]:
        job = self.ingest_jobs.get(p.get("job", ""))
        return {"state": job.state, "processed": job.processed} if job else {}

    wrap("create_job", lambda self, call, p, reply: {"job": reply.body["id"]})
    wrap("upload", lambda self, call, p, reply: {"bytes": len(call.body)})
    wrap("patch_job", job_state)
    wrap("get_job", job_state)
    wrap("successful_results", lambda self, call, p, reply: {"bytes": len(reply.raw or b"")})
    wrap("failed_results", lambda self, call, p, reply: {"bytes": len(reply.raw or b"")})

    chunk = api._process_chunk_without_gc

    def chunk_wrapper(self: Any, job: Any, plan: Any, rows: list[list[str]], freeze: bool = False) -> None:
        if job.state == "InProgress" and job.processed == 0:
            emit("processing_started")
        started = time.time()
        chunk(self, job, plan, rows, freeze)
        emit("chunk_saved", started=started, rows=len(rows), processed=job.processed)

    api._process_chunk_without_gc = chunk_wrapper  # type: ignore[method-assign]
    process = api._process

    async def process_wrapper(self: Any, job: Any) -> None:
        await process(self, job)
        emit("job_terminal", state=job.state, processed=job.processed)

    api._process = process_wrapper  # type: ignore[method-assign]
    from ferry.cli.main import app

    sys.argv = ["ferry", *argv]
    app()


def start_sandbox(log_path: str, state: Path, seed: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    cmd = [sys.executable, str(HERE), "--serve-sandbox", log_path, "--", "sandbox", "serve", "salesforce",
           "--port", "0", "--json", "--state-dir", str(state), "--latency", "real", "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


# --------------------------------------------------------------------------- the tools, instrumented


def instrument_ferry() -> None:
    from ferry.connectors.salesforce import bulk, client

    request = client.SalesforceClient.request

    async def timed_request(self: Any, method: str, path: str, **kw: Any) -> Any:
        mark("send", call=f"{method} {path.rsplit('/', 1)[-1]}")
        response = await request(self, method, path, **kw)
        mark("answer", call=f"{method} {path.rsplit('/', 1)[-1]}", status=response.status_code)
        return response

    client.SalesforceClient.request = timed_request  # type: ignore[method-assign]
    stream = client.SalesforceClient.stream

    def timed_stream(self: Any, method: str, path: str, **kw: Any) -> Any:
        mark("send", call=f"{method} {path.rsplit('/', 1)[-1]} (streamed)")
        return stream(self, method, path, **kw)

    client.SalesforceClient.stream = timed_stream  # type: ignore[method-assign]
    body = bulk._CsvFeed.body

    async def timed_body(self: Any, max_bytes: int, counter: list[int]) -> Any:
        mark("csv_first_piece")
        pieces = 0
        async for piece in body(self, max_bytes, counter):
            pieces += 1
            yield piece
        mark("csv_last_piece", pieces=pieces, rows=counter[0])

    bulk._CsvFeed.body = timed_body  # type: ignore[method-assign]


def instrument_requests() -> None:
    import requests

    original = requests.Session.request

    def timed(self: Any, method: str, url: str, *a: Any, **kw: Any) -> Any:
        name = f"{method} {url.rsplit('/', 1)[-1].split('?')[0]}"
        mark("send", call=name)
        response = original(self, method, url, *a, **kw)
        mark("answer", call=name, status=response.status_code)
        return response

    requests.Session.request = timed  # type: ignore[method-assign]


async def run_ferry(info: dict[str, Any], prefix: str, n: int) -> int:
    from salesforce_connector import ferry_config

    from ferry.connectors.salesforce import SalesforceSink
    from ferry.core.results import JobSucceeded

    seen = 0
    async with SalesforceSink(ferry_config(info)) as sink:
        async for batch in sink.bulk_stream("Contact", EXT, chunks(prefix, n)):
            if not seen:
                mark("first_results")
            seen += batch.rows if isinstance(batch, JobSucceeded) else len(batch)
    mark("all_results", rows=seen)
    return seen


def run_ss(info: dict[str, Any], prefix: str, n: int, results: bool) -> int:
    sf = ss_client(info)
    mark("records_start")
    records = [r for part in chunks(prefix, n) for r in part]
    mark("records_built")
    seen = 0
    for job in sf.bulk2.Contact.upsert(records=records, external_id_field=EXT):
        mark("upsert_returned")
        if results:
            got = sf.bulk2.Contact.get_all_ingest_records(job["job_id"])
            seen += len(got["successfulRecords"]) + len(got["failedRecords"])
            mark("all_results", rows=seen)
        else:
            seen += int(job["numberRecordsProcessed"])
    return seen


def worker(tool: str, info: dict[str, Any], prefix: str, n: int) -> None:
    import asyncio

    mark("start")
    if tool == "ferry":
        instrument_ferry()
        asyncio.run(run_ferry(info, prefix, n))
    else:
        instrument_requests()
        run_ss(info, prefix, n, results=tool == "ss-results")
    mark("end")
    print(json.dumps(_LOG))


# --------------------------------------------------------------------------- driver


def show(tool: str, client_events: list[dict[str, Any]], server: list[dict[str, Any]]) -> dict[str, float]:
    t0 = client_events[0]["t"]
    end = client_events[-1]["t"]
    events = [dict(e, side=e.get("side", "client")) for e in client_events]
    events += [e for e in server if t0 <= e["t"] <= end + 0.05]
    print(f"\n== {tool}: {end - t0:.2f} s")
    for e in sorted(events, key=lambda e: e["t"]):
        detail = {k: v for k, v in e.items() if k not in ("t", "side", "event", "started")}
        took = f" (handler {e['t'] - e['started']:.2f} s)" if "started" in e else ""
        print(f"  {e['t'] - t0:7.2f}  {e['side']:7s}  {e['event']:20s} {detail}{took}")
    by = {e["event"]: e["t"] - t0 for e in events if e["side"] == "sandbox" and e["event"] != "get_job"}
    polls = [e for e in events if e["event"] == "get_job"]
    done = next((e["t"] - t0 for e in events if e["event"] == "job_terminal"), float("nan"))
    seen = next((p["t"] - t0 for p in polls if p.get("state") == "JobComplete"), float("nan"))
    summary = {"total": end - t0, "upload_received": by.get("upload", float("nan")),
               "closed": by.get("patch_job", float("nan")), "complete": done, "noticed": seen,
               "after_notice": end - t0 - seen, "polls": len(polls)}
    print("  summary: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tools", default="ferry,ss,ss-results")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sandbox's latency jitter")
    parser.add_argument("--serve-sandbox")
    parser.add_argument("--worker")
    parser.add_argument("--info")
    parser.add_argument("--prefix", default="")
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args()
    if args.serve_sandbox:
        serve_sandbox(args.serve_sandbox, args.rest)
        return
    if args.worker:
        worker(args.worker, json.loads(args.info), args.prefix, args.rows)
        return
    state = Path(tempfile.mkdtemp(prefix="ferry-timeline-"))
    log_path = str(state / "events.jsonl")
    proc, info = start_sandbox(log_path, state, args.seed)
    print(f"machine load {os.getloadavg()[0]:.1f}")
    totals: dict[str, list[dict[str, float]]] = {}
    try:
        for run in range(args.runs):
            for tool in args.tools.split(","):
                prefix = f"tl-{tool}-{run}-"
                out = subprocess.run(
                    [sys.executable, str(HERE), "--worker", tool, "--info", json.dumps(info), "--prefix", prefix,
                     "--rows", str(args.rows)], capture_output=True, text=True, check=True,
                )
                client_events = json.loads(out.stdout.strip().splitlines()[-1])
                server = [json.loads(line) for line in Path(log_path).read_text().splitlines()]
                totals.setdefault(tool, []).append(show(tool, client_events, server))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\nmachine load {os.getloadavg()[0]:.1f}")
    for tool, rows in totals.items():
        keys = rows[0].keys()
        print(f"{tool:11s} " + ", ".join(f"{k} {sum(r[k] for r in rows) / len(rows):.2f}" for k in keys))


if __name__ == "__main__":
    main()
