"""The QuickBooks Online sink (``ferry.core.contracts.Sink``): idempotent writes without an upsert.

QuickBooks has no upsert by an external id, so each record's fate is decided here, per record:

* its Id is in ferry's id map (the engine passes ``target_ids``): a **sparse update** with the current
  SyncToken (read by one query per batch). A ``5010 Stale Object Error`` (someone changed it meanwhile)
  is met by reading it again and re-applying: ferry owns the fields it maps, so its values win (up to
  ``_STALE_RETRIES`` times, then a transient failure for the engine's retry budget).
* its Id is not known: a **create** carrying a ``requestid`` derived from the pipeline, object, operation
  and the mapped payload (what a (key, version) maps to). A create whose answer was lost (a reset, a
  timeout, a crash) is repeated with the same id, and Intuit answers it with the first answer and creates
  nothing. Past Intuit's window, or when a crash changed the batch it rode in, the lookup field's
  uniqueness catches it: QuickBooks refuses the second create (6240 duplicate name, 6140 duplicate
  DocNumber), and the sink then finds the record by that field (``schema.py``: DisplayName, Name, DocNumber,
  each carrying the source's identity) and updates it instead: written once, latest wins.

Writes go one record a call (``single``) or 30 a ``batch`` call, each item answered on its own; an item
that met a stale SyncToken or a duplicate is finished through the single path. Intuit allows an app 40 batch
calls a minute per company (and 500 calls): when the minute's batch calls are spent and the next slot is further
off than the batch's records would take one a call (10 a second), they go one a call instead (``_batch_or_singles``),
with the same requestids and lookups as the single strategy; the two budgets together write more a minute than
either alone.

A create whose answer was lost and whose record was *renamed* before the next attempt meets no duplicate
(the name is a new one) and would be made twice: a mapping that sets ``SourceKey: key`` lets the sink find
it by the source key its name carries, among the records created lately (``names.py``). Names are cleaned
of the characters QuickBooks refuses in them (``names.clean_name``).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import hashlib
import math
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.no_jobs import NoRemoteJobs
from ferry.connectors.quickbooks.client import QuickBooksClient, quote
from ferry.connectors.quickbooks.config import QuickBooksConfig
from ferry.connectors.quickbooks.dialect import QUICKBOOKS
from ferry.connectors.quickbooks.errors import DUPLICATES, STALE_OBJECT, Fault, parse_fault
from ferry.connectors.quickbooks.names import NAME_FIELDS, SOURCE_KEY, clean_name, same_place
from ferry.connectors.quickbooks.pace import SharedMinute
from ferry.connectors.quickbooks.refs import ReferenceResolver
from ferry.connectors.quickbooks.schema import SCHEMAS
from ferry.connectors.quickbooks.wire import nest
from ferry.core.contracts import SinkCapabilities, SinkContext
from ferry.core.dialect import Dialect
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult
from ferry.core.schema import ObjectSchema
from ferry.core.writes import WriteCost
from ferry.errors import AuthError, ConfigError, PermanentError, RecordError, TransientError

log = structlog.get_logger("ferry.connectors.quickbooks.sink")
SINGLE = "single"
BATCH = "batch"
_STALE_RETRIES = 3
_ID_QUERY = 30  # ids per SyncToken query
_SELECT = re.compile(r"^select\s+(.+?)\s+from\s", re.IGNORECASE | re.DOTALL)
_NAMESPACE = uuid.UUID("6f1c7a52-5b0e-4d7c-9a51-2c1f0e5b9d11")  # ferry's, for requestids


@dataclass(slots=True)
class _Item:
    """One record on its way: the external key, the wire body (None when it failed before), its known Id."""

    key: str
    body: dict[str, Any] | None
    target_id: str | None
    result: RecordResult | None = None
    source_key: str | None = None  # the mapping's SourceKey (never sent): finds a lost create after a rename


class _RecentNames:
    """The lookup-field values of records created lately, searchable for a source key held as a whole word.

    One lower-cased text of all names (``\n``-separated): a source key is found with ``str.find`` (fast over
    thousands of names), then checked for word boundaries. A record is adopted once at most.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], field: str) -> None:
        self.rows = [(str(r.get(field) or ""), str(r["Id"])) for r in rows if r.get("Id") is not None]
        self.text = "\n".join(name.lower() for name, _ in self.rows)
        self.starts: list[int] = []
        at = 0
        for name, _ in self.rows:
            self.starts.append(at)
            at += len(name) + 1
        self.taken: set[str] = set()

    def take(self, source_key: str, new_name: str) -> str | None:
        """The Id of the one record whose name holds ``source_key`` where ``new_name`` does (None when none or
        several do)."""
        needle = clean_name(source_key).lower()
        found: set[int] = set()
        at = self.text.find(needle) if needle else -1
        while at >= 0:
            row = bisect.bisect_right(self.starts, at) - 1
            if same_place(self.rows[row][0], source_key, new_name):
                found.add(row)
            at = self.text.find(needle, at + 1)
        ids = {self.rows[r][1] for r in found} - self.taken
        if len(ids) != 1:
            return None
        rid = ids.pop()
        self.taken.add(rid)
        return rid


