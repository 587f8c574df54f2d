"""The work bus on NATS JetStream (nats-py): the adapter behind ``FERRY_BUS_URL=nats://...``.

Layout (docs/bus.md has the why of each number):

- stream ``FERRY_WORK``: subjects ``ferry.work.>``, WorkQueue retention (an acked item is deleted), file storage,
  ``Nats-Msg-Id`` dedup over ``duplicate_window``, no age or count limit (un-consumed work is never evicted) but a
  byte limit with DiscardNew, so a full stream refuses publishes (``BusFull``) instead of dropping work;
- one durable pull consumer per partition (``work-p<N>``, filter ``ferry.work.*.*.<N>``), explicit ack, ack wait,
  ``max_deliver`` and ``max_ack_pending`` (1 = strict order per partition, hence per key);
- stream ``FERRY_WORK_EXHAUSTED``: keeps the server's MAX_DELIVERIES advisories for the work stream, so an item
  whose every delivery timed out (its workers died) is found and dead-lettered by ``sweep_exhausted`` even when
  no process was listening when the server gave up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from pydantic import BaseModel, Field, model_validator

from ferry.core.bus import (
    WORK_PREFIX,
    BusConfigError,
    BusDeadLetter,
    BusFull,
    BusUnavailable,
    DeadLetterHandler,
    DedupStore,
    Published,
)
from ferry.observe import metrics

MSG_ID_HEADER = "Nats-Msg-Id"
STREAM_FULL = 10077  # JetStream err_code: "maximum messages/bytes exceeded" on a DiscardNew stream
# nats-py errors that mean "the server is away for now" (restart, network): retry, never fail the work.
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


class JetStreamSettings(BaseModel):
    """Everything the adapter is configured with; ``url`` comes from ``FERRY_BUS_URL``."""

    url: str
    stream: str = "FERRY_WORK"
    partitions: int = Field(default=8, ge=1, le=1024)
    ack_wait: float = Field(default=30.0, gt=0)  # seconds a delivery may stay unanswered (in_progress() extends it)
    max_deliver: int = Field(default=5, ge=1)  # deliveries before the item becomes a dead letter
    max_ack_pending: int = Field(default=1, ge=1)  # per partition consumer: 1 = strict order per partition
    max_in_flight: int = Field(default=16, ge=1)  # per process: messages fetched and not yet settled
    fetch_timeout: float = Field(default=1.0, gt=0)  # must stay below ack_wait (see docs/bus.md, "fetch pitfall")
    duplicate_window: float = Field(default=1800.0, ge=0.1)  # seconds the server remembers a Nats-Msg-Id
    max_bytes: int = Field(default=8 * 2**30, ge=1)  # stream size limit; past it publishes fail with BusFull
    publish_timeout: float = Field(default=5.0, gt=0)
    publish_retry_for: float = Field(default=30.0, ge=0)  # keep retrying an unconfirmed publish (same msg id) this long
    exhausted_max_age: float = Field(default=7 * 86400.0, gt=0)  # how long MAX_DELIVERIES advisories are kept
    connect_timeout: float = Field(default=2.0, gt=0)
    reconnect_wait: float = Field(default=0.5, gt=0)
    max_reconnect_attempts: int = 240  # also bounds the first connect (nats-py): ~2 min at 0.5 s
    ping_interval: float = Field(default=5.0, gt=0)  # stale link noticed after ~3 pings
    drain_timeout: float = Field(default=5.0, gt=0)  # close(): time for settles in flight to reach the server

    @model_validator(mode="after")
    def _check(self) -> JetStreamSettings:
        if not self.url.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError(f"bus url must start with nats:// (or tls://), got {_safe_url(self.url)!r}")
        if self.fetch_timeout >= self.ack_wait:
            raise ValueError("fetch_timeout must be below ack_wait, or fetched messages time out while waiting")
        return self

    @property
    def exhausted_stream(self) -> str:
        return f"{self.stream}_EXHAUSTED"

    @property
    def exhausted_subject(self) -> str:
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.*"


def consumer_name(partition: int) -> str:
    return f"work-p{partition}"


def _safe_url(url: str) -> str:
    """The URL without its user and password (a NATS URL can carry a token or credentials)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep else url.rsplit("@", 1)[-1]


