"""The work bus port: durable, partitioned work queues with explicit acknowledgement, naming no backend.

Distributed mode moves work (read a page, map a batch, load a batch, follow a remote job) between ``ferry worker``
processes over a bus. The contract every adapter keeps (``ferry.bus.jetstream`` is the NATS JetStream one):

- ``publish`` returns only once the bus stored the message; the same ``msg_id`` published twice is stored once
  (the bus's own dedup window, then the ``DedupStore`` for anything older);
- a delivered message stays owned by its consumer until ``ack``; without an ack (the worker died, or was too slow
  past the ack wait) it is delivered again; ``in_progress`` extends the ack wait for long work;
- delivery is bounded: after ``max_deliver`` attempts the message becomes a dead letter with the reason, handed to
  a ``DeadLetterHandler`` (at merge time the state store's DeadLetters), never dropped;
- subjects carry a partition computed from the record key (``partition_of``), so one key's items go through one
  ordered partition;
- consumers pull only what they have room for (a bounded in-flight count), so a burst waits in the bus.

Handlers must be idempotent all the same: delivery is at least once (a crash between the effect and the ack
repeats the item); the consumer side checks the ``DedupStore`` before running a handler and records the id after.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Protocol

WORK_PREFIX = "ferry.work"
_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class BusError(Exception):
    """Base class of bus failures."""


class BusUnavailable(BusError):
    """Transient: the bus cannot be reached or did not confirm in time; retry (with the same msg id)."""

    retryable = True


class BusFull(BusError):
    """Transient back-pressure: the stream is at its size limit and refuses new work; slow down, retry later."""

    retryable = True


class BusConfigError(BusError):
    """Permanent: the bus URL or the stream/consumer configuration is wrong; a human must fix it."""

    retryable = False


def subject_token(name: str) -> str:
    """A pipeline or object name as one subject token: dots, spaces and wildcards would split or widen a subject."""
    token = _TOKEN_UNSAFE.sub("_", name)
    if not token:
        raise BusConfigError(f"empty subject token from name {name!r}")
    return token


def partition_of(key: str, partitions: int) -> int:
    """The partition of a record key: stable across processes and Python versions (CRC-32, not ``hash``)."""
    if partitions < 1:
        raise BusConfigError(f"partitions must be >= 1, got {partitions}")
    return zlib.crc32(key.encode("utf-8")) % partitions


def key_partition(key: str, partitions: int) -> int:
    """The partition of an event's record key, by a hash PostgreSQL computes too (the first 32 bits of MD5:
    ``('x' || substr(md5(key), 1, 8))::bit(32)::bigint``), so a worker holding a partition's item can take that
    partition's whole backlog of staged events from the store in one claim."""
    if partitions < 1:
        raise BusConfigError(f"partitions must be >= 1, got {partitions}")
    return int(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).hexdigest()[:8], 16) % partitions


def work_subject(pipeline: str, obj: str, partition: int) -> str:
    """``ferry.work.<pipeline>.<object>.<partition>``: the subject a work item about one key goes to."""
    return f"{WORK_PREFIX}.{subject_token(pipeline)}.{subject_token(obj)}.{partition}"


@dataclass(frozen=True, slots=True)
class Published:
    """What the bus answered a publish: where it stored the message, or that it already had this msg id."""

    msg_id: str
    sequence: int | None  # None when skipped by ferry's dedup store (never reached the bus)
    duplicate: bool


class BusMessage(Protocol):
    """A delivered message, owned by its consumer until it settles it with ``ack``, ``nak`` or ``term``."""

    @property
    def subject(self) -> str: ...
    @property
    def msg_id(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def attempt(self) -> int:
        """Deliveries so far, 1 = first."""
        ...

    @property
    def sequence(self) -> int:
        """The message's position in its stream (what a dead-letter sweep refers to)."""
        ...

    async def ack(self) -> None:
        """Done: the bus forgets it. Call only after the effect is durable."""
        ...

    async def nak(self, delay: float | None = None) -> None:
        """Failed, deliver again after ``delay`` seconds (None: at once; prefer a delay, see docs/bus.md)."""
        ...

    async def term(self) -> None:
        """Never deliver again (after it was dead-lettered, or when it must be dropped on purpose)."""
        ...

    async def in_progress(self) -> None:
        """Still working: restart the ack wait."""
        ...


class Bus(Protocol):
    """A work bus: set up its streams and consumers, publish, and pull messages of some partitions."""

    partitions: int
    max_deliver: int
    ack_wait: float  # seconds a delivery may stay unanswered; a consumer's heartbeat runs well inside it

    async def setup(self) -> None:
        """Create (or update) the streams and durable consumers; idempotent, safe from many processes."""
        ...

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> Published: ...

    def messages(self, partitions: Collection[int] | None = None) -> AsyncIterator[BusMessage]:
        """Messages of the given partitions (None: all), in order within each partition; pulls only as many as
        there are free in-flight slots, a slot being freed when the message is settled."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BusDeadLetter:
    """A message that ran out of deliveries (or failed for good): what it was and why it stopped."""

    subject: str
    msg_id: str
    data: bytes
    attempts: int
    reason: str
    sequence: int


class PermanentWorkError(Exception):
    """Raised by a handler when retrying cannot help (bad input): the item goes to the dead letters at once."""


# A handler does the work of one message; raising retries it later (PermanentWorkError: dead letter now).
Handler = Callable[[BusMessage], Awaitable[None]]


class DeadLetterHandler(Protocol):
    """Where exhausted messages go; must be durable before it returns (the bus then forgets the message)."""

    async def __call__(self, letter: BusDeadLetter) -> None: ...


class DedupStore(Protocol):
    """Which message ids ferry has already processed, for longer than the bus's own dedup window.

    The PostgreSQL state store backs it in distributed mode (one row per id, written in the same transaction as
    the effect where it can be); ``ferry.bus.dedup`` has an SQLite and an in-memory implementation."""

    def seen(self, msg_ids: Collection[str]) -> set[str]:
        """The ids among ``msg_ids`` already recorded as done."""
        ...

    def remember(self, msg_ids: Collection[str]) -> None:
        """Record the ids as done (idempotent)."""
        ...