class QuickBooksSink(NoRemoteJobs, AsyncResource):
    system = "quickbooks"
    NO_JOBS = "QuickBooks has no remote write jobs"
    capabilities = SinkCapabilities(native_upsert=False, remote_jobs=False)
    dialect: Dialect = QUICKBOOKS

    def __init__(self, config: QuickBooksConfig, context: SinkContext | None = None, **client_kwargs: Any) -> None:
        self.config = config
        self.pipeline = context.pipeline if context is not None else "quickbooks"
        if context is not None and context.ledger is not None and config.shared_pacing:
            # Every process using this state store stays under the company's per-minute limit together.
            clock = context.clock or time.time
            client_kwargs.setdefault("shared", SharedMinute(context.ledger, config.realm_id, config.per_minute,
                                                            clock=clock))
            client_kwargs.setdefault("shared_batches", SharedMinute(context.ledger, config.realm_id,
                                                                    config.batch_per_minute, kind="batch",
                                                                    clock=clock))
        self.client = QuickBooksClient(config, **client_kwargs)
        self.refs = ReferenceResolver(self.client, context.target_ids if context else None, SCHEMAS)
        self.stale_rereads = 0
        self.adopted = 0  # creates found already done (a duplicate fault answered by a lookup)
        self.adopted_by_source_key = 0  # ... of which found by the source key their (new) name no longer has
        self.batches_as_singles = 0  # batches written one record a call: the minute's batch calls were spent
        self._standing_in = 0  # single calls under way in place of batches (they queue in the same windows)
        self._batches_queued = 0  # batch calls under way: waiting for their slot or sent
        self._recent: dict[str, _RecentNames] = {}
        self._recent_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------------ contract: observability, setup

    @property
    def api_calls(self) -> dict[str, int]:
        return self.client.api_calls

    def budget_left(self) -> int | None:
        return None

    def budget_status(self) -> dict[str, Any] | None:
        return None

    async def describe(self, objects: Sequence[str], queries: Sequence[str] = ()) -> dict[str, ObjectSchema]:
        unknown = [o for o in objects if o not in SCHEMAS]
        if unknown:
            raise ConfigError(
                f"QuickBooks objects ferry cannot write: {', '.join(unknown)}; known: {', '.join(SCHEMAS)}"
            )
        return {o: SCHEMAS[o] for o in objects}

    async def constant(self, query: str) -> Any:
        """The one value a query selects: ``SELECT Id FROM Account WHERE Name = 'Sales of Product Income'``."""
        head = query.strip()
        match = _SELECT.match(head)
        fields = [f.strip() for f in match.group(1).split(",")] if match else []
        if len(fields) != 1 or fields[0] == "*":
            raise ConfigError(f"constant query {query!r} must select exactly one field")
        rows = await self.client.query(head, label="describe")
        if len(rows) != 1:
            raise ConfigError(f"constant query {query!r} returned {len(rows)} rows; expected exactly one")
        return rows[0].get(fields[0])

    def write_costs(self, obj: str, count: int) -> list[WriteCost]:
        if count <= 0:
            return [WriteCost(BATCH, 0, 0, note="nothing to write")]
        size = self.config.batch_size
        batches = math.ceil(count / size)
        records = f"{count:,} {obj} record{'' if count == 1 else 's'}"
        return [
            WriteCost(SINGLE, count, count, note=f"{records}: one call each (plus a SyncToken read per update)"),
            WriteCost(BATCH, batches, count,
                      note=f"{records}: batch calls of <= {size}, each item answered on its own "
                      f"({batches:,} call{'' if batches == 1 else 's'}, plus a SyncToken query per batch of updates)"),
        ]

    def missing_key_result(self, payload: MappedRecord, external_id: str) -> RecordResult | None:
        value = payload.get(external_id)
        if value is None or value == "":
            return RecordResult("", False, errors=[RecordError(
                "MISSING_LOOKUP_KEY", f"{external_id} is empty: the record could not be found again after a lost "
                "answer, so it is not created", [external_id])])
        return None

    # ------------------------------------------------------------------ contract: writes

    async def upsert(
        self,
        obj: str,
        external_id: str,
        records: Sequence[MappedRecord],
        strategy: str,
        *,
        target_ids: Sequence[str | None] | None = None,
    ) -> list[RecordResult]:
        ids = list(target_ids) if target_ids is not None else [None] * len(records)
        try:
            await self.refs.prepare(obj, records)
        except (AuthError, ConfigError):
            raise
        except (TransientError, PermanentError) as exc:  # a lookup failed: nothing is written, all are retried
            code = getattr(exc, "code", None) or "LOOKUP"
            return [_failure(str(r.get(external_id) or ""), code, f"resolving references: {exc}", transient=True)
                    for r in records]
        items = [self._item(obj, external_id, record, rid) for record, rid in zip(records, ids, strict=True)]
        size = 1 if strategy == SINGLE else self.config.batch_size
        groups = [items[i : i + size] for i in range(0, len(items), size)]
        gate = asyncio.Semaphore(self.config.max_concurrency)

        async def run(group: list[_Item]) -> None:
            async with gate:
                await self._write_group(obj, external_id, group, single=strategy == SINGLE)

        await asyncio.gather(*(run(g) for g in groups))
        return [i.result or _failure(i.key, "UNKNOWN", "no answer for the record", transient=True) for i in items]

    def _item(self, obj: str, external_id: str, record: MappedRecord, target_id: str | None) -> _Item:
        record = dict(record)
        source_key = record.pop(SOURCE_KEY, None)
        name_field = NAME_FIELDS.get(obj)
        if name_field is not None and isinstance(record.get(name_field), str):
            record[name_field] = clean_name(record[name_field])  # QuickBooks refuses ':', tab, newline (2040)
        key = str(record.get(external_id) or "")
        missing = self.missing_key_result(record, external_id)
        if missing is not None and target_id is None:
            return _Item(key, None, target_id, missing)
        resolved, errors = self.refs.resolve(obj, record)
        if errors:
            return _Item(key, None, target_id, RecordResult(key, False, errors=errors))
        return _Item(key, nest(resolved), target_id, source_key=str(source_key) if source_key else None)

    async def _write_group(self, obj: str, external_id: str, group: list[_Item], *, single: bool) -> None:
        pending = [i for i in group if i.result is None]
        try:
            if self.config.lookup_before_create:
                await self._look_up_creates(obj, external_id, [i for i in pending if i.target_id is None])
            await self._adopt_lost_creates(obj, external_id, [i for i in pending if i.target_id is None])
            tokens = await self._sync_tokens(obj, [i.target_id for i in pending if i.target_id])
            if single or len(pending) == 1:
                for item in pending:
                    await self._write_one(obj, external_id, item, tokens.get(item.target_id or ""))
            elif pending:
                await self._write_batch(obj, external_id, pending, tokens)
        except (AuthError, ConfigError):
            raise
        except (TransientError, PermanentError) as exc:
            for item in pending:
                if item.result is None:
                    item.result = _failure(item.key, getattr(exc, "code", None) or "HTTP", str(exc),
                                           transient=exc.transient)

    async def _look_up_creates(self, obj: str, external_id: str, creates: Sequence[_Item]) -> None:
        """Give each would-be create the Id of the record its lookup field already names, if one does."""
        for start in range(0, len(creates), _ID_QUERY):
            part = creates[start : start + _ID_QUERY]
            listed = ", ".join(quote(i.key) for i in part)
            rows = await self.client.query(f"SELECT * FROM {obj} WHERE {external_id} IN ({listed})", label="lookup")
            found = {str(r.get(external_id)).lower(): str(r["Id"]) for r in rows if r.get("Id") is not None}
            for item in part:
                item.target_id = found.get(item.key.lower())
                if item.target_id is not None:
                    self.adopted += 1

    async def _adopt_lost_creates(self, obj: str, external_id: str, creates: Sequence[_Item]) -> None:
        """Give each would-be create carrying a source key the Id of the record created lately for that key
        (an earlier attempt whose answer was lost), even if its name changed since (``names.py``)."""
        keyed = [i for i in creates if i.source_key]
        if not keyed or self.config.lost_create_window_hours <= 0:
            return
        recent = await self._recently_created(obj, external_id)
        for item in keyed:
            assert item.source_key is not None
            rid = recent.take(item.source_key, item.key)
            if rid is not None:
                item.target_id = rid
                self.adopted += 1
                self.adopted_by_source_key += 1
                log.info("quickbooks.lost_create_found_by_source_key", object=obj, id=rid)

    async def _recently_created(self, obj: str, external_id: str) -> _RecentNames:
        """The records of ``obj`` created in the window, read once per sink (per run) before its first create."""
        async with self._recent_lock:
            if obj not in self._recent:
                since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=self.config.lost_create_window_hours)
                stamp = since.strftime("%Y-%m-%dT%H:%M:%S+00:00")
                rows = await self.client.query(
                    f"SELECT * FROM {obj} WHERE MetaData.CreateTime >= '{stamp}'", label="lookup")
                self._recent[obj] = _RecentNames(rows, external_id)
            return self._recent[obj]

    async def _sync_tokens(self, obj: str, ids: Sequence[str]) -> dict[str, str]:
        """The current SyncToken of each Id (one query per 30); an Id QuickBooks no longer has is absent."""
        tokens: dict[str, str] = {}
        for start in range(0, len(ids), _ID_QUERY):
            listed = ", ".join(quote(i) for i in ids[start : start + _ID_QUERY])
            for row in await self.client.query(f"SELECT * FROM {obj} WHERE Id IN ({listed})", label="synctoken"):
                tokens[str(row.get("Id"))] = str(row.get("SyncToken"))
        return tokens

    # ------------------------------------------------------------------ one record

    async def _write_one(self, obj: str, external_id: str, item: _Item, token: str | None) -> None:
        assert item.body is not None
        if item.target_id is not None and token is None:
            # The id map's Id is gone from QuickBooks (a deleted transaction, an inactive name): not recreated.
            item.result = _failure(item.key, "QBO_610", f"{obj} {item.target_id} (from ferry's id map) is not in "
                                   "QuickBooks any more (deleted or made inactive there); not created again")
            return
        if item.target_id is None:
            created, fault = await self.client.write(obj, item.body, self._request_id(obj, "create", item.body),
                                                     label=obj)
            if created is not None:
                item.result = RecordResult(item.key, True, str(created["Id"]), created=True)
                return
            assert fault is not None
            if fault.code not in DUPLICATES:
                item.result = _fault_result(item.key, fault)
                return
            found = await self._find(obj, external_id, item.key)
            if found is None:  # another record holds the name (a vendor, an employee): a true conflict
                item.result = _fault_result(item.key, fault)
                return
            self.adopted += 1
            log.info("quickbooks.create_found_done", object=obj, id=found[0])
            item.target_id, token = found
        await self._update(obj, item, token)

    async def _update(self, obj: str, item: _Item, token: str | None) -> None:
        assert item.body is not None and item.target_id is not None
        for _ in range(_STALE_RETRIES + 1):
            body = {**item.body, "Id": item.target_id, "SyncToken": token, "sparse": True}
            updated, fault = await self.client.write(obj, body, self._request_id(obj, "update", body), label=obj)
            if updated is not None:
                item.result = RecordResult(item.key, True, str(updated["Id"]), created=False)
                return
            assert fault is not None
            if fault.code != STALE_OBJECT:
                item.result = _fault_result(item.key, fault)
                return
            # Changed in QuickBooks since the token was read: read it again, re-apply ferry's fields.
            self.stale_rereads += 1
            current, read_fault = await self.client.read(obj, item.target_id, label=obj)
            if current is None:
                item.result = _fault_result(item.key, read_fault or fault)
                return
            token = str(current.get("SyncToken"))
        item.result = _failure(item.key, f"QBO_{STALE_OBJECT}", f"{obj} {item.target_id} kept changing in QuickBooks "
                               f"({_STALE_RETRIES} re-reads)", transient=True)

    async def _find(self, obj: str, external_id: str, value: str) -> tuple[str, str] | None:
        """(Id, SyncToken) of the record whose lookup field holds ``value``, if exactly one does."""
        rows = await self.client.query(f"SELECT * FROM {obj} WHERE {external_id} = {quote(value)}", label="lookup")
        if len(rows) != 1:
            return None
        return str(rows[0]["Id"]), str(rows[0].get("SyncToken"))

    # ------------------------------------------------------------------ batches

    async def _write_batch(self, obj: str, external_id: str, items: list[_Item], tokens: dict[str, str]) -> None:
        requests: list[dict[str, Any]] = []
        sent: dict[str, _Item] = {}
        for n, item in enumerate(items):
            assert item.body is not None
            if item.target_id is not None:
                token = tokens.get(item.target_id)
                if token is None:
                    await self._write_one(obj, external_id, item, None)  # answers the gone-Id failure
                    continue
                body = {**item.body, "Id": item.target_id, "SyncToken": token, "sparse": True}
                requests.append({"bId": str(n), "operation": "update", obj: body})
            else:
                requests.append({"bId": str(n), "operation": "create", obj: item.body})
            sent[str(n)] = item
        if not requests:
            return
        if not self._batch_or_singles(len(requests)):
            self.batches_as_singles += 1
            self._standing_in += len(requests)
            try:
                await asyncio.gather(*(self._write_one(obj, external_id, item, tokens.get(item.target_id or ""))
                                       for item in sent.values()))
            finally:
                self._standing_in -= len(requests)
            return
        self._batches_queued += 1
        try:
            answers = await self.client.batch(requests, self._request_id(obj, "batch", requests), label=obj)
        finally:
            self._batches_queued -= 1
        again: list[_Item] = []
        for bid, item in sent.items():
            answer = answers.get(bid)
            entity = answer.get(obj) if answer else None
            if isinstance(entity, dict):
                item.result = RecordResult(item.key, True, str(entity["Id"]), created=item.target_id is None)
                continue
            fault = parse_fault(answer) if answer else None
            if fault is None:
                item.result = _failure(item.key, "QBO_NO_ANSWER", "the batch answered nothing for it", transient=True)
            elif fault.code in DUPLICATES or fault.code == STALE_OBJECT:
                again.append(item)  # finished one by one: found and updated, or re-read and re-applied
            else:
                item.result = _fault_result(item.key, fault)
        for item in again:
            token = None
            if item.target_id is not None:
                token = (await self._sync_tokens(obj, [item.target_id])).get(item.target_id)
            await self._write_one(obj, external_id, item, token)

    def _batch_or_singles(self, records: int) -> bool:
        """True to send a batch call; False when its slot is further off than the records' single calls would take
        behind those already standing in for other batches (the pacer caps them all at 10 a second, 500 a minute,
        max_concurrency in flight). Singles then end before the batch slots come back, and do not crowd out the
        batch calls (which count against the 10 a second and 500 a minute too)."""
        pacer = self.client.pacer
        wait = pacer.batch_wait()
        if wait <= 0:
            return True
        wait += self._batches_queued * 60 / self.config.batch_per_minute  # the batch calls ahead take slots first
        singles = pacer.seconds_for_calls(self._standing_in + records)
        log.debug("quickbooks.batch_slot", wait=round(wait, 2), singles=round(singles, 2), records=records)
        return wait <= singles

    def _request_id(self, obj: str, operation: str, body: Any) -> str:
        """The same request for the same pipeline, object and payload: Intuit replays instead of writing twice."""
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return str(uuid.uuid5(_NAMESPACE, f"{self.pipeline}|{obj}|{operation}|{digest}"))


def _fault_result(key: str, fault: Fault) -> RecordResult:
    return RecordResult(key, False, errors=[fault.record_error()])


def _failure(key: str, code: str, message: str, *, transient: bool = False) -> RecordResult:
    return RecordResult(key, False, errors=[RecordError(code, message, [], transient=transient)])
