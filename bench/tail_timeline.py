"""Where an end-to-end run's time after the last Shopify page goes: every Salesforce call and Bulk job on one axis.

Run: cd bench && PYTHONPATH=../src:. python tail_timeline.py [--orders 10000] [--shopify-api rest|graphql]

The same run as ``e2e.py --latency real --contenders ferry`` (a Shopify sandbox holding the generated store, an
empty org with the real latency profile), with two instruments: the Salesforce sandbox logs when each Bulk job
is created, uploaded, closed, starts processing (after the modelled queue), saves each chunk, turns terminal,
and each poll it answers (``bulk_timeline.serve_sandbox``); ferry runs in a child process with its Salesforce
calls (sent, answered, by object), each object's load (begun, ended) and the end of the reads marked. Times are
wall clock on one axis; the report starts at the end of the reads. Diagnostics, not a benchmark table.

Per Bulk job it splits the wait into what the org took (queue, processing) and what ferry added (before the
upload, between JobComplete and the poll that saw it, results and recording after it).
"""

from __future__ import annotations

import argparse
import atexit
import itertools
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

from harness.procs import contender_env, start_shopify  # noqa: E402

PIPELINE = HERE.parent.parent / "examples" / "shopify-to-salesforce.yml"
_LOG: list[dict[str, Any]] = []


def mark(event: str, **extra: Any) -> None:
    _LOG.append({"t": time.time(), "side": "ferry", "event": event, **extra})


# --------------------------------------------------------------------------- ferry, instrumented


def instrument_ferry() -> None:
    from ferry.connectors.salesforce import client
    from ferry.engine import loader, runner

    request = client.SalesforceClient.request

    async def timed_request(self: Any, method: str, path: str, **kw: Any) -> Any:
        label = kw.get("label", "")
        tail = "/".join(path.split("?")[0].rstrip("/").split("/")[-2:])
        mark("send", object=label, call=f"{method} {tail}")
        response = await request(self, method, path, **kw)
        extra: dict[str, Any] = {}
        if method == "POST" and path.rstrip("/").endswith("jobs/ingest"):
            extra["job"] = response.json().get("id")
        if method == "GET" and "jobs/ingest/" in path and path.count("/") and not path.endswith("Results"):
            body = response.json() if response.content else {}
            extra["state"] = body.get("state")
        mark("answer", object=label, call=f"{method} {tail}", status=response.status_code, **extra)
        return response

    client.SalesforceClient.request = timed_request  # type: ignore[method-assign]
    stream = client.SalesforceClient.stream

    def timed_stream(self: Any, method: str, path: str, **kw: Any) -> Any:
        tail = "/".join(path.split("?")[0].rstrip("/").split("/")[-2:])
        mark("stream", object=kw.get("label", ""), call=f"{method} {tail}")
        return stream(self, method, path, **kw)

    client.SalesforceClient.stream = timed_stream  # type: ignore[method-assign]
    load = loader.Loader.load
    parts = itertools.count(1)

    async def timed_load(self: Any, sink: Any, plan: Any, progress: Any, **kw: Any) -> None:
        select = kw.get("select")
        part = f"{plan.name}#{next(parts)}"
        rows = self.count(plan, select) if hasattr(self, "count") else self.store.outbox_count(self.pipeline, plan.name)
        mark("load_start", object=plan.name, part=part, rows=rows)
        await load(self, sink, plan, progress, **kw)
        mark("load_end", object=plan.name, part=part)

    loader.Loader.load = timed_load  # type: ignore[method-assign]
    read_ended = runner._Timing.read_ended

    def timed_read_ended(self: Any) -> None:
        mark("reads_end")
        read_ended(self)

    runner._Timing.read_ended = timed_read_ended  # type: ignore[method-assign]


def run_ferry(log_path: str, pipeline: str) -> None:
    instrument_ferry()
    atexit.register(lambda: Path(log_path).write_text("\n".join(json.dumps(e) for e in _LOG) + "\n"))
    from ferry.cli.main import app

    mark("start")
    sys.argv = ["ferry", "run", pipeline, "--json"]
    app()


# --------------------------------------------------------------------------- report


def report(events: list[dict[str, Any]]) -> None:
    events.sort(key=lambda e: e["t"])
    ferry = [e for e in events if e["side"] == "ferry"]
    t_end = next((e["t"] for e in ferry if e["event"] == "reads_end"), ferry[0]["t"])
    t_last = ferry[-1]["t"]
    loads = {e["part"]: e for e in ferry if e["event"] == "load_start"}
    ends = {e["part"]: e for e in ferry if e["event"] == "load_end"}
    jobs = {e["job"]: e["object"] for e in ferry if e.get("job")}
    print(f"reads ended at {t_end - ferry[0]['t']:.1f} s from ferry's start; last load ended "
          f"{max(e['t'] for e in ends.values()) - t_end:.1f} s after the reads")
    for part, start in sorted(loads.items(), key=lambda kv: kv[1]["t"]):
        name = start["object"]
        end = ends.get(part, {"t": t_last})
        print(f"\n== {part}: {start['rows']:,} rows, load {start['t'] - t_end:+.1f} -> {end['t'] - t_end:+.1f} s "
              f"({end['t'] - start['t']:.1f} s)")
        mine = [e for e in events if e.get("object") == name or jobs.get(e.get("job", "")) == name]
        for e in mine:
            if not start["t"] - 0.01 <= e["t"] <= end["t"] + 0.01:
                continue
            detail = {k: v for k, v in e.items() if k not in ("t", "side", "event", "object", "started")}
            print(f"  {e['t'] - t_end:+8.2f}  {e['side']:7s} {e['event']:18s} {detail}")
        job_summary(name, mine, start["t"], end["t"])


