"""`ferry serve` embedded against `ferry serve` distributed (+ 1 and 2 `ferry worker`s), same stream, same run:
events/s sustained and source change -> visible in Salesforce latency.

    .venv/bin/python bench/events_distributed.py [--rate 200] [--seconds 10] [--latency off|real] [--modes embedded,1,2]

The Shopify sandbox runs in this process (bucket opened wide), one Salesforce sandbox is a child process, and each
mode gets its own state: SQLite for the embedded serve, a fresh database on a PostgreSQL server of its own plus its
own nats-server for the distributed ones (free ports, temp dirs). Every mode is backfilled first (`ferry run`) and
serves on the same port (the shop's one subscription stays valid), then edits a different set of customers at
``--rate`` per second for ``--seconds`` (bench/events.py's ``phase``: one `PUT customers/ID.json` per event, the
Contact's SystemModstamp as the moment it is visible). Printed per mode: the achieved edit rate, events, lost (not
visible in 60 s), ack p50/p99, visible p50/p95/p99, sustained events/s (events / first edit -> last visible) and
drain (last edit -> last visible), and Salesforce calls per 1,000 events.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "bench")]

from events import phase, stamp_epoch  # noqa: E402
from tests.bus.natsserver import NatsServer, require_nats_server  # noqa: E402
from tests.store.postgres_server import start_server  # noqa: E402

from ferry.cli.demo import demo_env  # noqa: E402
from ferry.cli.sandboxes import start_sandbox  # noqa: E402
from ferry.sandbox.serve import start_in_thread  # noqa: E402
from ferry.sandbox.shopify import ShopifySandbox  # noqa: E402
from ferry.sandbox.tls import ensure_tls  # noqa: E402
from ferry.store.postgres import migrate  # noqa: E402

PIPELINE = ROOT / "examples" / "shopify-to-salesforce.yml"
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(env: dict[str, str], port: int, tls: Any, window_ms: int, log: Path) -> subprocess.Popen[str]:
    serve = subprocess.Popen(
        [sys.executable, "-m", "ferry", "serve", str(PIPELINE), "--port", str(port), "--json", "--no-schedules",
         "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file), "--window-ms", str(window_ms)],
        env=env, stdout=subprocess.PIPE, text=True, stderr=log.open("w"))
    assert serve.stdout is not None
    line = serve.stdout.readline()
    assert line, f"ferry serve did not start: {log.read_text()[-2000:]}"
    threading.Thread(target=lambda: [None for _ in serve.stdout or ()], daemon=True).start()
    return serve


def cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(procs: list[subprocess.Popen[Any]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)


def sustained(batch: list[dict[str, Any]], started: float, org_http: httpx.Client, marker: str) -> dict[str, float]:
    """Events per second from the first edit to the last change visible in the org (the phase has waited for
    every change already)."""
    keys = {str(c["id"]) for c in batch}
    stamps = [stamp_epoch(r["SystemModstamp"]) for r in org_http.get("/__sandbox/records/Contact").json()
              if str(r.get("Shopify_Customer_Id__c")) in keys and str(r.get("FirstName") or "").startswith(marker)]
    if not stamps:
        return {"events_per_s": float("nan"), "span_s": float("nan")}
    last = max(stamps)
    return {"events_per_s": len(stamps) / max(1e-9, last - started), "span_s": last - started}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--latency", default="off", choices=["off", "real"])
    ap.add_argument("--window-ms", type=int, default=150)
    ap.add_argument("--modes", default="embedded,1,2")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = args.modes.split(",")
    count = int(args.rate * args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-events-dist-"))
    print(f"logs and state in {tmp}", flush=True)
    shop = ShopifySandbox(tmp, seed=3, customers=int(count * len(modes) * 1.3) + 20, products=5, orders=5,
                          bucket_size=1_000_000, leak_rate=1_000_000.0)
    shop_run = start_in_thread(shop.app, tmp)
    org = start_sandbox("salesforce", tmp / "org", ["--latency", args.latency])
    tls = ensure_tls(tmp)
    shop_info = {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)}
    base = {**os.environ, **demo_env(shop_info, org.info), "SHOPIFY_WEBHOOK_SECRET": shop.webhook_secret}
    pg = nats = None
    port = free_port()
    results = []
    try:
        if any(m != "embedded" for m in modes):
            pg = start_server()
            nats = NatsServer(require_nats_server(), tmp / "nats")
            nats.start()
        with httpx.Client(base_url=shop_run.url, verify=str(tls.ca_file), timeout=30,
                          headers={"X-Shopify-Access-Token": shop.access_token}) as shop_http, \
                httpx.Client(base_url=org.url, verify=str(org.info["ca_file"]), timeout=60) as org_http:
            customers: list[dict[str, Any]] = []
            offset = 0
            for mode in modes:
                env = {**base, "FERRY_HOME": str(tmp / f"home-{mode}")}
                if mode == "embedded":
                    env["FERRY_STATE_URL"] = f"sqlite:///{tmp / 'embedded.db'}"
                else:
                    assert pg is not None and nats is not None
                    url = pg.fresh_database()
                    migrate(url)
                    env |= {"FERRY_STATE_URL": url, "FERRY_BUS_URL": nats.url}
                backfill = subprocess.run([sys.executable, "-m", "ferry", "run", str(PIPELINE), "--embedded",
                                           "--json"], env=env, capture_output=True, text=True, check=False)
                assert backfill.returncode in (0, 3, 4), backfill.stderr[-2000:]
                if not customers:  # the ones the backfill wrote (invalid ones are dead letters: never visible)
                    written = {str(r.get("Shopify_Customer_Id__c"))
                               for r in org_http.get("/__sandbox/records/Contact").json()}
                    customers = [c for c in shop_http.get("/__sandbox/records/customers").json()
                                 if str(c["id"]) in written]
                workers = [] if mode == "embedded" else [
                    subprocess.Popen([sys.executable, "-m", "ferry", *os.environ.get("BENCH_FERRY_FLAGS", "").split(),
                                      "worker", str(PIPELINE), "--concurrency",
                                      str(args.concurrency)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=(tmp / f"worker-{mode}-{i}.log").open("wb"))
                    for i in range(int(mode))]
                serve = start_serve(env, port, tls, args.window_ms, tmp / f"serve-{mode}.log")
                try:
                    time.sleep(2.0)  # workers connected, subscriptions made
                    batch = customers[offset:offset + count]
                    offset += count
                    started = time.time()
                    cpu0 = {p.pid: cpu(p.pid) for p in [serve, *workers]}
                    r = phase(args.rate, batch, shop_http, org_http, lambda: {})
                    # CPU seconds per 1,000 events of ferry's processes (serve + workers): the cost, apart from
                    # what the shared machine's load does to the wall-clock figures.
                    used = sum(cpu(pid) - before for pid, before in cpu0.items())
                    label = "embedded serve" if mode == "embedded" else f"serve + {mode} worker(s)"
                    results.append({"mode": label, **r, "sustained": sustained(batch, started, org_http,
                                                                              f"R{args.rate}"),
                                    "ferry_cpu_s_per_1000": used * 1000 / max(1, r["events"]),
                                    "load_average": os.getloadavg()[0]})
                    print(line(results[-1]), flush=True)
                finally:
                    stop([serve])
                    stop(workers)
        if args.json:
            print(json.dumps({"rate": args.rate, "seconds": args.seconds, "latency": args.latency,
                              "window_ms": args.window_ms, "modes": results}))
    finally:
        org.stop()
        shop_run.stop()
        if nats is not None:
            nats.kill()
        if pg is not None:
            pg.cleanup()


def line(r: dict[str, Any]) -> str:
    v, a, s = r["visible_ms"], r["ack_ms"], r["sustained"]
    return (f"{r['mode']:<22} rate {r['achieved_rate']:6.1f}/s  events {r['events']:>5}  lost {r['lost']:>3}  "
            f"ack p50/p99 {a['p50']:.1f}/{a['p99']:.1f} ms  visible p50/p95/p99 {v['p50']:.0f}/{v['p95']:.0f}/"
            f"{v['p99']:.0f} ms  sustained {s['events_per_s']:.1f} ev/s over {s['span_s']:.1f} s  "
            f"SF calls/1000 {r['sf_calls_per_1000']:.0f}  ferry CPU {r['ferry_cpu_s_per_1000']:.1f} s/1000  "
            f"load {r['load_average']:.1f}")


if __name__ == "__main__":
    main()
