"""``ferry worker``: one process of a distributed deployment. It takes work items from the bus (FERRY_BUS_URL)
and does them against the shared state (FERRY_STATE_URL, PostgreSQL) with the engine's own pieces
(``ferry.engine.distributed.LoadWork``). SIGTERM / SIGINT: stop taking items, finish the ones in hand, exit 0.
A worker killed outright leaves its items unacknowledged (the bus delivers them again after the ack wait) and its
outbox claims leased (the lease runs out after the same time), so another worker or the next round takes them."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from ferry.errors import ConfigError

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


def shared_store() -> Any:
    """The configured store, refused when it is the embedded SQLite file: workers on several machines (or
    processes) must share one state."""
    from ferry.store.factory import configured_state_url, open_store

    url = configured_state_url()
    if url.kind != "postgresql":
        raise ConfigError(
            "ferry worker needs a shared state store: set FERRY_STATE_URL=postgresql://... (docs/distributed.md)"
        )
    return open_store(url)


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
    from ferry.bus.work import EventBatch, decode
    from ferry.core.bus import BusMessage
    from ferry.engine.distributed import LoadWork
    from ferry.engine.eventwork import EventWork

    # The outbox claims are the real guard against double work; the dedup store only spares this process a
    # redelivery it already finished (lease = ack wait: a dead worker's rows free up when its items come back).
    dedup = MemoryDedup()
    work = LoadWork(specs, store, lease_seconds=settings.ack_wait)
    # `ferry serve`'s events (docs/serve.md)
    events = EventWork(specs, store, lease_seconds=settings.ack_wait, partitions=settings.partitions)

    async def handle(message: BusMessage) -> None:
        item = decode(message.data)
        if isinstance(item, EventBatch):
            await events.submit(item)
        else:
            await work(message)

    try:
        async with JetStreamBus(settings, dedup) as bus:
            await bus.setup()
            log.info("worker.start", pipelines=sorted(specs), concurrency=settings.max_in_flight)
            consumer = WorkConsumer(bus, handle, StoreDeadLetters(store), dedup=dedup, sweep=bus.sweep_exhausted)
            await consumer.run(stop)
    finally:
        await work.close()
        await events.close()
    log.info("worker.stop", rows=work.done_rows, events=events.done_records)
    return work.done_rows + events.done_records


def serve_until_signalled(specs: dict[str, Any], store: Any, settings: Any) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await run_worker(specs, store, settings, stop)

    return asyncio.run(main())
