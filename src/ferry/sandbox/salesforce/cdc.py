"""Change Data Capture: every committed record change becomes a change event on the org's event bus.

The store reports each insert, update, delete and undelete here (`ChangeCapture.record`), so no write
path (REST, Collections, Composite, Bulk, admin) can skip it. Changes made inside a store transaction
are held until the outermost transaction ends and are dropped when it rolls back, exactly like the
org, which publishes change events only for committed transactions.

Events are the CometD JSON shape (Change Data Capture Developer Guide, "Change Event Message
Structure" and "Change Event Body Fields" for CometD clients):

    {"schema": "...", "payload": {"ChangeEventHeader": {...}, <fields>}, "event": {"replayId": N}}

- CREATE carries every non-empty field, UPDATE only the changed ones (a field set to null is sent as
  null) plus LastModifiedDate, DELETE only the header, UNDELETE every non-empty field.
- `changedFields` lists field names on UPDATE (compound components as `Name.FirstName`,
  `BillingAddress.City`) and is empty otherwise. There is no `nulledFields`/`diffFields` in a CometD
  message (they exist only in Pub/Sub API and Apex): a nulled field is an UPDATE field with value null.
- Datetimes are UTC `2024-05-01T10:00:00Z` strings (Pub/Sub sends epoch millis instead).
- Compound fields (Contact/Lead `Name`, `BillingAddress`, `MailingAddress`, ...) are nested objects.
- Replay ids grow monotonically; events are kept for a retention window (72 h by default) and up to
  a maximum count, oldest dropped first.
- Gap events ("Gap Events"): when the org cannot build a change event it publishes the header only, with
  `changeType` `GAP_CREATE`/`GAP_UPDATE`/`GAP_DELETE`/`GAP_UNDELETE` and the record ids, no fields.
  `CdcConfig.gap_next = n` makes the next n record changes gap events (the org's causes: an event over
  1 MB, an internal error, a change applied directly in the database).
- Overflow events ("Overflow Events"): a transaction's first `overflow_threshold` (100,000) changes are
  change events; the rest become one `GAP_OVERFLOW` event per entity, header only, with the empty record
  id `000000000000000AAA`. A create, delete or undelete counts 1; an update counts each changed field.
"""

from __future__ import annotations

import base64
import bisect
import contextvars
import datetime as dt
import hashlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ferry.sandbox.salesforce.schema import Schema, SObjectSchema

RETENTION_SECONDS = 72 * 3600  # Salesforce keeps change events for 72 hours
MAX_EVENTS = 100_000
OVERFLOW_THRESHOLD = 100_000  # changes per transaction published as change events; the rest overflow
EMPTY_RECORD_ID = "000000000000000AAA"  # the recordIds of an overflow event
GAP_PREFIX = "GAP_"
OVERFLOW = "GAP_OVERFLOW"
CHANGE_EVENTS_CHANNEL = "/data/ChangeEvents"

# Fields change events never carry: the id is in recordIds; the rest are not tracked by CDC.
_UNTRACKED = frozenset({"Id", "IsDeleted", "SystemModstamp", "LastViewedDate", "LastReferencedDate",
                        "LastActivityDate"})
_ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country", "StateCode", "CountryCode", "Latitude",
                  "Longitude", "GeocodeAccuracy")
_ADDRESS_PREFIXES = ("Billing", "Shipping", "Mailing", "Other", "")
_NAME_PARTS = ("Salutation", "FirstName", "MiddleName", "LastName", "Suffix")
_PERSON_NAME_OBJECTS = frozenset({"Contact", "Lead", "User"})


@dataclass(frozen=True, slots=True)
class Origin:
    """Who is writing, for changeOrigin and commitUser: set per API request by the app."""

    change_origin: str = ""
    user_id: str = ""


NO_ORIGIN = Origin()  # frozen, so sharing it as the default is safe
current_origin: contextvars.ContextVar[Origin] = contextvars.ContextVar("sf_change_origin",
                                                                        default=NO_ORIGIN)


