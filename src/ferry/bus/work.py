"""Work items a ``ferry worker`` will take from the bus: what each carries, and its bytes on the wire.

Only the vocabulary and its serialization live here (``ferry worker`` runs ``LoadBatch``, ``EventBatch``,
``ReadStream`` and ``JobLoad``; ``ReadPage``, ``MapBatch`` and ``RemoteJobItem`` are not published yet). Each item
names its pipeline, the object (or stream) and the partition key that orders it; ``msg_id`` is derived from its
content's identity, so publishing the same item twice (a retried run, a crashed publisher) is deduplicated by the
bus.
The wire form is JSON with a ``kind`` tag and a format version ``v``: a worker refuses a version it does not know
(``PermanentWorkError``, so the item goes to the dead letters instead of looping).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import orjson

from ferry.core.bus import PermanentWorkError, key_partition, partition_of, work_subject

WIRE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ReadPage:
    """Read one page of a source stream from ``state`` (the source's opaque read state) and stage it."""

    kind: ClassVar[str] = "read_page"
    pipeline: str
    run_id: int
    stream: str
    state: dict[str, Any] | None = None

    @property
    def object(self) -> str:
        return self.stream

    @property
    def partition_key(self) -> str:
        return self.stream  # one stream's pages in order: each page's state follows the previous one

    @property
    def identity(self) -> str:
        return f"{self.run_id}:{self.stream}:{_digest(self.state)}"


@dataclass(frozen=True, slots=True)
class MapBatch:
    """Map and validate the staged records ``first_seq..last_seq`` of a run into the outbox / dead letters."""

    kind: ClassVar[str] = "map_batch"
    pipeline: str
    run_id: int
    streams: tuple[str, ...]
    first_seq: int
    last_seq: int

    @property
    def object(self) -> str:
        return "_staged"

    @property
    def partition_key(self) -> str:
        return f"{self.first_seq}"

    @property
    def identity(self) -> str:
        return f"{self.run_id}:{','.join(self.streams)}:{self.first_seq}-{self.last_seq}"


@dataclass(frozen=True, slots=True)
class LoadBatch:
    """Write these outbox rows ((key, version) pairs) of one target object with ``strategy``."""

    kind: ClassVar[str] = "load_batch"
    pipeline: str
    run_id: int
    object: str
    rows: tuple[tuple[str, str], ...]
    strategy: str = "auto"
    # The coordinator's load round: a row still queued after a round (a transient failure, a worker killed
    # mid-send) goes out again in the next one, which must not be taken for a duplicate of the first.
    attempt: int = 1
    # Unique per coordinator run: run ids restart in another (or a recreated) state database sharing the bus, and
    # the same rows again must not be taken for a duplicate of that other run's item within the dedup window.
    run_token: str = ""
    # Claim only the rows named (never others to make up the number): the coordinator's flow publishes rows whose
    # parents are written, and another row of the object may still wait for its parent (engine/distflow.py).
    exact: bool = False

    @property
    def partition_key(self) -> str:
        # A batch goes where its first key goes; a planner that wants per-key order batches by partition.
        return self.rows[0][0] if self.rows else ""

    @property
    def identity(self) -> str:
        rows = _digest([list(r) for r in self.rows])
        tail = (f":a{self.attempt}" if self.attempt > 1 else "") + (f":{self.run_token}" if self.run_token else "")
        return f"{self.run_id}:{self.object}:{rows}{tail}"


@dataclass(frozen=True, slots=True)
class RemoteJobItem:
    """Follow a remote job (Bulk API 2.0 ingest, a Shopify bulk operation) to its end and record its results."""

    kind: ClassVar[str] = "remote_job"
    pipeline: str
    run_id: int
    object: str
    job_id: str
    system: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def partition_key(self) -> str:
        return self.job_id

    @property
    def identity(self) -> str:
        return f"{self.object}:{self.job_id}"


@dataclass(frozen=True, slots=True)
class ReadStream:
    """Read one source stream of a coordinator's run into the shared staging, from where its read stands (the
    stream's staged read state: a redelivered item continues at the page after the last staged one)."""

    kind: ClassVar[str] = "read_stream"
    pipeline: str
    run_id: int
    stream: str
    attempt: int = 1  # the coordinator's round: published again when a round ended with the read unfinished
    run_token: str = ""  # unique per coordinator run (see LoadBatch.run_token)

    @property
    def object(self) -> str:
        return self.stream

    @property
    def partition_key(self) -> str:
        return self.stream

    @property
    def identity(self) -> str:
        return f"{self.run_id}:{self.stream}:a{self.attempt}:{self.run_token}"


@dataclass(frozen=True, slots=True)
class JobLoad:
    """Load one target object's outbox through a remote job (Bulk API 2.0): resume the object's journaled jobs
    first, then (``resume_only`` false) send what is still queued as a new journaled job. One item per object."""

    kind: ClassVar[str] = "job_load"
    pipeline: str
    run_id: int
    object: str
    strategy: str
    resume_only: bool = False
    run_token: str = ""

    @property
    def partition_key(self) -> str:
        return self.object

    @property
    def identity(self) -> str:
        return f"{self.run_id}:{self.object}:{self.strategy}:{int(self.resume_only)}:{self.run_token}"


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Plan and send the staged events ``refs`` names ((stream, key, version) each): what ``ferry serve`` took in
    during one dispatch window, all of one partition, so one key's events reach the workers in order."""

    kind: ClassVar[str] = "event_batch"
    pipeline: str
    refs: tuple[tuple[str, str, str], ...]
    # Unique per dispatch (serve process + counter): the bus's dedup then only drops a retried publish of the
    # same item, never a later item that happens to name the same records (a re-staged event, a sweep).
    token: str = ""

    @property
    def object(self) -> str:
        return EVENTS_OBJECT

    @property
    def partition_key(self) -> str:
        return self.refs[0][1] if self.refs else ""

    @property
    def identity(self) -> str:
        return f"{_digest([list(r) for r in self.refs])}:{self.token}"


EVENTS_OBJECT = "_events"  # the subject token of event items: ferry.work.<pipeline>._events.<partition>

WorkItem = ReadPage | MapBatch | LoadBatch | RemoteJobItem | EventBatch | ReadStream | JobLoad
KINDS: dict[str, type[WorkItem]] = {
    c.kind: c for c in (ReadPage, MapBatch, LoadBatch, RemoteJobItem, EventBatch, ReadStream, JobLoad)
}


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def msg_id(item: WorkItem) -> str:
    """The item's dedup id: the same work (same run, same input) gets the same id."""
    return f"{item.kind}:{item.pipeline}:{item.identity}"


def subject_for(item: WorkItem, partitions: int) -> str:
    pick = key_partition if isinstance(item, EventBatch) else partition_of  # events: the hash the store shares
    return work_subject(item.pipeline, item.object, pick(item.partition_key, partitions))


def encode(item: WorkItem) -> bytes:
    return orjson.dumps({"v": WIRE_VERSION, "kind": item.kind, **asdict(item)})


def decode(data: bytes) -> WorkItem:
    """The item in ``data``; ``PermanentWorkError`` naming the problem when it is not one this ferry reads."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PermanentWorkError(f"work item is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PermanentWorkError("work item is not a JSON object")
    if doc.get("v") != WIRE_VERSION:
        raise PermanentWorkError(f"work item format v={doc.get('v')!r}, this ferry reads v={WIRE_VERSION}")
    cls = KINDS.get(str(doc.get("kind")))
    if cls is None:
        raise PermanentWorkError(f"unknown work item kind {doc.get('kind')!r}")
    names = {f.name for f in fields(cls)}
    missing = [n for n in names if n not in doc and _required(cls, n)]
    if missing:
        raise PermanentWorkError(f"{cls.kind} work item misses {', '.join(sorted(missing))}")
    args = {k: v for k, v in doc.items() if k in names}
    for name in ("rows", "streams", "refs"):
        if name in args:
            args[name] = tuple(tuple(r) if isinstance(r, list) else r for r in args[name])
    return cls(**args)


def _required(cls: type[WorkItem], name: str) -> bool:
    from dataclasses import MISSING

    f = cls.__dataclass_fields__[name]
    return f.default is MISSING and f.default_factory is MISSING
