"""Change events as Pub/Sub API delivers them: Avro records of the entity's change event schema.

The event itself is the one the CometD side delivers (cdc.py's event log, same replay id, same header
values); only its form differs, as the Change Data Capture Developer Guide ("Change Event Body Fields",
"Differences Between Change Events Received with Streaming API vs. Pub/Sub API") and the Pub/Sub API
guide ("Event Deserialization Considerations") describe:

- The record has every field of the schema: unchanged and empty ones are null. CREATE and UNDELETE
  carry every non-empty field, UPDATE only the changed ones, DELETE none.
- `changedFields`, `nulledFields` and `diffFields` are bitmaps, not names: `["0x650004E0", "4-0x10"]`,
  where bit i of the first element is the schema's i-th field and `"<pos>-0x.."` covers the parts of the
  compound field at position pos (decoded by Salesforce's ChangeEventHeaderUtility.py). As on CometD,
  a compound field's change is listed by its parts. diffFields is always empty: the sandbox never
  sends a large text field as a diff.
- Dates and datetimes are epoch milliseconds (longs); times are milliseconds after midnight.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ferry.sandbox.salesforce.pubsub.avrocodec import Codec, schema_id

if TYPE_CHECKING:
    from ferry.sandbox.salesforce.cdc import ChangeCapture, ChangeEvent
    from ferry.sandbox.salesforce.schema import FieldSchema, SObjectSchema

NAMESPACE = "com.sforce.eventbus"
CHANGE_TYPES = ["CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_DELETE",
                "GAP_UNDELETE", "GAP_OVERFLOW", "SNAPSHOT"]
_STRING_ARRAY = {"type": "array", "items": "string"}
HEADER_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "ChangeEventHeader", "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": _STRING_ARRAY},
        {"name": "changeType", "type": {"type": "enum", "name": "ChangeType", "symbols": CHANGE_TYPES}},
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": _STRING_ARRAY},
        {"name": "diffFields", "type": _STRING_ARRAY},
        {"name": "changedFields", "type": _STRING_ARRAY},
    ],
}
# Compound fields are nested records. An address has every part, whether or not this sandbox's object has
# it (as the org's schemas do); a person name has the parts the org always has plus those the object defines.
_ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country", "StateCode", "CountryCode", "Latitude",
                  "Longitude", "GeocodeAccuracy")
_NAME_PARTS = ("Salutation", "FirstName", "LastName")
_OPTIONAL_NAME_PARTS = ("MiddleName", "Suffix")
_AVRO_TYPES = {"boolean": "boolean", "int": "int", "double": "double", "currency": "double", "percent": "double",
               "date": "long", "datetime": "long", "time": "long"}
# Each field's `doc` is "<role>:<Salesforce data type>", as in the schemas GetSchema returns on an org.
_DOCS = {"reference": "ForeignKey:EntityId", "boolean": "Data:Boolean", "int": "Data:Integer", "double": "Data:Double",
         "currency": "Data:Currency", "percent": "Data:Percent", "date": "Data:DateOnly", "datetime": "Data:DateTime",
         "time": "Data:TimeOnly", "phone": "Data:Phone", "email": "Data:Email", "url": "Data:Url",
         "picklist": "Data:DynamicEnum", "multipicklist": "Data:MultiEnum", "textarea": "Data:StringPlusClob"}


def change_event_name(entity: str) -> str:
    """Account -> AccountChangeEvent; Foo__c -> Foo__ChangeEvent."""
    return f"{entity[:-1]}ChangeEvent" if entity.endswith("__c") else f"{entity}ChangeEvent"


@dataclass
class EntityLayout:
    """One entity's change event schema and where each of its fields sits in it."""

    schema: dict[str, Any]
    schema_id: str
    schema_json: str
    codec: Codec
    positions: dict[str, int] = field(default_factory=dict)  # top-level field name -> index in the record
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # compound field -> its record's parts
    convert: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # sObject field -> Avro value