def job_summary(name: str, events: list[dict[str, Any]], start: float, end: float) -> None:
    """For a Bulk job: the org's own time (queue, processing) vs ferry's (before the close, after completion)."""
    def first(event: str, **match: Any) -> float | None:
        return next((e["t"] for e in events if e["event"] == event and all(e.get(k) == v for k, v in match.items())
                     and start - 0.01 <= e["t"] <= end + 0.01), None)

    closed = first("patch_job")
    began = first("processing_started")
    terminal = first("job_terminal")
    seen = first("get_job", state="JobComplete")
    if closed is None or terminal is None:
        calls = [e for e in events if e["event"] == "send" and start - 0.01 <= e["t"] <= end + 0.01]
        print(f"  summary: {len(calls)} calls (no Bulk job)")
        return
    polls = sum(1 for e in events if e["event"] == "get_job" and start - 0.01 <= e["t"] <= end + 0.01)
    parts = {
        "before close (create, upload)": closed - start,
        "org queue": (began or closed) - closed,
        "org processing": terminal - (began or closed),
        "done -> poll saw it": (seen or terminal) - terminal,
        "after the poll (results, recording)": end - (seen or terminal),
    }
    print(f"  summary ({polls} polls): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))


# --------------------------------------------------------------------------- driver


def serve_org(log_path: str, argv: list[str]) -> None:
    """`ferry sandbox serve salesforce ...` with the Bulk ingest handlers wrapped to log, by job, what happens."""
    from ferry.sandbox.salesforce import bulk as sb

    out = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    api = sb.BulkApi

    def emit(event: str, job: Any, **extra: Any) -> None:
        out.write(json.dumps({"t": time.time(), "side": "org", "event": event, "job": job.id if job else None,
                              **({"state": job.state, "processed": job.processed} if job else {}), **extra}) + "\n")

    def wrap(name: str) -> None:
        original = getattr(api, name)

        def wrapper(self: Any, call: Any, p: dict[str, str]) -> Any:
            reply = original(self, call, p)
            job_id = p.get("job") or (reply.body.get("id") if isinstance(reply.body, dict) else None)
            emit(name, self.ingest_jobs.get(job_id or ""))
            return reply

        setattr(api, name, wrapper)

    for name in ("create_job", "upload", "patch_job", "get_job", "successful_results", "failed_results"):
        wrap(name)
    chunk = api._process_chunk_without_gc

    def chunk_wrapper(self: Any, job: Any, plan: Any, rows: list[list[str]], freeze: bool = False) -> None:
        if job.processed == 0:
            emit("processing_started", job)
        chunk(self, job, plan, rows, freeze)
        emit("chunk_saved", job, rows=len(rows))

    api._process_chunk_without_gc = chunk_wrapper  # type: ignore[method-assign]
    process = api._process

    async def process_wrapper(self: Any, job: Any) -> None:
        await process(self, job)
        emit("job_terminal", job)

    api._process = process_wrapper  # type: ignore[method-assign]
    from ferry.cli.main import app

    sys.argv = ["ferry", *argv]
    app()


def start_org(log_path: str, state: Path, seed: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    cmd = [sys.executable, str(HERE), "--serve-org", log_path, "--", "sandbox", "serve", "salesforce", "--port", "0",
           "--json", "--state-dir", str(state), "--latency", "real", "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


class _Box:
    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--shopify-api", choices=("graphql", "rest"), default="rest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ferry-child", nargs=2, metavar=("LOG", "PIPELINE"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-org", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_org:
        serve_org(args.serve_org, args.rest)
        return
    if args.ferry_child:
        run_ferry(*args.ferry_child)
        return
    work = Path(tempfile.mkdtemp(prefix="ferry-tail-"))
    org_log, ferry_log = work / "org.jsonl", work / "ferry.jsonl"
    print(f"load average {os.getloadavg()[0]:.2f}; work dir {work}", flush=True)
    shop = start_shopify(work / "shopify", args.orders, "real", args.seed)
    try:
        org, info = start_org(str(org_log), work / "salesforce", args.seed)
        try:
            env = {**os.environ, **contender_env(shop, _Box(info)),  # type: ignore[arg-type]
                   "FERRY_HOME": str(work / "home"), "SHOPIFY_API": args.shopify_api}
            began = time.time()
            done = subprocess.run([sys.executable, str(HERE), "--ferry-child", str(ferry_log), str(PIPELINE)],
                                  env=env, capture_output=True, text=True)
            print(f"ferry exited {done.returncode} after {time.time() - began:.1f} s", flush=True)
            if done.returncode not in (0, 3, 4):
                print(done.stderr[-3000:], file=sys.stderr)
            stats = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
            print("wall s per phase: " + ", ".join(f"{k} {v:.1f}" for k, v in stats.get("wall_seconds", {}).items()))
            print("calls: " + ", ".join(f"{k} {o['api_calls']} ({o['strategy']})"
                                        for k, o in stats.get("objects", {}).items()))
        finally:
            org.terminate()
            org.wait(timeout=20)
    finally:
        shop.stop()
    events = [json.loads(x) for x in ferry_log.read_text().splitlines() if x.strip()]
    events += [json.loads(x) for x in org_log.read_text().splitlines() if x.strip()]
    report(events)


if __name__ == "__main__":
    main()