class _JsMessage:
    """A JetStream delivery as a ``BusMessage``; frees its in-flight slot the first time it is settled."""

    __slots__ = ("_msg", "_release", "attempt", "data", "msg_id", "sequence", "subject")

    def __init__(self, msg: Msg, release: Callable[[], None]) -> None:
        meta = msg.metadata
        self._msg = msg
        self._release: Callable[[], None] | None = release
        self.subject = msg.subject
        self.msg_id = (msg.headers or {}).get(MSG_ID_HEADER, f"seq:{meta.sequence.stream}")
        self.data = msg.data
        self.attempt = meta.num_delivered
        self.sequence = meta.sequence.stream

    def _settled(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None

    async def ack(self) -> None:
        # ack_sync: the server confirms it took the ack, so a lost +ACK does not quietly repeat the work.
        try:
            await self._msg.ack_sync(timeout=2.0)
        finally:
            self._settled()

    async def nak(self, delay: float | None = None) -> None:
        try:
            await self._msg.nak(delay=delay)
        finally:
            self._settled()

    async def term(self) -> None:
        try:
            await self._msg.term()
        finally:
            self._settled()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class JetStreamBus:
    """``Bus`` on NATS JetStream. Use as ``async with JetStreamBus(settings, dedup) as bus: ...``."""

    def __init__(self, settings: JetStreamSettings, dedup: DedupStore | None = None) -> None:
        self.settings = settings
        self.dedup = dedup
        self.partitions = settings.partitions
        self.max_deliver = settings.max_deliver
        self.ack_wait = settings.ack_wait
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    # ------------------------------------------------------------------------------------------ connection
    async def connect(self) -> None:
        s = self.settings
        try:
            self._nc = await nats.connect(
                s.url,
                connect_timeout=s.connect_timeout,
                reconnect_time_wait=s.reconnect_wait,
                max_reconnect_attempts=s.max_reconnect_attempts,
                ping_interval=s.ping_interval,
                max_outstanding_pings=2,
                error_cb=_quiet,
                drain_timeout=s.drain_timeout,
            )
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            raise BusUnavailable(f"cannot reach the bus at {_safe_url(s.url)}: {type(exc).__name__}") from None
        self._js = self._nc.jetstream(timeout=s.publish_timeout)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        self._nc = self._js = None

    async def __aenter__(self) -> JetStreamBus:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BusUnavailable("the bus is not connected (use `async with` or connect())")
        return self._js

    # ------------------------------------------------------------------------------------------ set-up
    def stream_config(self) -> StreamConfig:
        s = self.settings
        return StreamConfig(
            name=s.stream,
            subjects=[f"{WORK_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            max_bytes=s.max_bytes,
            duplicate_window=s.duplicate_window,
        )

    def consumer_config(self, partition: int) -> ConsumerConfig:
        s = self.settings
        name = consumer_name(partition)
        return ConsumerConfig(
            name=name,
            durable_name=name,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_deliver=s.max_deliver,
            max_ack_pending=s.max_ack_pending,
            filter_subject=f"{WORK_PREFIX}.*.*.{partition}",
        )

    async def setup(self) -> None:
        """Streams and consumers as configured; run by every worker at start (idempotent)."""
        s = self.settings
        await self._ensure_stream(self.stream_config())
        await self._ensure_stream(
            StreamConfig(
                name=s.exhausted_stream,
                subjects=[s.exhausted_subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=s.exhausted_max_age,
            )
        )
        # add_consumer on an existing durable updates it (ack wait, max_deliver, max_ack_pending: what changed).
        for p in range(s.partitions):
            await self._ensure_consumer(s.stream, self.consumer_config(p))
        await self._ensure_consumer(
            s.exhausted_stream,
            ConsumerConfig(name="sweeper", durable_name="sweeper", ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
        )

    async def _ensure_consumer(self, stream: str, config: ConsumerConfig) -> None:
        try:
            await self._retry_admin(functools.partial(self.js.add_consumer, stream, config))
        except nats.js.errors.APIError as exc:
            raise BusConfigError(f"consumer {config.name} on {stream}: {exc.description or exc}") from None

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self._retry_admin(lambda: self.js.add_stream(config))
        except nats.js.errors.BadRequestError:  # exists with another config (e.g. a changed limit): update it
            try:
                await self._retry_admin(lambda: self.js.update_stream(config))
            except nats.js.errors.APIError as exc:
                raise BusConfigError(f"stream {config.name}: {exc.description or exc}") from None

    async def _retry_admin(self, call: Callable[[], Any], attempts: int = 5) -> Any:
        # After a server restart the first JetStream API call can time out although the client reconnected.
        for attempt in range(attempts):
            try:
                return await call()
            except _TRANSIENT as exc:
                if attempt == attempts - 1:
                    raise BusUnavailable(f"bus admin call failed: {type(exc).__name__}") from None
                await asyncio.sleep(0.2 * 2**attempt)
        return None

    # ------------------------------------------------------------------------------------------ publish
    async def publish(self, subject: str, payload: bytes, msg_id: str) -> Published:
        """Store ``payload`` under ``msg_id`` once. Retries an unconfirmed publish with the same id for up to
        ``publish_retry_for`` seconds (a timeout does not mean "not stored"; the id makes the retry safe)."""
        if self.dedup is not None and self.dedup.seen([msg_id]):
            metrics.bus_message("duplicate")
            return Published(msg_id, None, True)
        deadline = time.monotonic() + self.settings.publish_retry_for
        delay = 0.1
        while True:
            try:
                ack = await self.js.publish(
                    subject, payload, timeout=self.settings.publish_timeout, stream=self.settings.stream,
                    headers={MSG_ID_HEADER: msg_id},
                )
            except nats.js.errors.ServiceUnavailableError as exc:
                if exc.err_code == STREAM_FULL:
                    metrics.bus_message("refused_full")
                    raise BusFull(f"stream {self.settings.stream} is full; slow down and retry later") from None
                error: Exception = exc
            except nats.js.errors.APIError as exc:
                raise BusConfigError(f"publish to {subject}: {exc.description or exc}") from None
            except _TRANSIENT as exc:
                error = exc
            else:
                metrics.bus_message("duplicate" if ack.duplicate else "published")
                return Published(msg_id, ack.seq, bool(ack.duplicate))
            if time.monotonic() + delay > deadline:
                raise BusUnavailable(f"publish of {msg_id} to {subject} unconfirmed: {type(error).__name__}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # ------------------------------------------------------------------------------------------ consume
    async def messages(self, partitions: Collection[int] | None = None) -> AsyncIterator[_JsMessage]:
        """Deliveries of ``partitions`` (default all), at most ``max_in_flight`` unsettled at a time."""
        chosen = sorted(set(partitions)) if partitions is not None else list(range(self.partitions))
        if any(not 0 <= p < self.partitions for p in chosen):
            raise BusConfigError(f"partitions {chosen} outside 0..{self.partitions - 1}")
        slots = asyncio.Semaphore(self.settings.max_in_flight)
        ready: asyncio.Queue[_JsMessage | BaseException] = asyncio.Queue()
        tasks = [asyncio.create_task(self._pull(p, slots, ready)) for p in chosen]
        try:
            while True:
                item = await ready.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pull(
        self, partition: int, slots: asyncio.Semaphore, ready: asyncio.Queue[_JsMessage | BaseException]
    ) -> None:
        s = self.settings
        try:
            sub = await self._retry_admin(
                lambda: self.js.pull_subscribe_bind(consumer_name(partition), stream=s.stream)
            )
        except BaseException as exc:  # hand it to the iterator: the caller must see it
            ready.put_nowait(exc)
            return
        # Ask for no more than one partition's consumer may have pending: asking for more makes the server
        # hold the request open until fetch_timeout (the pitfall in docs/bus.md).
        most = min(s.max_ack_pending, s.max_in_flight)
        try:
            await self._pull_loop(sub, most, slots, ready)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pull_loop(
        self, sub: Any, most: int, slots: asyncio.Semaphore, ready: asyncio.Queue[_JsMessage | BaseException]
    ) -> None:
        s = self.settings
        while True:
            await slots.acquire()
            taken = 1
            while taken < most and not slots.locked():
                await slots.acquire()
                taken += 1
            try:
                got = await sub.fetch(taken, timeout=s.fetch_timeout)
            except (TimeoutError, nats.errors.TimeoutError):
                got = []
            except _TRANSIENT:
                got = []
                await asyncio.sleep(s.reconnect_wait)  # server away: the client reconnects and resubscribes
            except nats.errors.Error:
                got = []
                await asyncio.sleep(s.reconnect_wait)
            for _ in range(taken - len(got)):
                slots.release()
            for msg in got:
                if msg.metadata.num_delivered > 1:
                    metrics.bus_message("redelivered")
                ready.put_nowait(_JsMessage(msg, slots.release))

    # ------------------------------------------------------------------------------------------ dead letters
    async def sweep_exhausted(self, dead_letters: DeadLetterHandler, *, wait: float = 1.0) -> int:
        """Dead-letter the items the server gave up on (every delivery timed out), from the kept advisories;
        returns how many. Idempotent: an advisory for an item already gone is just acknowledged."""
        s = self.settings
        sub = await self._retry_admin(lambda: self.js.pull_subscribe_bind("sweeper", stream=s.exhausted_stream))
        done = 0
        while True:
            try:
                advisories = await sub.fetch(32, timeout=wait)
            except (TimeoutError, nats.errors.TimeoutError):
                return done
            for adv in advisories:
                done += await self._dead_letter_exhausted(adv, dead_letters)
                await adv.ack_sync()

    async def _dead_letter_exhausted(self, advisory: Msg, dead_letters: DeadLetterHandler) -> int:
        info = json.loads(advisory.data)
        seq, deliveries = int(info["stream_seq"]), int(info.get("deliveries", self.max_deliver))
        try:
            raw = await self.js.get_msg(self.settings.stream, seq)
        except nats.js.errors.NotFoundError:
            return 0  # settled meanwhile (or swept by another worker)
        headers = raw.headers or {}
        await dead_letters(
            BusDeadLetter(
                subject=raw.subject or "",
                msg_id=headers.get(MSG_ID_HEADER, f"seq:{seq}"),
                data=raw.data or b"",
                attempts=deliveries,
                reason=(
                    f"delivered {deliveries} times (max_deliver) and never acknowledged within the ack wait of "
                    f"{self.settings.ack_wait:g}s: its workers died or took too long (consumer {info.get('consumer')})"
                ),
                sequence=seq,
            )
        )
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_msg(self.settings.stream, seq)
        metrics.bus_message("dead_lettered")
        return 1

    # ------------------------------------------------------------------------------------------ figures
    async def depth(self) -> dict[str, int]:
        """Items waiting (or in flight) per pipeline, and report them as ``ferry_queue_depth{queue="bus"}``."""
        info = await self._retry_admin(
            lambda: self.js.stream_info(self.settings.stream, subjects_filter=f"{WORK_PREFIX}.>")
        )
        per_pipeline: dict[str, int] = {}
        for subject, count in (info.state.subjects or {}).items():
            pipeline = subject.split(".")[2]
            per_pipeline[pipeline] = per_pipeline.get(pipeline, 0) + int(count)
        for pipeline, count in per_pipeline.items():
            metrics.queue_depth(pipeline, "bus", count)
        return per_pipeline

    async def depth_by_object(self, pipeline_token: str) -> dict[str, int]:
        """Items waiting (or in flight: acknowledged items leave the stream) per object token of one pipeline."""
        info = await self._retry_admin(
            lambda: self.js.stream_info(self.settings.stream, subjects_filter=f"{WORK_PREFIX}.{pipeline_token}.>")
        )
        per_object: dict[str, int] = {}
        for subject, count in (info.state.subjects or {}).items():
            obj = subject.split(".")[3]
            per_object[obj] = per_object.get(obj, 0) + int(count)
        return per_object


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: connection trouble is handled by reconnects and retries, not printed."""
    return None
