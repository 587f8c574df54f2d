"""Record saves (create, update, upsert, delete) with the org's validation order and error shapes.

Every write path - single REST calls, sObject Collections, Composite, Bulk 2.0 -
goes through `Org`, so a record is judged the same way whichever API carried it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferry.sandbox.salesforce import org_rules, rules
from ferry.sandbox.salesforce.errors import RecordError
from ferry.sandbox.salesforce.ids import IdFactory, normalize_id
from ferry.sandbox.salesforce.schema import FieldSchema, Schema, SObjectSchema
from ferry.sandbox.salesforce.store import Record, Store, Table
from ferry.sandbox.salesforce.validate import Coercers, ParentRef, ParsedBody, format_datetime

RECYCLE_BIN_DAYS = 15  # a deleted record stays in the recycle bin (queryAll, getDeleted) this long
_AUDIT_FIELDS = ("CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp")


@dataclass(slots=True)
class SaveResult:
    id: str | None
    success: bool
    errors: list[RecordError] = field(default_factory=list)
    created: bool | None = None

    def as_json(self, with_created: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "success": self.success,
                               "errors": [e.as_collection_error() for e in self.errors]}
        if with_created:
            out["created"] = bool(self.created)
        return out


class MultipleMatches(Exception):
    """The upsert key matched several records (REST answers 300 Multiple Choices)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(ids)
        self.ids = ids


@dataclass(slots=True)
class ObjectPlan:
    """Per-object lists the save path needs on every record, computed once."""

    table: Table
    required: list[FieldSchema]
    defaults: list[FieldSchema]
    unique: list[FieldSchema]
    references: list[FieldSchema]
    auto_numbers: list[FieldSchema]
    before_save: rules.Rule | None
    org_rules: org_rules.ObjectRules | None  # None unless the schema file declares rules for the object


def access_error(names: list[str]) -> RecordError:
    return RecordError(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {', '.join(names)}. Please check the security settings of this field "
        "and verify that it is read/write for your profile or permission set.",
        names,
    )


def required_missing(names: list[str]) -> RecordError:
    return RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(names)}]", names)