def origin_for(api: str, version: str, call_options: str | None, user_id: str) -> Origin:
    """`com/salesforce/api/<api>/<ver>[;client=<id>]`; client= only if Sforce-Call-Options named one."""
    text = f"com/salesforce/api/{api}/{version}"
    client = _call_option_client(call_options)
    if client:
        text += f";client={client}"
    return Origin(text, user_id)


def _call_option_client(header: str | None) -> str | None:
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "client" and value.strip():
            return value.strip()
    return None


@dataclass(slots=True)
class ChangeEvent:
    """One retained event. `change` is the compact record of what happened (kept and persisted);
    the CometD message is rendered from it only when someone reads the event (Bulk loads of 100,000
    rows with no subscriber must not pay for building 100,000 messages)."""

    replay_id: int
    entity: str
    created: float  # epoch seconds, for retention
    change: dict[str, Any]  # type, id, more (merged ids), fields, origin, user, seq, commit (the transaction)
    rendered: dict[str, Any] | None = None


@dataclass
class CdcConfig:
    retention_seconds: float = RETENTION_SECONDS
    max_events: int = MAX_EVENTS
    entities: set[str] | None = None  # None: every object the org has
    overflow_threshold: int = OVERFLOW_THRESHOLD
    gap_next: int = 0  # the next n record changes are published as gap events (a fault switch for tests)


@dataclass(slots=True)
class _Waiter:
    callback: Callable[[], None]