class ChangeEventSchemas:
    """Builds (once per entity) and applies the Avro change event schemas."""

    def __init__(self, cdc: ChangeCapture) -> None:
        self.cdc = cdc
        self._layouts: dict[str, EntityLayout] = {}
        self._by_id: dict[str, EntityLayout] = {}

    def entities(self) -> Iterable[str]:
        return self.cdc.schema.objects

    def layout(self, entity: str) -> EntityLayout:
        layout = self._layouts.get(entity)
        if layout is None:
            layout = self._layouts[entity] = self._build(self.cdc.schema.objects[entity])
            self._by_id[layout.schema_id] = layout
        return layout

    def by_schema_id(self, sid: str) -> EntityLayout | None:
        if sid not in self._by_id:
            for entity in self.entities():
                self.layout(entity)
        return self._by_id.get(sid)

    def _build(self, obj: SObjectSchema) -> EntityLayout:
        fields: list[dict[str, Any]] = [{"name": "ChangeEventHeader", "type": HEADER_SCHEMA,
                                         "doc": "Data:ComplexValueType"}]
        layout_parts: dict[str, tuple[str, ...]] = {}
        convert: dict[str, Callable[[Any], Any]] = {}
        defined: set[str] = set()
        for name, target in self.cdc.field_plan(obj).items():
            if target is None:
                continue
            compound, part, _ = target
            convert[name] = _converter(obj.fields[name])
            if compound is None:
                fields.append({"name": part, "type": ["null", _avro_type(obj.fields[name])],
                               "doc": _doc(obj.fields[name]), "default": None})
            elif compound not in layout_parts:
                record = "PersonName" if compound == "Name" else "Address"
                parts = _ADDRESS_PARTS if record == "Address" else (
                    *_NAME_PARTS, *(p for p in _OPTIONAL_NAME_PARTS if p in obj.fields))
                layout_parts[compound] = parts
                fields.append({"name": compound, "type": ["null", _compound_schema(record, parts, defined)],
                               "doc": f"Data:{record}", "default": None})
        schema = {"type": "record", "name": change_event_name(obj.name), "namespace": NAMESPACE, "fields": fields}
        positions = {f["name"]: i for i, f in enumerate(fields)}
        return EntityLayout(schema, schema_id(schema), orjson.dumps(schema).decode(), Codec(schema), positions,
                            layout_parts, convert)

    def encode(self, event: ChangeEvent) -> tuple[str, bytes]:
        """(schema id, Avro payload) of one retained change event."""
        layout = self.layout(event.entity)
        return layout.schema_id, layout.codec.encode(self.record(event, layout))

    def record(self, event: ChangeEvent, layout: EntityLayout) -> dict[str, Any]:
        change = event.change
        is_update = change["type"] == "UPDATE"
        plan = self.cdc.field_plan(self.cdc.schema.objects[event.entity])
        body: dict[str, Any] = {}
        changed: list[tuple[str | None, str]] = []
        nulled: list[tuple[str | None, str]] = []
        for name, value in change["fields"].items():
            target = plan.get(name)
            if target is None or (value is None and not is_update):
                continue
            compound, part, _ = target
            converted = None if value is None else layout.convert[name](value)
            if compound is None:
                body[part] = converted
            else:
                body.setdefault(compound, dict.fromkeys(layout.parts[compound]))[part] = converted
            if is_update:
                changed.append((compound, part))
                if value is None:
                    nulled.append((compound, part))
        header = {**self.cdc.header(event), "changedFields": _bitmap(changed, layout),
                  "nulledFields": _bitmap(nulled, layout), "diffFields": []}
        return {"ChangeEventHeader": header, **body}


def _compound_schema(record: str, parts: tuple[str, ...], defined: set[str]) -> Any:
    """The compound record's schema the first time, its name after (Avro names are defined once)."""
    if record in defined:
        return record
    defined.add(record)
    return {"type": "record", "name": record, "fields": [
        {"name": p, "type": ["null", "double" if p in ("Latitude", "Longitude") else "string"], "default": None}
        for p in parts]}


def _avro_type(f: FieldSchema) -> str:
    return _AVRO_TYPES.get(f.type, "string")


def _doc(f: FieldSchema) -> str:
    if f.name == "CreatedDate":
        return "CreatedDate:DateTime"
    if f.auto_number:
        return "Data:AutoNumber"
    if f.type == "textarea" and f.length <= 255:
        return "Data:MultiLineText"
    return _DOCS.get(f.type, "Data:Text")


def _converter(f: FieldSchema) -> Callable[[Any], Any]:
    kind = f.type
    if kind == "datetime":
        return epoch_millis
    if kind == "date":
        return lambda v: epoch_millis(f"{v}T00:00:00.000+0000") if isinstance(v, str) else v
    if kind == "time":
        return _time_millis
    if kind == "int":
        return int
    if kind in ("double", "currency", "percent"):
        return float
    if kind == "boolean":
        return bool
    return str


def epoch_millis(value: Any) -> Any:
    """REST's `2024-05-01T10:00:00.000+0000` -> 1714557600000."""
    if not isinstance(value, str):
        return value
    for pattern in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return int(dt.datetime.strptime(value.replace("Z", "+0000"), pattern).timestamp() * 1000)
        except ValueError:
            continue
    raise ValueError(f"not a datetime: {value!r}")


def _time_millis(value: Any) -> int:
    """`10:30:00.000Z` -> milliseconds after midnight."""
    text = str(value).rstrip("Z")
    hours, minutes, seconds = text.split(":")
    return int((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000)


def _bitmap(fields: list[tuple[str | None, str]], layout: EntityLayout) -> list[str]:
    """Field positions as the org's bitmap strings: `["0x<top>", "<pos>-0x<parts>", ...]`."""
    if not fields:
        return []
    top = 0
    nested: dict[int, int] = {}
    for compound, part in fields:
        if compound is None:
            top |= 1 << layout.positions[part]
        else:
            pos = layout.positions[compound]
            nested[pos] = nested.get(pos, 0) | 1 << layout.parts[compound].index(part)
    return [_hex(top), *(f"{pos}-{_hex(bits)}" for pos, bits in sorted(nested.items()))]


def _hex(bits: int) -> str:
    digits = format(bits, "X")
    return "0x" + digits.zfill(len(digits) + len(digits) % 2)
