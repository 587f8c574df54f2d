"""`ferry serve` SIGKILLed under a steady webhook stream with duplicated, reordered and dropped deliveries, then
started again: Salesforce ends equal to the shop's final state, with no duplicate records, and nothing the
server acknowledged is lost (a kill after the 2xx finds the event staged; a kill before it gets the sender's
retry; a dropped delivery is caught by the schedule's sweep).

The short version runs in CI; the long one (more events, several kills) is marked slow."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.cli.demo import demo_env
from ferry.engine.runner import Runner
from ferry.sandbox.tls import ensure_tls

from .world import PIPELINE_FILE, REPO, World, free_port, make_world, stop_world, wait_for

FAULTS = {"seed": 7, "rules": [
    {"kind": "duplicate", "rate": 0.2},
    {"kind": "reorder", "rate": 0.2, "hold": 2, "max_hold_ms": 300},
    {"kind": "drop", "rate": 0.05},
]}


class ServeProcess:
    """`ferry serve` as a child process on a fixed port (a restart keeps the webhook address)."""

    def __init__(self, pipeline: Path, env: dict[str, str], port: int, tls: Any) -> None:
        self.cmd = [sys.executable, "-m", "ferry", "serve", str(pipeline), "--port", str(port), "--json",
                    "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file), "--window-ms", "100"]
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"ferry serve did not start (exit {self.proc.poll()})"
        self.info = json.loads(line)
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or ()], daemon=True).start()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, customers=40, products=5, orders=10)
    try:
        yield w
    finally:
        stop_world(w)


def _pipeline_file(world: World) -> Path:
    """The example as it ships: webhooks on with SHOPIFY_WEBHOOK_SECRET, the schedule from FERRY_SCHEDULE."""
    return PIPELINE_FILE


def _env(world: World) -> dict[str, str]:
    shop_info = {**world.shop.credentials(world.shop_run.url), "ca_file": str(world.shop_run.ca_file)}
    org_info = {**world.org.credentials(world.org_run.url), "ca_file": str(world.org_run.ca_file)}
    return {**os.environ, **demo_env(shop_info, org_info), "SHOPIFY_WEBHOOK_SECRET": world.shop.webhook_secret,
            "FERRY_SCHEDULE": "* * * * * */2",
            "FERRY_HOME": str(world.tmp), "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}


def _stream(world: World, events: int, rate: float, done: threading.Event, last: list[float]) -> None:
    customers = world.shop_records("customers")
    for i in range(events):
        c = customers[i % len(customers)]
        world.put("customers", c["id"], {"first_name": f"V{i}"})
        last[:] = [time.time()]
        time.sleep(1 / rate)
    done.set()


def _diff(world: World, keys: set[str]) -> list[str]:
    """Customers (of ``keys``: those the backfill wrote; the others are dead letters) whose Contact differs."""
    shop = {str(c["id"]): c.get("first_name") for c in world.shop_records("customers") if str(c["id"]) in keys}
    contacts = world.sf_records("Contact")
    org = {str(r["Shopify_Customer_Id__c"]): r.get("FirstName") for r in contacts}
    return [f"{k}: shop {v!r}, org {org.get(k)!r}" for k, v in shop.items() if (v or None) != (org.get(k) or None)]


@pytest.mark.parametrize("events,rate,kills", [
    pytest.param(90, 30.0, 1, id="short"),
    pytest.param(600, 40.0, 4, id="long", marks=pytest.mark.slow),
])
def test_sigkill_under_a_steady_stream_loses_nothing(world: World, events: int, rate: float, kills: int) -> None:
    assert asyncio.run(Runner(world.spec, world.store).run()).status == "succeeded"  # the backfill
    written = {str(r["Shopify_Customer_Id__c"]) for r in world.sf_records("Contact")}
    contacts_before = len(written)
    assert world.shop_http.post("/__sandbox/webhooks/faults", json=FAULTS).status_code == 200
    server = ServeProcess(_pipeline_file(world), _env(world), free_port(), ensure_tls(world.tmp))
    server.start()
    done, last = threading.Event(), [time.time()]
    stream = threading.Thread(target=_stream, args=(world, events, rate, done, last), daemon=True)
    stream.start()
    span = events / rate
    for _k in range(kills):
        time.sleep(span / (kills + 1))
        server.kill()  # mid-stream: acks in flight, a micro-batch maybe half-loaded
        time.sleep(0.3)
        server.start()
    assert done.wait(span * 4 + 60), "the stream did not finish"
    stream.join()
    finished = time.time()

    def converged() -> bool:
        pending = [d for d in world.deliveries() if d["state"] in ("pending", "held", "sending")]
        name = world.spec.name
        swept = any(r.origin == "schedule" and r.status == "succeeded" and r.finished_at
                    and r.started_at > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(finished))
                    for r in world.store.list_runs(name, 50))
        diff = _diff(world, written)
        state["why"] = f"pending={len(pending)} swept={swept} diff={diff[:3]} runs=" + str(
            [(r.origin, r.status, r.started_at[11:19]) for r in world.store.list_runs(name, 6)])
        return not pending and swept and not diff

    state: dict[str, str] = {}

    try:
        wait_for(converged, 90, "Salesforce to equal the shop")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {state.get('why')}") from None
    finally:
        code = server.terminate()
    assert code == 128 + signal.SIGTERM
    contacts = world.sf_records("Contact")
    keys = [str(r["Shopify_Customer_Id__c"]) for r in contacts]
    assert len(keys) == len(set(keys)) >= contacts_before, "duplicate Contacts"
    # New ones are customers the backfill dead-lettered whose edit made them valid: never one the shop lacks.
    assert set(keys) - written <= {str(c["id"]) for c in world.shop_records("customers")}
    assert _diff(world, written) == []
    # The kills mattered: deliveries met a dead server and were retried; duplicates came and were dropped.
    retried = [d for d in world.deliveries() if sum(1 for a in d["attempts"] if not a["copy"]) > 1]
    assert retried, "no delivery needed a retry: the kill missed the stream"
    assert any(d["faults"] for d in world.deliveries())