class EventBus:
    """Retained change events in replay-id order, with wake-ups for long-polling subscribers."""

    def __init__(self, config: CdcConfig, clock: Callable[[], float] = time.time,
                 render: Callable[[ChangeEvent], dict[str, Any]] | None = None) -> None:
        self.config = config
        self.render = render or (lambda e: {"payload": {}, "event": {"replayId": e.replay_id}})
        self.clock = clock
        self.events: list[ChangeEvent] = []
        self._ids: list[int] = []  # replay ids of `events`, for bisect
        self.last_replay_id = 0
        self.last_pruned_id = 0  # newest replay id dropped by retention (0: none)
        self.unpersisted: list[ChangeEvent] = []  # appended since the last persistence flush
        self.pruned_since_flush = False
        self._listeners: set[Callable[[], None]] = set()

    def append(self, entity: str, change: dict[str, Any], now: float) -> ChangeEvent:
        self.last_replay_id += 1
        event = ChangeEvent(self.last_replay_id, entity, now, change)
        self.events.append(event)
        self._ids.append(event.replay_id)
        self.unpersisted.append(event)
        return event

    def message(self, event: ChangeEvent) -> dict[str, Any]:
        """The CometD `data` object of an event: schema, payload, event.replayId (rendered once)."""
        rendered = event.rendered
        if rendered is None:
            rendered = event.rendered = self.render(event)
        return rendered

    def notify(self) -> None:
        if self._listeners:
            for listener in tuple(self._listeners):
                listener()

    def listen(self, callback: Callable[[], None]) -> None:
        self._listeners.add(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        self._listeners.discard(callback)

    def prune(self, now: float | None = None) -> None:
        """Drop events past the retention window or over the maximum count, oldest first."""
        events = self.events
        horizon = (self.clock() if now is None else now) - self.config.retention_seconds
        if not events or (events[0].created >= horizon and len(events) <= self.config.max_events):
            return  # the common case, checked on every commit
        drop = 0
        while drop < len(self.events) and self.events[drop].created < horizon:
            drop += 1
        drop = max(drop, len(self.events) - max(0, self.config.max_events))
        if drop > 0:
            self.last_pruned_id = self.events[drop - 1].replay_id
            del self.events[:drop]
            del self._ids[:drop]
            self.pruned_since_flush = True

    def has_replay_id(self, replay_id: int) -> bool:
        """A replay id a subscriber may resume after: a retained event, or the retention edge itself."""
        self.prune()
        if replay_id == self.last_pruned_id and replay_id > 0:
            return True
        i = bisect.bisect_left(self._ids, replay_id)
        return i < len(self._ids) and self._ids[i] == replay_id

    def after(self, replay_id: int) -> Iterator[ChangeEvent]:
        """Retained events with a replay id greater than `replay_id`, in order."""
        self.prune()
        start = bisect.bisect_right(self._ids, replay_id)
        return itertools.islice(self.events, start, None)

    def oldest_cursor(self) -> int:
        """The cursor of replay -2: just before the oldest retained event."""
        self.prune()
        return self.events[0].replay_id - 1 if self.events else self.last_replay_id

    def restore(self, events: Iterable[ChangeEvent], last_replay_id: int, last_pruned_id: int) -> None:
        self.events = sorted(events, key=lambda e: e.replay_id)
        self._ids = [e.replay_id for e in self.events]
        self.last_replay_id = max(last_replay_id, self._ids[-1] if self._ids else 0)
        self.last_pruned_id = last_pruned_id
        self.unpersisted = []

    def clear(self) -> None:
        """Forget every event; replay ids keep growing so old cursors never match new events."""
        self.events = []
        self._ids = []
        self.last_pruned_id = self.last_replay_id
        self.unpersisted = []
        self.pruned_since_flush = True


class ChangeCapture:
    """Turns store changes into change events (the store calls `record`, `discard_from` and `commit`)."""

    def __init__(self, schema: Schema, config: CdcConfig | None = None, clock: Callable[[], float] = time.time,
                 default_user: Callable[[], str] = lambda: "") -> None:
        self.schema = schema
        self.config = config or CdcConfig()
        self.bus = EventBus(self.config, clock, self._render)
        self.clock = clock
        self.default_user = default_user
        # (journal mark, entity, compact change) of the open transaction; tx/seq/commit are set on commit
        self._pending: list[tuple[int, str, dict[str, Any]]] = []
        self._paused = 0
        self._commit_number = 0
        self._tx_prefix = str(uuid.uuid4())[:24]  # transaction keys: this prefix + a counter, uuid-shaped
        self._schema_ids: dict[str, str] = {}
        self._field_plans: dict[str, dict[str, tuple[str | None, str, bool] | None]] = {}

    # --- configuration ------------------------------------------------------------------------------

    def publishes(self, entity: str) -> bool:
        selected = self.config.entities
        return selected is None or entity in selected

    def select_entities(self, names: Iterable[str] | None) -> None:
        if names is None:
            self.config.entities = None
            return
        chosen = set()
        for name in names:
            obj = self.schema.get(name)
            if obj is None:
                raise ValueError(f"unknown sObject {name!r} selected for Change Data Capture")
            chosen.add(obj.name)
        self.config.entities = chosen

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Writes that are not changes a subscriber should see (the org's seed records)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    # --- hooks called by the store ------------------------------------------------------------------

    def record(self, journal_mark: int, obj: SObjectSchema, change_type: str, record_id: str,
               old: dict[str, Any] | None, new: dict[str, Any] | None, autocommit: bool = False) -> None:
        """One record change; `autocommit`: it is a transaction of its own (a write outside transaction())."""
        if self._paused or not self.publishes(obj.name):
            return
        if change_type == "UPDATE":
            assert old is not None and new is not None
            values = {k: v for k, v in new.items() if k not in _UNTRACKED and old.get(k) != v}
            if not values or list(values) == ["LastModifiedDate"]:
                return  # the org publishes no event for a save that changed nothing
            # always listed, and last, as in the org's examples (`["Industry", "LastModifiedDate"]`)
            values["LastModifiedDate"] = values.pop("LastModifiedDate", new.get("LastModifiedDate"))
        elif change_type == "DELETE":
            values = {}
        else:  # CREATE, UNDELETE: null fields are left out when rendered
            assert new is not None
            # No copy: a stored record dict is never mutated (writes replace it), the same invariant the
            # store's undo journal relies on; sharing it halves what a retained event costs.
            values = new
        origin = current_origin.get()
        if self.config.gap_next > 0:
            self.config.gap_next -= 1
            change_type, values = GAP_PREFIX + change_type, {}  # the header only: no field values
        change: dict[str, Any] = {"type": change_type, "id": record_id, "fields": values,
                                  "origin": origin.change_origin, "user": origin.user_id}
        if autocommit and not self._pending and _weight(change) <= self.config.overflow_threshold:
            # a single-record REST write (its own transaction): publish at once, skipping the pending list
            self._commit_number += 1
            change["seq"], change["commit"] = 1, self._commit_number
            now = self.clock()
            self.bus.append(obj.name, change, now)
            self.bus.prune(now)
            self.bus.notify()
            return
        self._pending.append((journal_mark, obj.name, change))
        if autocommit:
            self.commit()

    def discard_from(self, journal_mark: int) -> None:
        """A rollback to `journal_mark`: the changes made after it never happened."""
        while self._pending and self._pending[-1][0] >= journal_mark:
            self._pending.pop()

    def commit(self) -> None:
        """The end of a transaction: publish its changes as one transaction (shared transactionKey)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        now = self.clock()
        self._commit_number = number = self._commit_number + 1
        append = self.bus.append
        for sequence, (entity, change) in enumerate(self._overflowed(self._merged(pending)), start=1):
            change["seq"], change["commit"] = sequence, number
            append(entity, change, now)
        self.bus.prune(now)
        self.bus.notify()

    def _merged(self, pending: list[tuple[int, str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """The org merges the same UPDATE or DELETE of several records of one object in one transaction and
        second into one event listing every record id ("Merged Change Events"); CREATEs carry different
        values, so they are never merged."""
        if len(pending) == 1:
            return [(pending[0][1], pending[0][2])]
        out: list[tuple[str, dict[str, Any]]] = []
        first_of: dict[tuple[str, str, bytes], dict[str, Any]] = {}
        for _, entity, change in pending:
            if change["type"] in ("UPDATE", "DELETE"):
                key = (entity, change["type"], self._body_key(entity, change["fields"]))
                first = first_of.get(key)
                if first is not None:
                    first.setdefault("more", []).append(change["id"])
                    continue
                first_of[key] = change
            out.append((entity, change))
        return out

    def _overflowed(self, changes: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """The first `overflow_threshold` changes of a transaction as they are; the rest become one
        GAP_OVERFLOW event per entity (header only, the empty record id), in the order entities appear."""
        threshold = self.config.overflow_threshold
        total = 0
        out: list[tuple[str, dict[str, Any]]] = []
        overflowed: dict[str, dict[str, Any]] = {}
        for entity, change in changes:
            total += _weight(change)
            if total <= threshold:
                out.append((entity, change))
            elif entity not in overflowed:
                overflowed[entity] = {"type": OVERFLOW, "id": EMPTY_RECORD_ID, "fields": {},
                                      "origin": change["origin"], "user": change["user"]}
                out.append((entity, overflowed[entity]))
        return out

    def _body_key(self, entity: str, fields: dict[str, Any]) -> bytes:
        # the body as the subscriber would see it: datetimes at the second, untracked fields left out
        plan = self._field_plan(self.schema.objects[entity])
        body = {name: cometd_datetime(v) if target[2] else v
                for name, v in fields.items() if (target := plan.get(name)) is not None}
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    # --- event shape --------------------------------------------------------------------------------

    def header(self, event: ChangeEvent) -> dict[str, Any]:
        """The ChangeEventHeader fields CometD and Pub/Sub API share (each adds its own changedFields)."""
        change = event.change
        return {
            "entityName": event.entity,
            "recordIds": [change["id"], *change.get("more", ())],
            "changeType": change["type"],
            "changeOrigin": change["origin"],
            "transactionKey": f"{self._tx_prefix}{change['commit']:012x}",
            "sequenceNumber": change["seq"],
            "commitTimestamp": int(event.created * 1000),
            "commitNumber": 10_000_000_000 + change["commit"],
            "commitUser": change["user"] or self.default_user(),
        }

    def _render(self, event: ChangeEvent) -> dict[str, Any]:
        change = event.change
        obj = self.schema.objects[event.entity]
        header = {**self.header(event), "changedFields": []}
        payload: dict[str, Any] = {"ChangeEventHeader": header}
        changed: list[str] = []
        plan = self._field_plan(obj)
        for name, value in change["fields"].items():
            target = plan.get(name)
            if target is None or (value is None and change["type"] != "UPDATE"):
                continue
            compound, part, is_datetime = target
            if is_datetime:
                value = cometd_datetime(value)
            if compound is None:
                payload[part] = value
                changed.append(part)
            else:
                payload.setdefault(compound, {})[part] = value
                changed.append(f"{compound}.{part}")
        if change["type"] == "UPDATE":
            header["changedFields"] = changed
        return {"schema": self._schema_id(obj), "payload": payload, "event": {"replayId": event.replay_id}}

    def field_plan(self, obj: SObjectSchema) -> dict[str, tuple[str | None, str, bool] | None]:
        """Per field of an entity: where change events carry it (compound, part, is_datetime), or None."""
        return self._field_plan(obj)

    def _field_plan(self, obj: SObjectSchema) -> dict[str, tuple[str | None, str, bool] | None]:
        """Per field of an entity: where it goes in the event (compound, part, is_datetime), or None."""
        plan = self._field_plans.get(obj.name)
        if plan is None:
            plan = {}
            for name, f in obj.fields.items():
                if name in _UNTRACKED or (f.calculated and not _is_name_part(obj.name, name)):
                    plan[name] = None
                    continue
                compound, part = compound_path(obj.name, name, obj.fields)
                plan[name] = (compound, part, f.type == "datetime")
            self._field_plans[obj.name] = plan
        return plan

    def _schema_id(self, obj: SObjectSchema) -> str:
        """A stable 22-character schema id per entity field set, like the org's Avro schema ids."""
        sid = self._schema_ids.get(obj.name)
        if sid is None:
            digest = hashlib.sha256(("|".join([obj.name, *obj.fields])).encode()).digest()
            sid = base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")
            self._schema_ids[obj.name] = sid
        return sid


def _weight(change: dict[str, Any]) -> int:
    """What a change counts toward the overflow threshold: each changed field of an update, else 1."""
    if change["type"] == "UPDATE":
        return len(change["fields"]) * (1 + len(change.get("more", ())))
    return 1 + len(change.get("more", ()))


def cometd_datetime(value: Any) -> Any:
    """REST's `2024-05-01T10:00:00.000+0000` -> the CometD event's UTC `2024-05-01T10:00:00Z`."""
    if not isinstance(value, str):
        return value
    try:
        parsed = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return value
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_name_part(obj_name: str, field_name: str) -> bool:
    return obj_name in _PERSON_NAME_OBJECTS and field_name in _NAME_PARTS


def compound_path(obj_name: str, field_name: str, fields: Any) -> tuple[str | None, str]:
    """`FirstName` of a Contact -> ("Name", "FirstName"); `BillingCity` -> ("BillingAddress", "City")."""
    if _is_name_part(obj_name, field_name):
        return "Name", field_name
    for prefix in _ADDRESS_PREFIXES:
        if not field_name.startswith(prefix):
            continue
        part = field_name[len(prefix):]
        if part in _ADDRESS_PARTS and (prefix or f"{prefix}Street" in fields):
            return f"{prefix}Address", part
    return None, field_name


def channel_entities(channel: str, schema: Schema) -> set[str] | None:
    """The entities a CDC channel carries: None for /data/ChangeEvents; empty set when no such channel."""
    if channel == CHANGE_EVENTS_CHANNEL:
        return None
    if not channel.startswith("/data/") or not channel.endswith("ChangeEvent"):
        return set()
    stem = channel[len("/data/"):-len("ChangeEvent")]
    if "__" in stem and not stem.endswith("__"):
        return set()  # a custom object Name__c is /data/Name__ChangeEvent, never Name__cChangeEvent
    name = stem + "c" if stem.endswith("__") else stem
    obj = schema.get(name)
    if obj is None or obj.name != name:
        return set()
    return {obj.name}


@dataclass
class CdcStats:
    retained: int = 0
    last_replay_id: int = 0
    by_entity: dict[str, int] = field(default_factory=dict)


def stats(bus: EventBus) -> CdcStats:
    bus.prune()
    out = CdcStats(len(bus.events), bus.last_replay_id)
    for e in bus.events:
        out.by_entity[e.entity] = out.by_entity.get(e.entity, 0) + 1
    return out
