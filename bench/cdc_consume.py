"""Salesforce Change Data Capture consumed by ferry: latency and API calls per 1,000 change events.

    .venv/bin/python bench/cdc_consume.py [--rate 50,200] [--seconds 10] [--latency off|real] [--linger S] [--json]

The Salesforce sandbox runs in its own process (`ferry sandbox serve salesforce`). Writers create Contacts at
a steady rate over REST (one change event each); `SalesforceChangeSource` follows `/data/ContactChangeEvent`
and each page is staged with its state in the SQLite store, as `ferry serve` does. Per event: the latency from
the org's commit (`commitTimestamp`) to the page being durable; per run: the Salesforce calls the consumer made
(SOQL read-backs; the CometD long polls are listed apart: the org does not count them as API requests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from ferry.cli.sandboxes import start_sandbox
from ferry.connectors.salesforce import SalesforceConfig
from ferry.connectors.salesforce.cdc import ChangeStreams, SalesforceChangeSource
from ferry.connectors.salesforce.client import SalesforceClient
from ferry.core.events import CHANGE_KEY
from ferry.core.ports import StagedRow
from ferry.store.sqlite import Store


def config_of(info: dict[str, Any]) -> SalesforceConfig:
    return SalesforceConfig.model_validate({
        "system": "salesforce", "login_url": info["login_url"], "client_id": info["client_id"], "auth": "jwt",
        "username": info["username"], "private_key_file": info["private_key_file"], "ca_file": info["ca_file"],
        "api_version": info["api_version"]})


async def produce(config: SalesforceConfig, rate: float, seconds: float, created: list[str]) -> None:
    """`rate` creates a second for `seconds`, from a few concurrent writers (one REST call each)."""
    async with asyncio.timeout(seconds * 3 + 30):
        client = SalesforceClient(config)
        try:
            total = int(rate * seconds)
            start = time.monotonic()

            async def one(i: int) -> None:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                body = await client.json("POST", client.data_path("/sobjects/Contact"), label="bench",
                                         json={"LastName": f"Bench {i}", "Email": f"b{i}@example.com"})
                created.append(str(body["id"]))

            await asyncio.gather(*(one(i) for i in range(total)))
        finally:
            await client.aclose()


async def measure(config: SalesforceConfig, rate: float, seconds: float, linger: float) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp())
    store = Store(state_dir / "state.db")
    run_id = store.start_run("bench-cdc")
    created: list[str] = []
    latencies: list[float] = []
    seen: set[str] = set()
    pages = 0
    streams = ChangeStreams(objects={"Contact": ["LastName", "Email"]}, linger_seconds=linger)
    async with SalesforceChangeSource(config, streams) as source:
        events = source.events("Contact", None)
        producer: asyncio.Task[None] | None = None
        try:
            async for page in events:
                rows = [StagedRow(str(r["Id"]), str(r["SystemModstamp"]), orjson.dumps(r)) for r in page.records]
                store.stage("bench-cdc", "Contact", run_id, rows, page.state)
                durable = time.time()
                pages += 1
                for r in page.records:
                    committed = r[CHANGE_KEY]["committed_at"]
                    if committed and r["Id"] not in seen:
                        seen.add(r["Id"])
                        stamp = time.mktime(time.strptime(committed[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                        latencies.append((durable - stamp - int(committed[20:23]) / 1000) * 1000)
                if producer is None:
                    producer = asyncio.create_task(produce(config, rate, seconds, created))
                if producer.done() and set(created) <= seen:
                    break
        finally:
            await events.aclose()
            if producer is not None:
                await producer
        calls = sum(source.client.api_calls.values())
    store.close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"rate": rate, "seconds": seconds, "linger": linger, "events": len(created), "staged": len(seen),
            "pages": pages,
            "salesforce_calls": calls, "calls_per_1000_events": round(calls * 1000 / max(1, len(created)), 1),
            "latency_ms": {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)},
            "lost": len(set(created) - seen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", default="50,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency", default="off")
    parser.add_argument("--linger", type=float, default=ChangeStreams.model_fields["linger_seconds"].default)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sandbox = start_sandbox("salesforce", Path(tempfile.mkdtemp()), ["--latency", args.latency])
    try:
        config = config_of(sandbox.info)
        results = [asyncio.run(measure(config, float(r), args.seconds, args.linger)) for r in args.rate.split(",")]
    finally:
        sandbox.stop()
    for r in results:
        r["sandbox_latency"] = args.latency
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['rate']:>5.0f}/s x {r['seconds']:.0f}s latency={args.latency} linger={r['linger']}s: "
              f"{r['events']} events, "
              f"{r['pages']} pages, {r['salesforce_calls']} calls ({r['calls_per_1000_events']}/1,000), commit→durable "
              f"p50 {r['latency_ms']['p50']} ms p95 {r['latency_ms']['p95']} ms p99 {r['latency_ms']['p99']} ms, "
              f"lost {r['lost']}", file=sys.stdout)


if __name__ == "__main__":
    main()