class Org:
    def __init__(self, schema: Schema, store: Store, ids: IdFactory, clock: Callable[[], dt.datetime]) -> None:
        self.schema = schema
        self.store = store
        self.ids = ids
        self.clock = clock
        self.coercers = Coercers(schema)
        self.user_id = ""  # the acting user; set once the integration user is seeded
        self._auto_numbers: dict[str, int] = {}
        self._now_stamp, self._now_str = -1, ""
        # fault injection hook: True fails the save with UNABLE_TO_LOCK_ROW (see faults.py)
        self.lock_fails: Callable[[], bool] = lambda: False
        self._plans = {name: self._plan(obj) for name, obj in schema.objects.items()}

    def _plan(self, obj: SObjectSchema) -> ObjectPlan:
        fields = list(obj.fields.values())
        return ObjectPlan(
            table=self.store.table(obj.name),
            required=[f for f in fields if f.required_on_create],
            defaults=[f for f in fields if f.default_value is not None and f.createable],
            unique=[f for f in fields if f.unique],
            references=[f for f in fields if f.type == "reference" and (f.createable or f.updateable)],
            auto_numbers=[f for f in fields if f.auto_number],
            before_save=rules.BEFORE_SAVE.get(obj.name),
            org_rules=obj.rules if obj.rules else None,
        )

    def now_text(self) -> str:
        """The current time in wire form, formatted once per millisecond (Bulk saves thousands per ms)."""
        now = self.clock()
        stamp = (now.timestamp() * 1000).__floor__()
        if stamp != self._now_stamp:
            self._now_stamp, self._now_str = stamp, format_datetime(now)
        return self._now_str

    def _check_lock(self) -> None:
        if self.lock_fails():
            raise RecordError("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", [])

    def plan(self, obj: SObjectSchema) -> ObjectPlan:
        return self._plans[obj.name]

    def reset_counters(self) -> None:
        self._auto_numbers.clear()

    def auto_numbers(self) -> dict[str, int]:
        """The auto-number counters, keyed `Object.Field` (persisted by persist.py)."""
        return self._auto_numbers

    def restore_auto_numbers(self, counters: dict[str, int]) -> None:
        self._auto_numbers.update(counters)

    # --- public save operations: never raise RecordError, return a SaveResult ----------------------

    def create(self, obj: SObjectSchema, body: ParsedBody) -> SaveResult:
        try:
            self._check_lock()
            if body.id_given:
                raise RecordError("INVALID_FIELD", "The Id field should not be specified in the sobject data.", [])
            return SaveResult(self._insert(obj, body), True, [], True)
        except RecordError as err:
            return SaveResult(None, False, [err])

    def update(self, obj: SObjectSchema, raw_id: str | None, body: ParsedBody) -> SaveResult:
        try:
            self._check_lock()
            record_id = self.live_id(obj, raw_id)
            self._update(obj, record_id, body)
            return SaveResult(record_id, True, [], False)
        except RecordError as err:
            return SaveResult(normalize_id(raw_id or "") if raw_id else None, False, [err])

    def upsert(self, obj: SObjectSchema, key_field: FieldSchema, key_value: Any, body: ParsedBody) -> SaveResult:
        """Raises MultipleMatches when the key matches several records (REST answers 300)."""
        try:
            self._check_lock()
            if body.id_given and key_field.name != "Id":
                raise RecordError("INVALID_FIELD", "The Id field should not be specified in the sobject data.", [])
            if key_field.name == "Id":
                if key_value in (None, ""):
                    return SaveResult(self._insert(obj, body), True, [], True)
                record_id = self.live_id(obj, str(key_value))
                self._update(obj, record_id, body)
                return SaveResult(record_id, True, [], False)
            if key_value is None or key_value == "":
                raise RecordError("MISSING_ARGUMENT", f"{key_field.name} not specified", [])
            key = self.coercers.get(key_field)(key_value)
            matches = self.plan(obj).table.lookup(key_field, key)
            if len(matches) > 1:
                raise MultipleMatches(list(matches))
            if any(f is key_field for f, _ in body.values):
                body.values = [(f, v) for f, v in body.values if f is not key_field]
            if matches:
                record_id = matches[0]  # read before the update: the index list is live
                self._update(obj, record_id, body)
                return SaveResult(record_id, True, [], False)
            body.values.append((key_field, key_value))
            # the key was just looked up and is free: skip its unique check
            return SaveResult(self._insert(obj, body, skip_unique=key_field), True, [], True)
        except RecordError as err:
            return SaveResult(None, False, [err])

    def delete(self, raw_id: str, obj: SObjectSchema | None = None, hard: bool = False) -> SaveResult:
        try:
            record_id = normalize_id(raw_id)
            if record_id is None:
                raise RecordError("MALFORMED_ID", f"malformed id {raw_id}", [])
            table = self.store.table_for_id(record_id)
            if table is None or (obj is not None and table.schema is not obj):
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            if record_id not in table.rows:
                if record_id in table.deleted:
                    if hard:
                        self.store.purge(table, record_id)
                        return SaveResult(record_id, True)
                    raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            self._check_lock()  # a delete takes the row lock too
            if hard:
                self.store.hard_delete(table, record_id)
            else:
                now = self.now_text()
                self.store.soft_delete(table, record_id, {"IsDeleted": True, "LastModifiedDate": now,
                                                          "SystemModstamp": now})
            return SaveResult(record_id, True)
        except RecordError as err:
            return SaveResult(None, False, [err])

    def empty_recycle_bin(self) -> int:
        """Purge records deleted more than RECYCLE_BIN_DAYS ago, as the org's recycle bin does; returns how many.

        Run lazily before anything that reads the recycle bin (queryAll, getDeleted): the result is the same
        as a background purge, without a timer.
        """
        cutoff = format_datetime(self.clock() - dt.timedelta(days=RECYCLE_BIN_DAYS))
        purged = 0
        for table in self.store.tables.values():
            expired = [rid for rid, rec in table.deleted.items() if rec.get("SystemModstamp", cutoff) < cutoff]
            for record_id in expired:
                self.store.purge(table, record_id)
            purged += len(expired)
        return purged

    # --- lookups ------------------------------------------------------------------------------------

    def live_id(self, obj: SObjectSchema, raw_id: str | None) -> str:
        """The 18-char id of a live record of ``obj``, or the org's error for a bad, missing or deleted one."""
        if not raw_id:
            raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", [])
        record_id = normalize_id(raw_id)
        if record_id is None or record_id[:3] != obj.key_prefix:
            raise RecordError("MALFORMED_ID", f"{obj.label} ID: id value of incorrect type: {raw_id}", ["Id"])
        table = self.plan(obj).table
        if record_id in table.rows:
            return record_id
        if record_id in table.deleted:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
        raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])

    def resolve_ref(self, ref: ParentRef) -> str | None:
        if ref.value is None or ref.value == "":
            return None
        if ref.key_field.name == "Id":
            record_id = normalize_id(str(ref.value))
            if record_id is not None and record_id in self.store.table(ref.parent.name).rows:
                return record_id
            matches: list[str] = []
        else:
            key = self.coercers.get(ref.key_field)(ref.value)
            matches = self.store.table(ref.parent.name).lookup(ref.key_field, key)
        if len(matches) == 1:
            return matches[0]
        verb = "not found" if not matches else "matched more than 1 record"
        raise RecordError(
            "INVALID_FIELD",
            f"Foreign key external ID: {ref.value} {verb} for field {ref.key_field.name} in entity {ref.parent.name}",
            [],
        )

    # --- the save path ------------------------------------------------------------------------------

    def _changes(self, obj: SObjectSchema, body: ParsedBody, current: Record | None) -> Record:
        """Coerce the body into stored values; checks write access first, as the org does."""
        creating = current is None
        changes: Record = {}
        denied: list[str] = []
        coercers = self.coercers
        for f, raw in body.values:
            value = None if raw is None else (f.coercer or coercers.get(f))(raw)
            if not (f.createable if creating else f.updateable):
                # Re-sending a read-only value unchanged (e.g. OrderItem.OrderId on an upsert) is not a change.
                if current is None or current.get(f.name) != value:
                    denied.append(f.name)
                continue
            changes[f.name] = value
        for ref in body.refs:
            value = self.resolve_ref(ref)
            f = ref.field
            if not (f.createable if creating else f.updateable):
                if current is None or current.get(f.name) != value:
                    denied.append(f.name)
                continue
            changes[f.name] = value
        if denied:
            raise access_error(denied)
        return changes

    def _check_references(self, plan: ObjectPlan, record: Record, changes: Record) -> None:
        for f in plan.references:
            value = changes.get(f.name)
            if value is None:
                continue
            table = self.store.table_for_id(value)
            if table is not None and value not in table.rows:
                if value in table.deleted:
                    raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])

    def _check_unique(self, plan: ObjectPlan, record_id: str, changes: Record,
                      skip: FieldSchema | None = None) -> None:
        for f in plan.unique:
            value = changes.get(f.name)
            if value is None or f is skip:
                continue
            others = [i for i in plan.table.lookup(f, value) if i != record_id]
            if others:
                message = f"duplicate value found: {f.name} duplicates value on record with id: {others[0]}"
                raise RecordError("DUPLICATE_VALUE", message, [])

    def _insert(self, obj: SObjectSchema, body: ParsedBody, skip_unique: FieldSchema | None = None) -> str:
        plan = self.plan(obj)
        record = self._changes(obj, body, None)
        for f in plan.defaults:
            if f.name not in record:
                record[f.name] = f.default_value
        missing = [f.name for f in plan.required if record.get(f.name) is None]
        if missing:
            raise required_missing(missing)
        self._check_references(plan, record, record)
        record_id = self.ids.new(obj.key_prefix)
        now = self.now_text()
        record["Id"] = record_id
        record["IsDeleted"] = False
        record["CreatedDate"] = record["LastModifiedDate"] = record["SystemModstamp"] = now
        record["CreatedById"] = record["LastModifiedById"] = self.user_id
        if obj.owned and record.get("OwnerId") is None:
            record["OwnerId"] = self.user_id
        if plan.before_save is not None:
            plan.before_save(record, self.store, None)
        if plan.org_rules is not None:
            self._apply_org_rules(obj, plan, record, None, record, body)
        self._check_unique(plan, record_id, record, skip_unique)
        for f in plan.auto_numbers:
            record[f.name] = self._next_auto_number(obj, f)
        self.store.insert(plan.table, record)
        return record_id

    def _update(self, obj: SObjectSchema, record_id: str, body: ParsedBody) -> None:
        plan = self.plan(obj)
        current = plan.table.rows[record_id]
        changes = self._changes(obj, body, current)
        nulled = [f.name for f in plan.required if f.name in changes and changes[f.name] is None]
        if nulled:
            raise required_missing(nulled)
        self._check_references(plan, current, changes)
        record = {**current, **changes}
        now = self.now_text()
        record["LastModifiedDate"] = record["SystemModstamp"] = now
        record["LastModifiedById"] = self.user_id
        if plan.before_save is not None:
            plan.before_save(record, self.store, current)
        if plan.org_rules is not None:
            self._apply_org_rules(obj, plan, record, current, changes, body)
        self._check_unique(plan, record_id, changes)
        self.store.replace(plan.table, record_id, record)

    def _apply_org_rules(self, obj: SObjectSchema, plan: ObjectPlan, record: Record, old: Record | None,
                         changes: Record, body: ParsedBody) -> None:
        """The configured rules, in the org's order: record type, validation rules, duplicate rules."""
        configured = plan.org_rules
        assert configured is not None
        labels = {f.name: f.label for f in obj.fields.values()}
        org_rules.apply_record_type(configured, record, changes, labels, old is None)
        org_rules.run_validation_rules(configured, record, old, lambda n: (obj.field(n) or obj.fields["Id"]).name)
        if configured.duplicates:
            org_rules.find_duplicates(configured, obj.name, record, old is None, body.duplicate_header,
                                      lambda: list(plan.table.rows.values()), body.api_version)

    def _next_auto_number(self, obj: SObjectSchema, f: FieldSchema) -> str:
        key = f"{obj.name}.{f.name}"
        n = self._auto_numbers.get(key, rules.AUTO_NUMBER_START.get(f.name, 1) - 1) + 1
        self._auto_numbers[key] = n
        return rules.auto_number_format(f.name, n)

    def seed_record(self, obj_name: str, values: Record) -> str:
        """Insert a record bypassing access checks (seeding read-only fields such as IsStandard)."""
        obj = self.schema.objects[obj_name]
        plan = self.plan(obj)
        record_id = self.ids.new(obj.key_prefix)
        now = self.now_text()
        record: Record = {f.name: f.default_value for f in plan.defaults}
        record.update(values)
        record.update({"Id": record_id, "IsDeleted": False, "CreatedDate": now, "LastModifiedDate": now,
                       "SystemModstamp": now, "CreatedById": self.user_id or record_id,
                       "LastModifiedById": self.user_id or record_id})
        if obj.owned:
            record.setdefault("OwnerId", self.user_id)
        if plan.before_save is not None:
            plan.before_save(record, self.store, None)
        self.store.insert(plan.table, record)
        return record_id
