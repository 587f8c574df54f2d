"""`ferry serve` under a steady stream of source changes: webhook ack latency, source change -> visible in the
target latency, and Salesforce calls per 1,000 events.

Run: .venv/bin/python bench/events.py [--rates 50,200] [--seconds 10] [--latency off|real] [--window-ms MS]
     [--realtime '{"max_wait_ms": 5000, "max_records": 1000, "records_per_call": 1000}']

``--realtime`` runs the example pipeline with that ``realtime:`` block (its micro-batch settings; unset: the
defaults); ``--window-ms`` overrides its ``max_wait_ms`` from the command line as ``ferry serve --window-ms``.

The Shopify sandbox runs in this process (its leaky bucket opened wide, so the stream is not throttled by the
source API), the Salesforce sandbox and `ferry serve` are child processes, all on 127.0.0.1 over HTTPS. After a
backfill (`ferry run`), each rate phase edits a different customer per event (`PUT customers/ID.json`) at a
steady pace; the sandbox delivers the signed `customers/update` webhooks to `ferry serve`, which loads them
into Salesforce. Measured per phase:

- ack: each delivery's first successful attempt as the sender timed it (request out -> 2xx in), p50/p95/p99;
- change -> visible: from just before the edit's PUT to the Contact's SystemModstamp in Salesforce (the org
  stamps the write in ms; one machine, one clock), p50/p95/p99 over every event;
- Salesforce calls (its admin stats) per 1,000 events, and any event not visible within 60 s (lost);
- in ferry: the share of Contact writes done within 250 ms / 1 s of the delivery reaching `ferry serve` (its
  `ferry_end_to_end_seconds` histogram), which leaves out the time a delivery waited in the sender's queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ferry.cli.demo import demo_env  # noqa: E402
from ferry.cli.sandboxes import start_sandbox  # noqa: E402
from ferry.sandbox.serve import start_in_thread  # noqa: E402
from ferry.sandbox.shopify import ShopifySandbox  # noqa: E402
from ferry.sandbox.tls import ensure_tls  # noqa: E402

API = "/admin/api/2025-07"
PIPELINE = REPO / "examples" / "shopify-to-salesforce.yml"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def stamp_epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="50,200")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--latency", default="off", choices=["off", "real"])
    ap.add_argument("--window-ms", type=int, default=None)
    ap.add_argument("--sender-concurrency", type=int, default=None,
                    help="webhook deliveries the Shopify sandbox keeps in flight (default: the sandbox's, 1)")
    ap.add_argument("--realtime", type=json.loads, default=None, help="the pipeline's realtime: block, as JSON")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-log", type=Path, help="keep ferry serve's stderr (its JSON log) in this file")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    per_phase = [int(r * args.seconds) for r in rates]
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-events-"))
    shop = ShopifySandbox(tmp, seed=3, customers=int(sum(per_phase) * 1.25) + 10, products=5, orders=5,
                          bucket_size=1_000_000, leak_rate=1_000_000.0)
    shop_run = start_in_thread(shop.app, tmp)
    if args.sender_concurrency is not None:
        shop.webhooks.dispatcher.configure({"concurrency": args.sender_concurrency})
    org = start_sandbox("salesforce", tmp, ["--latency", args.latency])
    pipeline = PIPELINE
    if args.realtime is not None:
        pipeline = tmp / PIPELINE.name  # the example with a realtime: block (JSON is YAML)
        pipeline.write_text(PIPELINE.read_text() + f"\nrealtime: {json.dumps(args.realtime)}\n")
    tls = ensure_tls(tmp)
    shop_info = {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)}
    env = {**os.environ, **demo_env(shop_info, org.info), "FERRY_HOME": str(tmp / "home"),
           "PYTHONPATH": str(REPO / "src")}
    serve: subprocess.Popen[str] | None = None
    try:
        backfill = subprocess.run([sys.executable, "-m", "ferry", "run", str(pipeline), "--json"], env=env,
                                  capture_output=True, text=True, check=False)
        assert backfill.returncode in (0, 3, 4), (backfill.returncode, backfill.stderr[-2000:], backfill.stdout[-500:])
        serve = subprocess.Popen(
            [sys.executable, "-m", "ferry", "serve", str(pipeline), "--port", "0", "--json", "--no-schedules",
             "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file),
             *(["--window-ms", str(args.window_ms)] if args.window_ms is not None else [])],
            env=env, stdout=subprocess.PIPE, text=True,
            stderr=args.serve_log.open("w") if args.serve_log else subprocess.DEVNULL)
        assert serve.stdout is not None
        info = json.loads(serve.stdout.readline())
        threading.Thread(target=lambda: [None for _ in serve.stdout or ()], daemon=True).start()
        # Customers the backfill wrote (the generated store's invalid ones are dead letters: never visible).
        written = {str(r.get("Shopify_Customer_Id__c")) for r in httpx.get(
            f"{org.url}/__sandbox/records/Contact", verify=str(org.info["ca_file"]), timeout=60).json()}
        customers = [c for c in httpx.get(f"{shop_run.url}/__sandbox/records/customers", verify=str(tls.ca_file),
                                          timeout=60).json() if str(c["id"]) in written]
        results = []
        offset = 0
        metrics_http = httpx.Client(base_url=info["url"], verify=str(tls.ca_file), timeout=30)

        def serve_metrics() -> dict[float, float]:
            return contact_e2e_buckets(metrics_http.get("/metrics/").text)

        def serve_health() -> dict[str, Any]:
            return dict(metrics_http.get("/healthz").json())

        with httpx.Client(base_url=shop_run.url, verify=str(tls.ca_file), timeout=30,
                          headers={"X-Shopify-Access-Token": shop.access_token}) as shop_http, \
                httpx.Client(base_url=org.url, verify=str(org.info["ca_file"]), timeout=60) as org_http:
            for rate, count in zip(rates, per_phase, strict=True):
                batch = customers[offset:offset + count]
                offset += count
                results.append(phase(rate, batch, shop_http, org_http, serve_metrics))
                if results[-1]["lost"]:  # what to look at when events go missing (deliveries, batches)
                    results[-1]["diagnosis"] = {"serve": serve_health(), "deliveries": results[-1]["deliveries"],
                                                "serve_alive": serve.poll() is None}
                    print(json.dumps(results[-1]["diagnosis"]), file=sys.stderr)
        out = {"latency": args.latency, "window_ms": args.window_ms, "realtime": args.realtime,
               "sender_concurrency": shop.webhooks.dispatcher.concurrency, "seconds": args.seconds,
               "serve": info["url"], "phases": results}
        if args.json:
            print(json.dumps(out))
        else:
            print(f"latency {args.latency}, --window-ms {args.window_ms}, realtime {args.realtime}, sender "
                  f"concurrency {shop.webhooks.dispatcher.concurrency}, "
                  f"{args.seconds:g} s per rate")
            print("rate/s  achieved  events  lost  ack p50/p95/p99 ms   visible p50/p95/p99 ms   SF calls  per 1,000"
                  "   in ferry <=250ms/<=1s")
            for r in results:
                print(f"{r['rate']:>6} {r['achieved_rate']:>9.1f} {r['events']:>7} {r['lost']:>5}  "
                      f"{r['ack_ms']['p50']:>6.1f}/{r['ack_ms']['p95']:.1f}/{r['ack_ms']['p99']:.1f}   "
                      f"{r['visible_ms']['p50']:>8.0f}/{r['visible_ms']['p95']:.0f}/{r['visible_ms']['p99']:.0f}"
                      f"   {r['sf_calls']:>8} {r['sf_calls_per_1000']:>9.1f}"
                      f"   {r['arrival_to_written']['le_250ms']:.1%}/{r['arrival_to_written']['le_1000ms']:.1%}")
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(60)
        org.stop()
        shop_run.stop()


def contact_e2e_buckets(text: str) -> dict[float, float]:
    """``ferry_end_to_end_seconds`` of Contact (ferry's own clock: the delivery's arrival -> its batch written),
    cumulative count per bucket bound."""
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("ferry_end_to_end_seconds_bucket{") and 'object="Contact"' in line:
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def within_ferry(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Share of the phase's events written within 250 ms / 1 s of reaching ferry serve (what the sender's own
    queue adds is not in it)."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    share = {f"le_{int(b * 1000)}ms": (after.get(b, 0.0) - before.get(b, 0.0)) / total if total else float("nan")
             for b in (0.25, 1.0)}
    return {**share, "n": total}


def phase(rate: int, batch: list[dict[str, Any]], shop_http: httpx.Client, org_http: httpx.Client,
          serve_metrics: Callable[[], dict[float, float]]) -> dict[str, Any]:
    shop_http.delete("/__sandbox/webhooks/deliveries")
    e2e_before = serve_metrics()
    stats_before = org_http.get("/__sandbox/stats").json()
    calls_before = stats_before["api_calls"]
    changed: dict[str, float] = {}
    marker = f"R{rate}"
    start = time.perf_counter()
    wall0 = time.time()
    for i, customer in enumerate(batch):
        due = start + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        key = str(customer["id"])
        changed[key] = time.time()
        resp = shop_http.put(f"{API}/customers/{key}.json", json={"customer": {"id": customer["id"],
                                                                               "first_name": f"{marker}-{i}"}})
        resp.raise_for_status()
    achieved = len(batch) / max(1e-9, time.time() - wall0)
    visible: dict[str, float] = {}
    deadline = time.time() + 60
    while time.time() < deadline and len(visible) < len(changed):
        for r in org_http.get("/__sandbox/records/Contact").json():
            key = str(r.get("Shopify_Customer_Id__c"))
            if key in changed and key not in visible and str(r.get("FirstName") or "").startswith(marker):
                visible[key] = stamp_epoch(r["SystemModstamp"])
        time.sleep(0.25)
    stats_after = org_http.get("/__sandbox/stats").json()
    calls = stats_after["api_calls"] - calls_before
    by_endpoint = {k: n - stats_before["by_endpoint"].get(k, 0) for k, n in stats_after["by_endpoint"].items()
                   if n != stats_before["by_endpoint"].get(k, 0)}
    in_ferry = within_ferry(e2e_before, serve_metrics())
    deliveries = shop_http.get("/__sandbox/webhooks/deliveries").json()["deliveries"]
    acks = [next(a["duration_ms"] for a in d["attempts"] if a["status"] and 200 <= a["status"] < 300)
            for d in deliveries if any(a["status"] and 200 <= a["status"] < 300 for a in d["attempts"])]
    lat = [(visible[k] - changed[k]) * 1000 for k in visible]
    states: dict[str, int] = {}
    for d in deliveries:
        states[d["state"]] = states.get(d["state"], 0) + 1
    return {
        "rate": rate, "achieved_rate": achieved, "events": len(changed), "lost": len(changed) - len(visible),
        "ack_ms": {"p50": pct(acks, 50), "p95": pct(acks, 95), "p99": pct(acks, 99), "n": len(acks)},
        "visible_ms": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
                       "mean": statistics.fmean(lat) if lat else float("nan")},
        "sf_calls": calls, "sf_calls_by_endpoint": by_endpoint,
        "sf_calls_per_1000": calls * 1000 / max(1, len(changed)),
        "arrival_to_written": in_ferry, "deliveries": states,
    }


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
