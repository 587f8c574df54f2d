"""`ferry serve` in distributed mode (own PostgreSQL, own nats-server): the shop sandbox's webhooks, duplicated and
reordered, go into serve, which stages them in PostgreSQL and hands them to the bus; two `ferry worker`
processes plan and send them, one is SIGKILLed mid-stream. Salesforce ends equal to a clean batch run of the shop's
final state, nothing twice; a key's events go to one partition, in order.

The SIGKILL test takes ~30-40 s (child workers, a backfill, a clean batch run to compare with): it is marked slow
(`make chaos`/`-m slow`); the default run has the short version (one worker on a thread, no backfill)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from ferry.bus.config import bus_settings
from ferry.bus.jetstream import JetStreamBus
from ferry.bus.work import EventBatch, decode
from ferry.cli.demo import demo_env
from ferry.core.bus import key_partition
from ferry.core.ports import StagedRow
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.serve.dispatch import Dispatcher
from ferry.store import Store
from ferry.store.postgres import PostgresStore, migrate
from tests.bus.natsserver import NatsServer
from tests.distributed.test_workers import _once_per_key, _same_org
from tests.serve.world import PIPELINE_FILE, World, make_world, start_serve, stop_world, wait_for
from tests.store.postgres_server import PostgresServer
from tests.store.test_postgres_e2e import _org

PIPELINE = "shopify-to-salesforce"
FAULTS = {"seed": 11, "rules": [
    {"kind": "duplicate", "rate": 0.2},
    {"kind": "reorder", "rate": 0.3, "hold": 2, "max_hold_ms": 300},
]}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, customers=16, products=4, orders=6)
    try:
        yield w
    finally:
        stop_world(w)


def _info(world: World) -> tuple[dict[str, str], dict[str, str]]:
    shop = {**world.shop.credentials(world.shop_run.url), "ca_file": str(world.shop_run.ca_file)}
    org = {**world.org.credentials(world.org_run.url), "ca_file": str(world.org_run.ca_file)}
    return shop, org


def _env(world: World, pg_url: str, nats: NatsServer) -> dict[str, str]:
    shop, org = _info(world)
    return {**os.environ, **demo_env(shop, org), "SHOPIFY_WEBHOOK_SECRET": world.shop.webhook_secret,
            "FERRY_HOME": str(world.tmp / "home"), "FERRY_STATE_URL": pg_url, "FERRY_BUS_URL": nats.url,
            "FERRY_BUS_ACK_WAIT": "2", "FERRY_LOG_LEVEL": "info", "PYTHONPATH": os.pathsep.join(sys.path)}


def _start_workers(n: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        out = (logs / f"worker-{i}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "ferry", "worker", str(PIPELINE_FILE),
                                       "--concurrency", "16"], env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    return [p.wait(timeout=60) for p in procs]


def _stream(world: World, edits: int, rate: float, done: threading.Event, orders_too: bool = True) -> None:
    """Edits of few keys, many times each (a key's versions race each other), customers and orders."""
    customers = world.shop_records("customers")[:4]
    orders = world.shop_records("orders")[:2]
    for i in range(edits):
        if orders_too and i % 4 == 3:
            o = orders[i % len(orders)]
            world.put("orders", o["id"], {"note": f"note {i}"})
        else:
            c = customers[i % len(customers)]
            world.put("customers", c["id"], {"first_name": f"V{i}", "last_name": f"L{i}"})
        time.sleep(1 / rate)
    done.set()


def _scalar(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _diff(world: World) -> list[str]:
    shop = {str(c["id"]): (c.get("first_name"), c.get("last_name")) for c in world.shop_records("customers")}
    org = {str(r["Shopify_Customer_Id__c"]): (r.get("FirstName"), r.get("LastName"))
           for r in world.sf_records("Contact")}
    notes = {str(o["id"]): o.get("note") for o in world.shop_records("orders")}
    org_notes = {str(r["Shopify_Order_Id__c"]): r.get("Description") for r in world.sf_records("Order")}
    return ([f"customer {k}: shop {v}, org {org.get(k)}" for k, v in shop.items() if k in org and v != org[k]]
            + [f"order {k}: shop {v!r:.40}, org {org_notes.get(k)!r:.40}" for k, v in notes.items()
               if k in org_notes and str(v).startswith("note ") and v != org_notes[k]])  # the orders edited


def _clean_batch_org(world: World) -> dict[str, list[dict[str, Any]]]:
    """A fresh org filled by one embedded batch run of the shop's state now."""
    org = SalesforceSandbox(world.tmp / "org-clean")
    run = start_in_thread(org.app, world.tmp / "org-clean")
    try:
        shop, _ = _info(world)
        info = {**org.credentials(run.url), "ca_file": str(run.ca_file)}
        spec = load_pipeline(PIPELINE_FILE, demo_env(shop, info))
        store = Store(world.tmp / "clean.db")
        try:
            assert asyncio.run(Runner(spec, store).run()).status == "succeeded"
        finally:
            store.close()
        return _org(SimpleNamespace(url=run.url, info={"ca_file": str(run.ca_file)}))  # type: ignore[arg-type]
    finally:
        run.stop()


class InProcessWorker:
    """`ferry worker`'s loop (``run_worker``) on a thread of this process: the short test's worker, without the
    seconds a child interpreter takes to start."""

    def __init__(self, world: World, url: str, settings: Any) -> None:
        from ferry.cli.worker import run_worker

        self.store = PostgresStore(url)
        self.stopping = threading.Event()
        self.sent: list[int] = []

        async def main() -> None:
            stop = asyncio.Event()

            async def watch() -> None:
                while not self.stopping.is_set():
                    await asyncio.sleep(0.05)
                stop.set()

            watcher = asyncio.create_task(watch())
            self.sent.append(await run_worker({world.spec.name: world.spec}, self.store, settings, stop))
            await watcher

        self.thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self.thread.start()

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(60)
        self.store.close()
        return self.sent[0] if self.sent else -1


def test_webhooks_through_distributed_serve_and_a_worker_short(
    world: World, pg_server: PostgresServer, nats_server: NatsServer
) -> None:
    """The short version CI runs by default: no backfill, one worker on a thread, 40 duplicated and reordered
    customer edits of 4 keys: every Contact and Account at the shop's final state, once, nothing left staged."""
    url = pg_server.fresh_database()
    migrate(url)
    store = PostgresStore(url)
    settings = bus_settings({"FERRY_BUS_URL": nats_server.url, "FERRY_BUS_ACK_WAIT": "2",
                             "FERRY_BUS_DRAIN_TIMEOUT": "1"})
    worker = InProcessWorker(world, url, settings)
    serve = start_serve([world.spec], store, world.serve_options(bus=settings))
    try:
        assert world.shop_http.post("/__sandbox/webhooks/faults", json=FAULTS).status_code == 200
        done = threading.Event()
        _stream(world, 40, 40.0, done, orders_too=False)
        edited = {str(c["id"]) for c in world.shop_records("customers")[:4]}
        state: dict[str, Any] = {}

        def converged() -> bool:
            pending = [d for d in world.deliveries() if d["state"] in ("pending", "held", "sending")]
            staged, queued = _scalar(url, "SELECT COUNT(*) FROM staging"), _scalar(url, "SELECT COUNT(*) FROM outbox")
            have = {str(r["Shopify_Customer_Id__c"]) for r in world.sf_records("Contact")}
            state["why"] = f"pending={len(pending)} staged={staged} queued={queued} diff={_diff(world)[:3]}"
            return not pending and not staged and not queued and edited <= have and not _diff(world)

        try:
            wait_for(converged, 30, "Salesforce to equal the shop")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {state.get('why')}") from None
        for obj in ("Account", "Contact"):
            keys = [str(r["Shopify_Customer_Id__c"]) for r in world.sf_records(obj)]
            assert sorted(keys) == sorted(set(keys)) and set(keys) == edited, (obj, keys)
        assert any(d["faults"] for d in world.deliveries())
        # A late delivery of an older version (a new delivery id: not a duplicate) changes nothing: latest wins.
        current = world.shop_records("customers")[0]
        body = orjson.dumps({**current, "first_name": "Stale", "updated_at": "2001-01-01T00:00:00-05:00"})
        headers = world.signed(body, topic="customers/update", webhook_id="late-older-1")
        with httpx.Client(base_url=serve.url, verify=str(world.shop_run.ca_file), timeout=30) as client:
            assert client.post(f"/webhooks/{world.spec.name}/shopify", content=body, headers=headers).status_code == 200
        wait_for(lambda: _scalar(url, "SELECT COUNT(*) FROM runs WHERE status = 'running'") == 0
                 and _scalar(url, "SELECT COUNT(*) FROM staging") == 0, 10, "the late delivery planned")
        assert _diff(world) == []
    finally:
        worker.stopping.set()  # both stop at once (each waits out its connections' grace)
        serve.stop()
        assert worker.stop() > 0
        store.close()


@pytest.mark.slow
def test_webhooks_through_distributed_serve_and_two_workers_one_killed(
    world: World, pg_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = pg_server.fresh_database()
    migrate(url)
    store = PostgresStore(url)
    env = _env(world, url, nats_server)
    workers = _start_workers(2, env, tmp_path)
    serve = None
    try:
        assert asyncio.run(Runner(world.spec, store).run()).status == "succeeded"  # the backfill, embedded
        before = _scalar(url, "SELECT COUNT(*) FROM runs")
        assert world.shop_http.post("/__sandbox/webhooks/faults", json=FAULTS).status_code == 200
        serve = start_serve([world.spec], store, world.serve_options(bus=bus_settings(env)))
        done = threading.Event()
        stream = threading.Thread(target=_stream, args=(world, 80, 40.0, done), daemon=True)
        stream.start()
        # SIGKILL a worker while it holds staged events or outbox rows (a live lease), mid-stream.
        victim = None
        deadline = time.monotonic() + 20
        while victim is None and time.monotonic() < deadline:
            owners = {r for (r,) in psycopg.connect(url).execute(
                "SELECT owner FROM staging WHERE lease_until > now() UNION "
                "SELECT owner FROM outbox WHERE lease_until > now()").fetchall() if r}
            pids = {int(o.split(":")[1]) for o in owners}
            victim = next((w for w in workers if w.pid in pids), None)
            time.sleep(0.01)
        assert victim is not None, "no worker ever held a lease"
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        assert done.wait(60), "the stream did not finish"
        state: dict[str, Any] = {}

        def converged() -> bool:
            pending = [d for d in world.deliveries() if d["state"] in ("pending", "held", "sending")]
            staged = _scalar(url, "SELECT COUNT(*) FROM staging")
            queued = _scalar(url, "SELECT COUNT(*) FROM outbox")
            state["why"] = f"pending={len(pending)} staged={staged} queued={queued} diff={_diff(world)[:3]}"
            return not pending and not staged and not queued and not _diff(world)

        try:
            wait_for(converged, 60, "Salesforce to equal the shop")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {state.get('why')}") from None
        assert serve.stop() == 0
        serve = None
        got = _org(SimpleNamespace(url=world.org_run.url, info={"ca_file": str(world.org_run.ca_file)}))  # type: ignore[arg-type]
        _once_per_key(got)
        _same_org(got, _clean_batch_org(world))
        # Both workers ran micro-batches (runs of origin webhook, one per batch, named by their pid), and the
        # webhooks were really duplicated and reordered on the way.
        with psycopg.connect(url) as conn:
            pids = {r[0] for r in conn.execute(
                "SELECT DISTINCT pid FROM runs WHERE origin = 'webhook' AND id > %s", (before,)).fetchall()}
        assert {w.pid for w in workers} <= pids, (pids, [w.pid for w in workers])
        assert any(d["faults"] for d in world.deliveries())
    finally:
        if serve is not None:
            serve.stop()
        _stop(workers)
        store.close()


def test_one_keys_events_go_to_one_partition_in_order(
    pg_server: PostgresServer, nats_server: NatsServer
) -> None:
    """The dispatcher's items, read back from the stream: each key in exactly one partition, its versions there in
    the order they were staged, whatever the other keys do."""
    url = pg_server.fresh_database()
    migrate(url)
    store = PostgresStore(url)
    settings = bus_settings({"FERRY_BUS_URL": nats_server.url, "FERRY_BUS_PARTITIONS": "4"})
    assert settings is not None

    # A delivery a serve process staged and acknowledged, then died before handing it over: the next dispatcher
    # hands it over when it starts.
    assert store.accept_delivery("p", "died-before-publish", "customers", [StagedRow("orphan", "v000", b"{}")])

    async def main() -> list[tuple[str, EventBatch]]:
        dispatcher = Dispatcher("p", store, settings, window=0.005, sweep_every=3600)
        task = asyncio.create_task(dispatcher.run())
        for v in range(30):  # 30 rounds: every key gets its next version, handed over in rounds of arrivals
            dispatcher.add("customers", [StagedRow(f"k{k}", f"v{v:03d}", b"{}") for k in range(12)])
            await asyncio.sleep(0.002 if v % 3 else 0.02)
        while dispatcher.published < 361:
            await asyncio.sleep(0.05)
        dispatcher.stop()
        await task
        out = []
        async with JetStreamBus(settings) as bus:  # read the stream by sequence: no consumer of our own
            info = await bus.js.stream_info(settings.stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await bus.js.get_msg(settings.stream, seq)
                assert msg.data is not None and msg.subject is not None
                item = decode(msg.data)
                assert isinstance(item, EventBatch)
                out.append((msg.subject, item))
        return out

    try:
        items = asyncio.run(main())
    finally:
        store.close()
    seen: dict[str, list[str]] = {}
    subjects: dict[str, set[str]] = {}
    for subject, item in items:
        for stream, key, version in item.refs:
            assert stream == "customers"
            seen.setdefault(key, []).append(version)
            subjects.setdefault(key, set()).add(subject)
            assert subject.endswith(f".{key_partition(key, 4)}")
    assert seen.pop("orphan") == ["v000"]
    assert sorted(seen) == sorted(f"k{k}" for k in range(12))
    assert all(len(s) == 1 for s in subjects.values()), subjects  # one partition per key
    assert all(v == sorted(v) and len(v) == 30 for v in seen.values()), seen  # in order, none lost or twice
    assert len({s for s, _ in items}) > 1  # the keys did spread over partitions


def test_two_serve_processes_behind_a_balancer_take_a_delivery_once(
    world: World, pg_server: PostgresServer, nats_server: NatsServer
) -> None:
    """The same signed delivery (the sender's retry landing on the other process) reaches two serve processes
    sharing the state: one stages it and hands it to the bus, the other answers 200 and stores nothing."""
    url = pg_server.fresh_database()
    migrate(url)
    store = PostgresStore(url)
    settings = bus_settings({"FERRY_BUS_URL": nats_server.url})
    servers = [start_serve([world.spec], store, world.serve_options(register=False, bus=settings)) for _ in range(2)]
    try:
        raw = dict(world.shop_records("customers")[0])
        body = orjson.dumps({**raw, "first_name": "Once"})
        headers = world.signed(body, topic="customers/update", webhook_id="lb-retry-1")
        path = f"/webhooks/{world.spec.name}/shopify"
        answers = []
        for server in (*servers, servers[0]):
            with httpx.Client(base_url=server.url, verify=str(world.shop_run.ca_file), timeout=30) as client:
                answers.append(client.post(path, content=body, headers=headers).status_code)
        assert answers == [200, 200, 200]
        inboxes = [s.service.state.inboxes[(world.spec.name, "shopify")].counts for s in servers]
        assert sum(c.get("staged", 0) for c in inboxes) == 1, inboxes
        assert sum(c.get("duplicate", 0) for c in inboxes) == 2, inboxes
        assert _scalar(url, "SELECT COUNT(*) FROM staging") == 1
        handed = [s.service._event_figures()[world.spec.name]["handed_to_bus"] for s in servers]
        wait_for(lambda: sum(s.service._event_figures()[world.spec.name]["handed_to_bus"] for s in servers) >= 1,
                 10, "the delivery handed to the bus")
        assert sum(s.service._event_figures()[world.spec.name]["handed_to_bus"] for s in servers) == 1, handed
    finally:
        for s in servers:
            s.stop()
        store.close()
