"""``ferry worker``: one process of a distributed deployment. It takes work items from the bus (FERRY_BUS_URL) and does
them against the shared state (FERRY_STATE_URL, PostgreSQL) with the engine's own pieces
(``ferry.engine.distributed.LoadWork``; reads and remote jobs: ``ferry.engine.distjobs``). SIGTERM / SIGINT: stop
taking items, finish the ones in hand, exit 0. A worker killed outright leaves its items unacknowledged (the bus
delivers them again after the ack wait) and its outbox claims leased (the lease runs out after the same time), so
another worker or the next round takes them."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from ferry.errors import ConfigError, StateError

log = structlog.get_logger("ferry.worker")


def worker_settings(concurrency: int | None) -> Any:
    """The bus settings from the environment, with ``--concurrency`` as the items this process holds at once."""
    from ferry.bus.config import bus_settings
    from ferry.core.bus import BusConfigError

    try:
        settings = bus_settings()
    except BusConfigError as exc:
        raise ConfigError(str(exc)) from None
    if settings is None:
        raise ConfigError("ferry worker needs the bus: set FERRY_BUS_URL=nats://HOST:4222 (docs/distributed.md)")
    if concurrency is not None:
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be 1 or more, not {concurrency}")
        settings = settings.model_copy(update={"max_in_flight": concurrency})
    return settings


STORE_WAIT_SECONDS = 120.0  # a worker started while PostgreSQL restarts waits for it this long, then exits 6


def store_connections(concurrency: int) -> int:
    """PostgreSQL connections for a worker holding ``concurrency`` items: an item spends most of its time on the
    target's API, and a few short store transactions around it, so half as many connections as items (plus the
    ledger's and the heartbeat's) keep items from queueing for one. The default pool (4) held 16 items to ~4
    store calls at a time: claims waited 0.2-0.8 s each (bench/RESULTS.md, h-distscale)."""
    return concurrency // 2 + 2


def shared_store(concurrency: int | None = None, wait: float = STORE_WAIT_SECONDS) -> Any:
    """The configured store, refused when it is the embedded SQLite file: workers on several machines (or
    processes) must share one state. A database that cannot be reached yet (restarting, or started after the
    workers) is waited for up to ``wait`` seconds: a service manager restarting the worker would only spin."""
    from ferry.store.factory import configured_state_url, open_store

    url = configured_state_url()
    if url.kind != "postgresql":
        raise ConfigError(
            "ferry worker needs a shared state store: set FERRY_STATE_URL=postgresql://... (docs/distributed.md)"
        )
    connections = store_connections(concurrency) if concurrency else None
    deadline = time.monotonic() + wait
    while True:
        try:
            return open_store(url, connections=connections)
        except StateError as exc:
            if not getattr(exc, "retryable", False) or time.monotonic() > deadline:
                raise
            log.warning("worker.waiting_for_state", error=str(exc))
            time.sleep(1.0)


def budget_block() -> int:
    """``FERRY_BUDGET_BLOCK``: API calls a worker reserves at once from the shared ledger (1 = call by call)."""
    from ferry.engine.budget_blocks import DEFAULT_BLOCK

    raw = os.environ.get("FERRY_BUDGET_BLOCK", "").strip()
    if not raw:
        return DEFAULT_BLOCK
    try:
        block = int(raw)
    except ValueError:
        block = 0
    if block < 1:
        raise ConfigError(f"FERRY_BUDGET_BLOCK must be a whole number of calls, 1 or more, not {raw!r}")
    return block


def load_specs(paths: Sequence[Path]) -> dict[str, Any]:
    from ferry.engine.pipeline import load_pipeline

    if not paths:
        raise ConfigError("ferry worker needs the pipeline files it may be given work for: ferry worker PIPELINE.yml")
    specs = {}
    for path in paths:
        spec = load_pipeline(path)
        specs[spec.name] = spec
    return specs


async def run_worker(specs: dict[str, Any], store: Any, settings: Any, stop: asyncio.Event) -> int:
    """Consume until ``stop`` is set; returns how many outbox rows this worker sent."""
    from ferry.bus.consume import WorkConsumer
    from ferry.bus.dedup import MemoryDedup
    from ferry.bus.jetstream import JetStreamBus
    from ferry.bus.letters import StoreDeadLetters
    from ferry.bus.work import EventBatch, JobLoad, ReadStream, decode
    from ferry.core.bus import BusMessage
    from ferry.engine.distjobs import ReadAndJobWork
    from ferry.engine.distributed import LoadWork
    from ferry.engine.eventwork import EventWork

    # The outbox claims are the real guard against double work; the dedup store only spares this process a
    # redelivery it already finished (lease = ack wait: a dead worker's rows free up when its items come back).
    dedup = MemoryDedup()
    work = LoadWork(specs, store, lease_seconds=settings.ack_wait, budget_block=budget_block())
    # `ferry serve`'s events (docs/serve.md)
    events = EventWork(specs, store, lease_seconds=settings.ack_wait, partitions=settings.partitions)

    # reads and remote-job loads of `ferry run --distributed` (engine/distjobs.py)
    reads_and_jobs = ReadAndJobWork(specs, store, work)

    async def handle(message: BusMessage) -> None:
        item = decode(message.data)
        if isinstance(item, EventBatch):
            await events.submit(item)
        elif isinstance(item, ReadStream):
            await reads_and_jobs.read(item)
        elif isinstance(item, JobLoad):
            await reads_and_jobs.job(item)
        else:
            await work(message)

    try:
        async with JetStreamBus(settings, dedup) as bus:
            await bus.setup()
            log.info("worker.start", pipelines=sorted(specs), concurrency=settings.max_in_flight)
            consumer = WorkConsumer(bus, handle, StoreDeadLetters(store), dedup=dedup, sweep=bus.sweep_exhausted)
            await consumer.run(stop)
    finally:
        await reads_and_jobs.close()
        await work.close()
        await events.close()
    log.info("worker.stop", rows=work.done_rows, events=events.done_records, read=reads_and_jobs.read_records,
             job_rows=reads_and_jobs.job_records)
    return work.done_rows + events.done_records + reads_and_jobs.job_records


def serve_until_signalled(specs: dict[str, Any], store: Any, settings: Any) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Store calls run in threads (asyncio.to_thread): the default executor has min(32, cores + 4) threads,
        # 6 on a 2-core machine, fewer than the items a worker holds. One thread per item in flight.
        loop.set_default_executor(ThreadPoolExecutor(settings.max_in_flight + 2, thread_name_prefix="ferry-store"))
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await run_worker(specs, store, settings, stop)

    return asyncio.run(main())
