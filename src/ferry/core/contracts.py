"""The Source and Sink contracts: what a connector implements so the engine can run it, naming no system.

A connector package (``ferry.connectors.<system>``) exposes a ``CONNECTOR`` (``ferry.core.registry``) whose
factories build these from the pipeline's ``source:``/``target:`` block. ``docs/connectors/writing-a-connector.md``
walks through one.

Both are async context managers (``async with source, sink:``): entering opens connections, leaving closes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from ferry.core.dialect import Dialect
from ferry.core.ports import ApiLedger, JournalEntry
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult, StreamAnswer
from ferry.core.schema import ObjectSchema
from ferry.core.writes import WriteCost

# (entity, canonical record) pairs a raw source record yields, in load order ("customer", Customer(...)).
Normalized = list[tuple[str, Any]]


class AsyncContext(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# ------------------------------------------------------------------------------------------------ Source


@dataclass(slots=True)
class SourcePage:
    """One page of a stream's incremental read.

    ``state`` is where the read stands after this page, as JSON-able data only the source understands: the
    engine saves it in the same transaction as the page's records and hands it back to ``read`` after a crash
    (continue after this page) or on the next run. The last page a read yields carries the state a *next*
    run starts from (the cursor): the engine saves it with that page, so a read that ends is never read
    again and a read that dies continues. ``resumed`` marks pages of a read that continued a saved one.
    """

    records: list[dict[str, Any]]
    state: dict[str, Any]
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class SourceCapabilities:
    refetch: bool = True  # ``fetch`` reads one record again by key (dead-letter replay reads the source, not a copy)
    incremental: bool = True  # reads only what changed since the state's cursor


class Source(AsyncContext, Protocol):
    """A system records are read from.

    The never-skip rule is the source's to keep: a record changed while a read pages on must not fall
    between pages (sort by the change time and page by keyset, or overlap pages and let staging dedup by
    (key, version)); the cursor in a final state must never pass a change the read could have missed.
    """

    system: str
    capabilities: SourceCapabilities

    @property
    def streams(self) -> Sequence[str]:
        """The streams this pipeline reads, in read order."""
        ...

    @property
    def api_calls(self) -> int: ...

    def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        """Pages of ``stream`` changed since ``state`` (None: from the beginning), each raw record as sent.

        Raises TransientError when a call failed past the HTTP core's retries: the engine waits and calls
        ``read`` again with the state of the last page it staged."""
        ...

    async def fetch(self, stream: str, key: str) -> dict[str, Any] | None:
        """One raw record again, by the key ``identify`` gave it; None when the source no longer has it."""
        ...

    def identify(self, stream: str, raw: dict[str, Any]) -> tuple[str, str]:
        """(key, version) of a raw record: its stable id, and its change time as a fixed-width version string."""
        ...

    def normalize(self, stream: str, raw: dict[str, Any]) -> Normalized:
        """The canonical records (``ferry.model.canonical``) one raw record yields. Never raises on bad data:
        what cannot be made canonical is kept as is for the mapping's validator to judge."""
        ...

    def locate(self, raw: dict[str, Any]) -> tuple[str, str] | None:
        """(stream, key) of a raw record stored without them (dead letters of older ferry versions), if known."""
        ...

    async def probe(self, stream: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` raw records of ``stream`` (its first ones, in any order), in one cheap call.

        ``ferry plan`` calls it to learn, before any run, that the credentials work and the source is
        reachable (AuthError, TransientError or PermanentError otherwise), which canonical records each
        stream yields, and how real values fare against the mapping."""
        ...

    async def estimate(self, stream: str, state: dict[str, Any] | None) -> int | None:
        """How many raw records a ``read(stream, state)`` would yield, from the source's own count (one cheap
        call), or None when the source cannot say. An upper bound is fine: ``ferry plan`` sizes the write
        strategy of the next run with it."""
        ...

    async def fetch_many(self, stream: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Raw records again by key, as ``fetch`` gives them, in as few calls as the source allows (list
        endpoints filtered by ids); a key the source no longer has is absent. A source without a batch read
        returns ``fetch_one_by_one(self, stream, keys)``. Dead-letter replay reads through it."""
        ...


@dataclass(frozen=True, slots=True)
class TargetLink:
    """A source record the target now holds: its key, the raw record as staged, and the target's id of it
    per target object (the id map's, for the canonical record with the same key)."""

    key: str
    raw: dict[str, Any]
    target_ids: dict[str, str]


@runtime_checkable
class LinksBack(Protocol):
    """Optional Source capability: record the target's ids on the source's own records (a CRM showing the
    accounting system's id), once a run has loaded them.

    Writing to the source changes its records, so the next read sees them changed: ``link_back`` returns each
    record it changed as read right after the change, and the engine (``ferry.engine.linkback``) records that
    version as already loaded when it maps to the same target payload as the version that was loaded. A record
    someone else changed meanwhile maps differently and is synced on the next run: nothing is hidden."""

    def links_back(self, stream: str) -> bool:
        """Whether records of ``stream`` get their target ids written back."""
        ...

    async def link_back(self, stream: str, links: Sequence[TargetLink]) -> dict[str, dict[str, Any]]:
        """Write each link's target id onto its source record where it is not there yet; the changed records,
        read again after the write, by key (as ``read`` yields them)."""
        ...


@dataclass(frozen=True, slots=True)
class Reference:
    """A record another record needs in the target first: the canonical ``entity`` record ``key``, which the
    source's ``stream`` record ``fetch_key`` yields (a Shopify line item's variant comes with its product)."""

    entity: str
    key: str
    stream: str
    fetch_key: str


@runtime_checkable
class RefersTo(Protocol):
    """Optional Source capability: the records a raw record refers to in other streams (an order's customer and
    products). ``ferry serve`` fetches those the target does not hold yet before it plans a micro-batch
    (``ferry.engine.parents``): a webhook for a new order can arrive before, or without, its customer's."""

    def references(self, stream: str, raw: dict[str, Any]) -> Sequence[Reference]:
        """What the raw record of ``stream`` refers to; nothing for a reference the record itself carries whole
        (a guest checkout's customer)."""


@runtime_checkable
class StreamEntities(Protocol):
    """Optional Source capability: which canonical entities a stream's records normalize into.

    A batch run loads an object as soon as every stream that can yield its entity is read (engine/overlap.py),
    while the other streams are still being read. The declaration must name every entity ``normalize`` can
    yield for the stream (a guest customer inside an order makes ``orders`` yield ``customer`` too); a source
    that does not declare has every object wait for every stream."""

    def stream_entities(self, stream: str) -> Sequence[str]:
        """Every entity ``normalize(stream, raw)`` can yield, whatever the record."""
        ...


@runtime_checkable
class SelectsEntities(Protocol):
    """Optional Source capability: read only what the pipeline maps (Singer's catalog selection, Airbyte's
    configured catalog).

    The engine calls ``select_entities`` once after opening the source and before any read or fetch, with the
    canonical entities the pipeline's objects map from (and the nested ones an ``each:`` walks). A source may
    then leave out of its reads what only feeds entities outside that set, when leaving it out saves calls (a
    Shopify order's refund line items over GraphQL). What it still yields must normalize to the same records
    for the selected entities as a full read; records of unselected entities may be missing or incomplete
    (nothing maps them). A source that does not implement it reads everything."""

    def select_entities(self, entities: frozenset[str]) -> frozenset[str]:
        """Read for ``entities`` from now on; the entities the source's streams can yield that its reads will
        no longer yield whole (empty: it reads as before), for ``ferry plan`` and the run report."""
        ...


async def fetch_one_by_one(source: Source, stream: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``fetch_many`` for a source that can only read one record at a time."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(keys):
        raw = await source.fetch(stream, key)
        if raw is not None:
            out[key] = raw
    return out


# ------------------------------------------------------------------------------------------------ Sink


@dataclass(frozen=True, slots=True)
class SinkCapabilities:
    # The target upserts by an external id field itself. When False, the engine passes the id map's target ids
    # to ``upsert`` and the sink updates those and creates (after a lookup by key, in case a crash lost the id)
    # the rest: idempotency through ferry's own state.
    native_upsert: bool = True
    # The target can run remote jobs (``upsert_stream``/``resume_job``).
    remote_jobs: bool = False


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of queued records for a remote job, with ferry's (key, version) of each, in the same order:
    what the job's journal records before the page is uploaded."""

    records: Sequence[MappedRecord]
    keys: Sequence[tuple[str, str]]


class JobJournal(Protocol):
    """The engine's journal of one object's remote jobs, bound to one pipeline (store: ``RemoteJobJournal``).

    A sink's remote-job stream (``ferry.connectors.jobs``) tells it which records each job carries before
    any of them is uploaded, so a crashed run resumes the job instead of sending them again."""

    def job_created(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        """The job exists, before any data is uploaded: journal it with the records already bound for it."""
        ...

    def page_sent(self, job_id: str, entries: Sequence[JournalEntry]) -> None:
        """Records about to be uploaded to the open job ``job_id``."""
        ...

    def queued(self, external_keys: Sequence[str]) -> list[MappedRecord]:
        """The journaled records with these external keys that are still queued, as queued: for a sink that
        sends some of a job's rows again itself (Salesforce: rows another transaction had locked)."""
        ...


class Sink(AsyncContext, Protocol):
    """A system records are written to, by upsert on a key, each with its own result."""

    system: str
    capabilities: SinkCapabilities
    dialect: Dialect

    @property
    def api_calls(self) -> dict[str, int]:
        """Calls sent, by label (the target object, or "describe", "query", ...)."""
        ...

    async def describe(self, objects: Sequence[str], queries: Sequence[str] = ()) -> dict[str, ObjectSchema]:
        """Each object's schema. ``queries`` (a mapping's constants in the target's query language) may be
        fetched in the same call; ``constant`` then answers them without another."""
        ...

    async def constant(self, query: str) -> Any:
        """The single value a mapping constant's query returns (ConfigError unless exactly one row and field)."""
        ...

    def write_costs(self, obj: str, count: int) -> list[WriteCost]:
        """What writing ``count`` records of ``obj`` would cost by each strategy the sink offers, lowest latency
        first. The engine's planner (``ferry.core.writes.choose_write``) picks from these."""
        ...

    def budget_left(self) -> int | None:
        """API calls left before the pipeline's budget (or the target's allocation) stops the run, if known."""
        ...

    def budget_status(self) -> dict[str, Any] | None:
        """The budget after the run, for the report: share, spent, left, when to resume. None: no budget."""
        ...

    async def upsert(
        self,
        obj: str,
        external_id: str,
        records: Sequence[MappedRecord],
        strategy: str,
        *,
        target_ids: Sequence[str | None] | None = None,
    ) -> list[RecordResult]:
        """One result per record, in input order. Transient trouble the sink knows how to clear (a row lock)
        is retried inside; what is left comes back as a transient result for the engine's retry budget."""
        ...

    def upsert_stream(
        self,
        obj: str,
        external_id: str,
        pages: AsyncIterator[JobPage] | Iterable[JobPage],
        journal: JobJournal,
        *,
        columns: Sequence[str] | None = None,
    ) -> AsyncIterator[StreamAnswer]:
        """A remote job's upsert of a stream of pages: results come back out of order, keyed by external id,
        or as a ``JobSucceeded`` covering every journaled row no result reported. Every record's entry reaches
        ``journal`` before the record is uploaded. Pages carry only records with an external key
        (``missing_key_result`` is None). Transient trouble the sink knows how to clear is cleared before
        the answer (as in ``upsert``)."""
        ...

    async def resume_job(
        self, job_id: str, external_id: str, records: Sequence[MappedRecord]
    ) -> list[RecordResult] | None:
        """Collect a job a crashed run left: one result per record, in input order. None: it never got its
        data (it was aborted; send the records again). Raises PermanentError when the target no longer knows
        the job, e.g. it expired (send them again too: the upsert makes that harmless)."""
        ...

    def missing_key_result(self, payload: MappedRecord, external_id: str) -> RecordResult | None:
        """The result of a record that cannot be sent because it has no external id value, or None if it has one."""
        ...


@dataclass(frozen=True, slots=True)
class UpsertPart:
    """One object's records in a call that writes several objects at once (``WritesTogether``)."""

    obj: str
    external_id: str
    records: Sequence[MappedRecord]


@dataclass(frozen=True, slots=True)
class TogetherLimits:
    """What one ``upsert_together`` call may carry: ``parts`` parts of at most ``records`` records each."""

    parts: int
    records: int


@runtime_checkable
class WritesTogether(Protocol):
    """Optional Sink capability: upsert several objects' records in ONE API call, parts applied in the order
    given (a parent's part before its children's), each record with its own result (Salesforce: a Composite
    call carrying sObject Collections subrequests). ``ferry serve``'s micro-batches use it so a batch of events
    costs one call instead of one per object (``ferry.engine.combined``)."""

    def together_limits(self) -> TogetherLimits | None:
        """The limits of one call, or None when the sink cannot write together now (turned off or refused)."""
        ...

    async def upsert_together(self, parts: Sequence[UpsertPart]) -> list[list[RecordResult]]:
        """One result list per part, one result per record in input order (as ``Sink.upsert``). A part the
        target refused as a whole comes back as failures of its records (transient when worth a retry)."""
        ...


@dataclass(frozen=True, slots=True)
class ChildAdoption:
    """A child object adopted with its parent: the child record of each adopted parent (by ``parent_field``,
    the first created, as a source that embeds a primary child reads it) gets the same external key."""

    obj: str  # e.g. Contact
    external_id: str  # its external id field, e.g. Shopify_Customer_Id__c
    parent_field: str  # its reference to the parent, e.g. AccountId


@runtime_checkable
class Adopts(Protocol):
    """Optional Sink capability (two-way sync): make records that already exist in the target answer to the
    external key this pipeline upserts by. The other direction created a record in this pipeline's source FROM
    a target record (an Account a person made became a shop customer); the source's change for it comes back
    with the new source key, which no target record carries yet: an upsert by external id would create a
    second record. Adopting writes the key onto the existing record (and its primary child) first, so the
    upsert that follows addresses it (``ferry.engine.adopt``). Idempotent: adopting again changes nothing."""

    async def adopt(
        self, obj: str, external_id: str, ids: Mapping[str, str], children: Sequence[ChildAdoption] = ()
    ) -> int:
        """Write each key of ``ids`` (key -> the target record's id) into ``external_id`` of that record of
        ``obj``, and into each child's; the records changed. A record the target refuses is logged, not
        raised (the upsert then creates one, as without adoption); a transient failure raises."""
        ...


# ------------------------------------------------------------------------------------------------ wiring


@dataclass(slots=True)
class SinkContext:
    """What the engine gives a sink it opens: the pipeline, and the store ports a sink may use (its API ledger)."""

    pipeline: str
    ledger: ApiLedger | None = None
    clock: Callable[[], float] | None = None
    # The id map (``VersionMap.target_ids`` bound to the pipeline): a sink without a native upsert resolves a
    # child's reference to a parent this pipeline wrote by the parent's source key, without an API call.
    target_ids: Callable[[str, Sequence[str]], dict[str, str]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
