"""Platform events (`/event/<Name>__e`): their Avro schemas and their retained event log.

The schema is the org's COMPACT event schema (REST API Developer Guide, "Platform Event Schema by Event
Name"): a record in namespace `com.sforce.eventbus` with `CreatedDate` (long, epoch millis) and
`CreatedById` (string), then each custom field as a `["null", <type>]` union defaulting to null.

Published events are kept in an event log of the same kind (cdc.EventBus) and the same retention as
change events, with their own replay ids. Pub/Sub subscribers get them as they were published (the payload
bytes the publisher encoded, under the schema id it named); CometD subscribers of `/event/<Name>__e` get the
JSON message of the Platform Events Developer Guide: `{"schema", "payload": {CreatedDate as an ISO UTC
string, CreatedById, fields...}, "event": {"EventUuid", "replayId"}}`.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ferry.sandbox.salesforce.cdc import CdcConfig, ChangeEvent, EventBus
from ferry.sandbox.salesforce.pubsub.avrocodec import AvroError, Codec, schema_id

NAMESPACE = "com.sforce.eventbus"
# A platform event every sandbox org has, so a client can publish without configuring one first.
DEFAULT_PLATFORM_EVENTS: dict[str, dict[str, str]] = {
    "Order_Event__e": {"Order_Number__c": "string", "Status__c": "string", "Amount__c": "double"},
}
_FIELD_TYPES = {"string": ("string", "Data:Text"), "text": ("string", "Data:Text"),
                "double": ("double", "Data:Double"), "number": ("double", "Data:Double"),
                "int": ("int", "Data:Integer"), "boolean": ("boolean", "Data:Boolean"),
                "datetime": ("long", "Data:DateTime"), "date": ("long", "Data:Date")}


@dataclass
class PlatformEvent:
    name: str
    schema: dict[str, Any]
    schema_id: str
    schema_json: str
    codec: Codec


def event_schema(name: str, fields: dict[str, str]) -> dict[str, Any]:
    if not name.endswith("__e"):
        raise ValueError(f"a platform event's API name ends in __e, not {name!r}")
    out: list[dict[str, Any]] = [{"name": "CreatedDate", "type": "long", "doc": "CreatedDate:DateTime"},
                                 {"name": "CreatedById", "type": "string", "doc": "CreatedBy:EntityId"}]
    for field_name, kind in fields.items():
        if not field_name.endswith("__c"):
            raise ValueError(f"{name}: a platform event's custom field name ends in __c, not {field_name!r}")
        if kind not in _FIELD_TYPES:
            raise ValueError(f"{name}.{field_name}: unknown type {kind!r}; choose one of {', '.join(_FIELD_TYPES)}")
        avro_type, doc = _FIELD_TYPES[kind]
        out.append({"name": field_name, "type": ["null", avro_type], "doc": doc, "default": None})
    return {"name": name, "namespace": NAMESPACE, "type": "record", "fields": out}


class PlatformEvents:
    """The org's platform event definitions and the log of published events."""

    def __init__(self, definitions: dict[str, dict[str, str]], config: CdcConfig) -> None:
        self.events: dict[str, PlatformEvent] = {}
        for name, fields in definitions.items():
            schema = event_schema(name, fields)
            self.events[name] = PlatformEvent(name, schema, schema_id(schema), orjson.dumps(schema).decode(),
                                              Codec(schema))
        # same retention window and maximum count as change events
        self.bus = EventBus(config, render=self.cometd_message)

    def channel_event(self, channel: str) -> PlatformEvent | None:
        """The platform event of a `/event/<Name>__e` channel or topic, if the org defines it."""
        return self.events.get(channel[len("/event/"):]) if channel.startswith("/event/") else None

    def by_schema_id(self, sid: str) -> PlatformEvent | None:
        return next((e for e in self.events.values() if e.schema_id == sid), None)

    def publish(self, event: PlatformEvent, event_id: str, sid: str, payload: bytes) -> int:
        """Validate one published event and append it; returns its replay id. Raises ValueError."""
        if sid != event.schema_id:
            raise ValueError(f"The schema ID {sid!r} doesn't match the schema of {event.name}.")
        try:
            event.codec.decode(payload)
        except AvroError as exc:
            raise ValueError(f"The event payload can't be deserialized with schema {sid}: {exc}") from None
        now = time.time()
        change = {"id": event_id or str(uuid.uuid4()), "uuid": str(uuid.uuid4()), "schema_id": sid,
                  "payload": payload}
        appended = self.bus.append(event.name, change, now)
        self.bus.unpersisted.clear()  # platform events are not written to org.db
        self.bus.prune(now)
        self.bus.notify()
        return appended.replay_id

    def cometd_message(self, event: ChangeEvent) -> dict[str, Any]:
        """The CometD `data` of a published event (rendered once, when a CometD subscriber reads it)."""
        change = event.change
        payload = self.events[event.entity].codec.decode(change["payload"])
        created = payload.get("CreatedDate")
        if isinstance(created, int):
            stamp = dt.datetime.fromtimestamp(created / 1000, dt.UTC)
            payload["CreatedDate"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
        return {"schema": change["schema_id"], "payload": payload,
                "event": {"EventUuid": change["uuid"], "replayId": event.replay_id}}
