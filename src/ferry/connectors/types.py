"""Types every connector shares with the engine: target schemas, write strategies, per-record results.

Mapped records handed to a sink are flat dicts. A key is either a field API name
(``"LastName"``) or a reference to a parent by external id written as
``"<RelationshipName>.<ExternalIdField>"`` (``"Account.Shopify_Customer_Id__c"``),
which is exactly the Bulk API 2.0 CSV column form; the REST paths turn it into the
nested ``{"Account": {"Shopify_Customer_Id__c": "..."}}`` form. Values are
``str | int | float | bool | None``; dates and datetimes are ISO-8601 strings;
``None`` means "set this field to null".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ferry.errors import RecordError

MappedRecord = dict[str, Any]


@dataclass(slots=True)
class FieldSchema:
    """One field as the target's describe reports it."""

    name: str
    # Salesforce field types: string, email, phone, id, reference, double, currency, int, boolean, date, ...
    type: str
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    external_id: bool = False
    id_lookup: bool = False
    unique: bool = False
    precision: int = 0
    scale: int = 0
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    picklist_values: list[str] = field(default_factory=list)
    restricted_picklist: bool = False

    @property
    def required_on_create(self) -> bool:
        return self.createable and not self.nillable and not self.defaulted_on_create and self.type != "boolean"


@dataclass(slots=True)
class ObjectSchema:
    name: str
    fields: dict[str, FieldSchema]
    createable: bool = True
    updateable: bool = True

    def field(self, name: str) -> FieldSchema | None:
        return self.fields.get(name)

    def by_relationship(self, relationship_name: str) -> FieldSchema | None:
        for f in self.fields.values():
            if f.relationship_name == relationship_name:
                return f
        return None


class Strategy(StrEnum):
    SINGLE = "single"  # one sObject call per record: lowest latency for one record
    COLLECTIONS = "collections"  # sObject Collections, <= 200 records a call
    COMPOSITE = "composite"  # Composite carrying up to 5 Collections subrequests: <= 1,000 records a call
    BULK = "bulk"  # a Bulk API 2.0 ingest job


@dataclass(slots=True)
class StrategyChoice:
    """What the write planner chose for a batch, with the reason a human reads in ``ferry plan`` and run records."""

    strategy: Strategy
    reason: str
    estimated_calls: int = 0


@dataclass(slots=True)
class RecordResult:
    """The target's answer for one record, in input order. ``key`` is the external id value sent."""

    key: str
    success: bool
    id: str | None = None
    created: bool | None = None
    errors: list[RecordError] = field(default_factory=list)

    @property
    def transient(self) -> bool:
        return not self.success and bool(self.errors) and all(e.transient for e in self.errors)


@dataclass(frozen=True, slots=True)
class JobSucceeded:
    """A streamed Bulk job's answer for every row it carried that no result row has reported: succeeded.

    Sent instead of the job's successfulResults file when the job's own counts prove it (complete, every
    uploaded row processed, few failures): the caller matches it to the rows it journaled for the job. Such
    rows have no target id and no created/updated flag, which only that file would have told.
    """

    job_id: str
    rows: int


# What a streamed Bulk upsert yields: a batch of per-record results, or a job's JobSucceeded.
StreamAnswer = list[RecordResult] | JobSucceeded
