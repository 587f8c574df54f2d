"""What the API budget ledger costs: a call counted in the state DB before it is sent, vs counted in memory.

Run: .venv/bin/python bench/budget_ledger.py [--calls 400] [--rounds 4]

Two figures, each side by side in one process:
1. the guard alone: ``BudgetGuard.spend()`` backed by the SQLite ledger (on disk, WAL, a full 24 h window of
   1,440 minute buckets already in it: the worst case for the window sum) vs the in-memory guard;
2. end to end: single-record upserts (``Strategy.SINGLE``, one API call each) through ``SalesforceSink``
   against the Salesforce sandbox over HTTPS on loopback (latency off: the cheapest call there is, so the
   ledger's share is as large as it gets), with the ledger-backed guard vs the in-memory one, alternating
   rounds so that load drifts hit both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ferry.connectors.salesforce import SalesforceConfig, SalesforceSink
from ferry.connectors.salesforce.budget import BudgetGuard, pipeline_guard
from ferry.connectors.salesforce.config import parse_api_budget
from ferry.connectors.salesforce.strategy import Strategy
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.store import Store

EXT = "Shopify_Customer_Id__c"
SHARE = parse_api_budget(10_000_000)


def guard_alone(tmp: Path, calls: int) -> tuple[float, float]:
    store = Store(tmp / "guard.db")
    now = [time.time() - 86_340.0]
    ledger = pipeline_guard(SHARE, store, "bench", clock=lambda: now[0])
    for _ in range(1440):  # one call a minute for the last 24 h
        ledger.spend()
        now[0] += 60.0
    memory = BudgetGuard(SHARE)
    t = time.perf_counter()
    for _ in range(calls):
        ledger.spend()
    with_ledger = (time.perf_counter() - t) / calls
    t = time.perf_counter()
    for _ in range(calls):
        memory.spend()
    in_memory = (time.perf_counter() - t) / calls
    store.close()
    return with_ledger, in_memory


def _config(sandbox: SalesforceSandbox, url: str, ca_file: Path) -> SalesforceConfig:
    c = sandbox.credentials(url)
    return SalesforceConfig.model_validate(
        {
            "system": "salesforce", "login_url": c["login_url"], "client_id": c["client_id"], "auth": "jwt",
            "username": c["username"], "private_key_file": c["private_key_file"], "ca_file": str(ca_file),
            "api_version": c["api_version"], "api_budget": 10_000_000,
        }
    )


async def _upserts(config: SalesforceConfig, guard: BudgetGuard, calls: int, tag: str) -> float:
    async with SalesforceSink(config, budget=guard) as sink:
        await sink.upsert("Contact", EXT, [{EXT: f"{tag}-warm", "LastName": "W"}], Strategy.SINGLE)  # login
        t = time.perf_counter()
        for i in range(calls):
            await sink.upsert("Contact", EXT, [{EXT: f"{tag}-{i}", "LastName": "L"}], Strategy.SINGLE)
        return (time.perf_counter() - t) / calls


def end_to_end(tmp: Path, calls: int, rounds: int) -> dict[str, list[float]]:
    sandbox = SalesforceSandbox(tmp / "org")
    running = start_in_thread(sandbox.app, tmp / "org")
    store = Store(tmp / "e2e.db")
    out: dict[str, list[float]] = {"ledger": [], "memory": []}
    try:
        config = _config(sandbox, running.url, running.ca_file)
        for r in range(rounds):
            order = ("ledger", "memory") if r % 2 == 0 else ("memory", "ledger")
            for kind in order:
                guard = pipeline_guard(SHARE, store, "bench") if kind == "ledger" else BudgetGuard(SHARE)
                out[kind].append(asyncio.run(_upserts(config, guard, calls, f"{kind}{r}")))
    finally:
        running.stop()
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        led, mem = guard_alone(tmp, 5000)
        print(f"guard alone, per call: ledger {led * 1e6:.0f} us, in memory {mem * 1e6:.1f} us")
        e2e = end_to_end(tmp, args.calls, args.rounds)
        med: dict[str, Any] = {k: statistics.median(v) for k, v in e2e.items()}
        print(
            f"single-record upsert vs sandbox (loopback, latency off), median of {args.rounds} rounds x "
            f"{args.calls} calls: ledger {med['ledger'] * 1e3:.2f} ms/call, in memory {med['memory'] * 1e3:.2f} "
            f"ms/call, ratio {med['ledger'] / med['memory']:.3f}"
        )
        print("rounds (ms/call): " + ", ".join(f"{k} " + " ".join(f"{x * 1e3:.2f}" for x in v) for k, v in e2e.items()))


if __name__ == "__main__":
    main()
