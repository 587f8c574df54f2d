"""``ferry serve`` as one object: the HTTP server, each pipeline's inbox, event processor and schedule, the
subscriptions made on start, the dedup keys pruned after their retention, and a clean stop.

Stop (SIGTERM/SIGINT): new requests get 503 and the listening socket closes; requests under way finish (their
events are durable before their 2xx); each processor finishes its micro-batch and starts no other; a
schedule's sweep under way is cancelled (marked interrupted: what it committed stays, the next run resumes
it). SIGKILL loses nothing either: an acknowledged event is staged, and the next start plans what is staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import APIRouter

from ferry.connectors.registry import open_events, open_source, open_webhooks
from ferry.engine.pipeline import PipelineSpec
from ferry.errors import ConfigError
from ferry.serve.app import ServeState, build_app
from ferry.serve.dispatch import Dispatcher
from ferry.serve.feed import Feed
from ferry.serve.inbox import DEFAULT_MAX_BODY_BYTES, Inbox
from ferry.serve.processor import Processor
from ferry.serve.registration import Registration, register_all, webhook_address
from ferry.serve.schedule import Schedule
from ferry.store import Store

log = structlog.get_logger("ferry.serve")

PRUNE_EVERY = 600.0  # seconds between prunes of remembered delivery keys
STOP_GRACE = 20.0  # seconds a processor gets to finish its micro-batch on stop


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None  # what the sources deliver to; default: this server's own URL
    register: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    window: float | None = None  # seconds a micro-batch gathers; None: each pipeline's realtime.max_wait_ms
    dedup_hours: float = 24.0  # >= 4: Shopify retries for 4 hours
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    schedules: bool = True
    # Distributed mode (docs/distributed.md): events go on this bus for `ferry worker`s instead of being loaded
    # here (a JetStreamSettings; the store must then be the shared PostgreSQL one).
    bus: Any = None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM/SIGINT (drain, then stop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class _Pipeline:
    spec: PipelineSpec
    inbox: Inbox | None
    processor: Processor | None
    schedule: Schedule | None
    feed: Feed | None = None  # the source's change stream (``events:``), staged for the same processor
    dispatcher: Dispatcher | None = None  # distributed mode: staged events handed to the bus, not the processor


class Service:
    def __init__(
        self, specs: Sequence[PipelineSpec], store: Store, options: ServeOptions, routers: Sequence[APIRouter] = ()
    ) -> None:
        if options.dedup_hours < 4:
            raise ConfigError("--dedup-hours must be at least 4: Shopify retries a delivery for 4 hours")
        if (options.tls_cert is None) != (options.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"a pipeline is given twice: {', '.join(sorted(n for n in names if names.count(n) > 1))}")
        self.store = store
        self.options = options
        self.run_lock: dict[str, asyncio.Lock] = {}
        self.pipelines = [self._pipeline(spec) for spec in specs]
        if not any(p.inbox or p.schedule or p.feed for p in self.pipelines):
            raise ConfigError(
                "nothing to serve: no pipeline has webhooks (a `webhooks:` block with its secret set, e.g. "
                "SHOPIFY_WEBHOOK_SECRET), a change stream (`events: cdc` in a Salesforce source) or a "
                "`schedule:` (docs/serve.md)"
            )
        inboxes = {(p.spec.name, p.inbox.receiver.system): p.inbox for p in self.pipelines if p.inbox}
        self.state = ServeState(inboxes, options.max_body_bytes)
        self.state.probes["events"] = self._event_figures
        self.state.checks["change_feeds"] = self._feed_problems
        self.state.checks["event_batches"] = self._batch_problems
        self.app = build_app(self.state, routers)
        self.signal: int | None = None
        self._stop = asyncio.Event()
        self._server: _Server | None = None
        self.url: str | None = None
        self.registered: dict[str, Any] = {}

    def _pipeline(self, spec: PipelineSpec) -> _Pipeline:
        lock = self.run_lock.setdefault(spec.name, asyncio.Lock())
        inbox = processor = feed = dispatcher = None
        hooks = spec.webhooks is not None and spec.webhooks.active and spec.webhooks.secret is not None
        events = open_events(spec.source)
        if hooks or events is not None:
            source = open_source(spec.source)  # entered by the processor; inbox and feed only call identify()
            if self.options.bus is not None:
                dispatcher = Dispatcher(spec.name, self.store, self.options.bus)
            else:
                processor = Processor(spec, self.store, source, lock, window=self.options.window)
        notify = dispatcher.notify if dispatcher is not None else processor.notify if processor is not None else None
        if hooks and spec.webhooks is not None and spec.webhooks.secret is not None and notify is not None:
            receiver = open_webhooks(spec.source, spec.webhooks.secret.get_secret_value(), spec.webhooks.origin)
            inbox = Inbox(spec.name, receiver, source, self.store, frozenset(source.streams), notify,
                          on_rows=dispatcher.add if dispatcher is not None else None)
        if events is not None and notify is not None:
            feed = Feed(spec.name, events, source, self.store, notify)
        schedule = Schedule(spec, self.store, lock) if spec.schedule and self.options.schedules else None
        return _Pipeline(spec, inbox, processor, schedule, feed, dispatcher)

    def _event_figures(self) -> dict[str, Any]:
        handed = {p.spec.name: {"handed_to_bus": p.dispatcher.published, "swept": p.dispatcher.swept,
                                "bus_failures": p.dispatcher.failures}
                  for p in self.pipelines if p.dispatcher is not None}
        return handed | {p.spec.name: {"batches": p.processor.batches, "failed_batches": p.processor.failures,
                              "last_batch_at": p.processor.last_batch_at,
                              **({"change_pages": p.feed.pages, "change_records": p.feed.records,
                                  "change_failures": p.feed.failures} if p.feed else {})}
                for p in self.pipelines if p.processor is not None}

    def _feed_problems(self) -> list[dict[str, Any]]:
        """Change streams failing now (Salesforce unreachable, credentials refused), with the reason."""
        return [{"pipeline": p.spec.name, **problem.as_dict()}
                for p in self.pipelines if p.feed is not None for problem in list(p.feed.problems.values())]

    def _batch_problems(self) -> list[dict[str, Any]]:
        """Pipelines whose last micro-batch failed (the target down, ...): events wait, staged."""
        return [{"pipeline": p.spec.name, "reason": p.processor.problem}
                for p in self.pipelines if p.processor is not None and p.processor.problem is not None]

    @property
    def public_url(self) -> str:
        assert self.url is not None, "the server has not started"
        return self.options.public_url or self.url

    def webhook_urls(self) -> dict[str, str]:
        return {p.spec.name: webhook_address(self.public_url, p.spec.name, p.inbox.receiver.system)
                for p in self.pipelines if p.inbox}

    def request_stop(self, signum: int | None = None) -> None:
        """Stop accepting (503), then stop (``run`` returns). Safe to call from a signal handler on the loop."""
        if self.signal is None and signum is not None:
            self.signal = signum
        self.state.draining = True
        if self._server is not None:
            self._server.should_exit = True
        self._stop.set()

    async def run(self, sock: socket.socket | None = None, on_ready: Callable[[Service], None] | None = None) -> int:
        """Serve until ``request_stop`` (or SIGTERM/SIGINT); returns the exit code: 0, or 128 + the signal."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(sig, self.request_stop, sig)
        sock = sock or _bind(self.options.host, self.options.port)
        tls = self.options.tls_cert is not None
        host, port = sock.getsockname()[:2]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3,
            ssl_certfile=str(self.options.tls_cert) if tls else None,
            ssl_keyfile=str(self.options.tls_key) if tls else None,
        )
        self._server = _Server(config)
        server_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not server_task.done():
            await asyncio.sleep(0.01)
        if server_task.done():
            await server_task  # raises what stopped it
            return 1
        tasks = self._start_workers()
        if self.options.register:
            regs = [Registration(p.spec.name, p.inbox.receiver, p.inbox.source.streams)
                    for p in self.pipelines if p.inbox]
            self.registered = await register_all(self.public_url, regs)
        self.state.health["registered"] = self.registered
        log.info("serve.ready", url=self.url, public_url=self.public_url,
                 pipelines=[p.spec.name for p in self.pipelines])
        if on_ready is not None:
            on_ready(self)
        stop_wait = asyncio.create_task(self._stop.wait())
        await asyncio.wait([server_task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        await self._shutdown(server_task, tasks)
        stop_wait.cancel()
        return 128 + self.signal if self.signal else 0

    def _start_workers(self) -> _Workers:
        self.state.health["pipelines"] = {p.spec.name: {"webhooks": p.inbox is not None,
                                                        "events": p.feed is not None,
                                                        "schedule": p.spec.schedule} for p in self.pipelines}
        workers = _Workers(self)
        workers.start()
        return workers

    async def _shutdown(self, server_task: asyncio.Task[None], workers: _Workers) -> None:
        self.state.draining = True
        assert self._server is not None
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await server_task  # in-flight requests finish: their events are staged before their answer
        await asyncio.to_thread(workers.stop)
        log.info("serve.stopped", signal=self.signal)

    async def _prune_forever(self) -> None:
        while True:
            before = (datetime.now(UTC) - timedelta(hours=self.options.dedup_hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            pruned = await asyncio.to_thread(self.store.prune_deliveries, before)
            if pruned:
                log.info("serve.pruned_deliveries", count=pruned)
            await asyncio.sleep(PRUNE_EVERY)


class _Workers:
    """The event processors, schedules and the dedup-key pruner, on their own thread and event loop.

    A micro-batch or a sweep runs long stretches of synchronous work (planning, SQLite): on the server's loop it
    would hold every webhook's answer (the sender's queue, Shopify's 5 s timeout). Here the server's loop only
    authenticates and stages; the GIL is shared, but no request waits for a whole batch."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="ferry-serve-workers", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._ready.wait()

    def stop(self) -> None:
        """Each processor finishes its micro-batch (up to STOP_GRACE), the rest is cancelled; returns when done."""
        if self.loop is not None and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
        self.thread.join(STOP_GRACE + 30)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        svc = self.service
        tasks: dict[str, asyncio.Task[None]] = {"prune": asyncio.create_task(svc._prune_forever())}
        for p in svc.pipelines:
            if p.processor is not None:
                tasks[f"events {p.spec.name}"] = asyncio.create_task(p.processor.run())
            if p.dispatcher is not None:
                tasks[f"events {p.spec.name}"] = asyncio.create_task(p.dispatcher.run())
            if p.schedule is not None:
                tasks[f"schedule {p.spec.name}"] = asyncio.create_task(p.schedule.run())
            if p.feed is not None:
                tasks[f"feed {p.spec.name}"] = asyncio.create_task(p.feed.run())
        self._ready.set()
        await self._stopping.wait()
        for p in svc.pipelines:
            if p.processor is not None:
                p.processor.stop()
            if p.dispatcher is not None:
                p.dispatcher.stop()  # what is pending goes out first; the rest is staged (the sweep's)
        for name, task in tasks.items():
            if name.startswith("events "):
                try:
                    await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
                except TimeoutError:
                    task.cancel()  # the micro-batch is marked interrupted; what it committed stays
                except Exception as exc:
                    log.error("serve.worker_failed", worker=name, error=str(exc))
            else:
                task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock
