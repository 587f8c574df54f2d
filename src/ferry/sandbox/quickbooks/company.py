"""A QuickBooks Online company (realm): its entities by id, the deletions CDC reports, the answers kept for
``requestid``, and a JSON form for persistence.

Ids are numeric strings, one sequence per entity type (as on QuickBooks, ``Customer 58`` and ``Invoice 58``
are different objects). ``SyncToken`` is a string counter bumped by every successful update.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.sandbox.quickbooks.times import Clock, fmt

Record = dict[str, Any]

# Name-list entities are never deleted (Active: false hides them); transactions are deleted or voided.
NAME_LISTS = ("Account", "Customer", "Vendor", "Employee", "Item")
TRANSACTIONS = ("Invoice", "SalesReceipt", "Payment", "CreditMemo", "RefundReceipt")
ENTITIES = (*NAME_LISTS, *TRANSACTIONS)
BY_LOWER = {name.lower(): name for name in ENTITIES}
# DisplayName is unique across these three (QuickBooks' "names" list).
PEOPLE = ("Customer", "Vendor", "Employee")


@dataclass
class KeptAnswer:
    """The first answer to a ``requestid``: what a repeat of it gets back, byte for byte."""

    status: int
    body: bytes
    at: float


@dataclass
class Company:
    realm_id: str
    name: str = "Sandbox Company_US_1"
    records: dict[str, dict[str, Record]] = field(default_factory=lambda: {e: {} for e in ENTITIES})
    deleted: dict[str, dict[str, Record]] = field(default_factory=lambda: {e: {} for e in ENTITIES})
    next_ids: dict[str, int] = field(default_factory=lambda: {e: 0 for e in ENTITIES})
    answers: dict[str, KeptAnswer] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)

    def new_id(self, entity: str) -> str:
        self.next_ids[entity] += 1
        return str(self.next_ids[entity])

    def get(self, entity: str, rid: str) -> Record | None:
        return self.records[entity].get(str(rid))

    def all(self, entity: str) -> list[Record]:
        return sorted(self.records[entity].values(), key=lambda r: int(r["Id"]))

    def add(self, entity: str, record: Record, *, when: int | None = None) -> Record:
        """Store a new record with its system fields (Id, SyncToken 0, MetaData) stamped."""
        now = self.clock.now() if when is None else when
        record["Id"] = record.get("Id") or self.new_id(entity)
        record["SyncToken"] = "0"
        record["domain"] = "QBO"
        record["sparse"] = False
        record["MetaData"] = {"CreateTime": fmt(now), "LastUpdatedTime": fmt(now)}
        self.records[entity][record["Id"]] = record
        return record

    def touch(self, record: Record) -> None:
        """An update: SyncToken + 1 and LastUpdatedTime now."""
        record["SyncToken"] = str(int(record["SyncToken"]) + 1)
        record["MetaData"]["LastUpdatedTime"] = fmt(self.clock.now())

    def remove(self, entity: str, rid: str) -> Record:
        record = self.records[entity].pop(rid)
        self.deleted[entity][rid] = {"Id": rid, "status": "Deleted", "domain": "QBO",
                                     "MetaData": {"LastUpdatedTime": fmt(self.clock.now())}}
        return record

    def keep_answer(self, request_id: str, status: int, body: bytes) -> None:
        self.answers[request_id] = KeptAnswer(status, body, time.time())

    def kept_answer(self, request_id: str, window: float) -> KeptAnswer | None:
        kept = self.answers.get(request_id)
        if kept is not None and time.time() - kept.at > window:
            del self.answers[request_id]
            return None
        return kept

    # -- persistence -------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "realm_id": self.realm_id,
            "name": self.name,
            "records": self.records,
            "deleted": self.deleted,
            "next_ids": self.next_ids,
            "answers": {k: {"status": a.status, "body": a.body.decode(), "at": a.at} for k, a in self.answers.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Company:
        company = cls(doc["realm_id"], doc.get("name", "Sandbox Company_US_1"))
        for entity in ENTITIES:
            company.records[entity] = doc["records"].get(entity, {})
            company.deleted[entity] = doc["deleted"].get(entity, {})
            company.next_ids[entity] = int(doc["next_ids"].get(entity, 0))
        company.answers = {k: KeptAnswer(int(a["status"]), a["body"].encode(), float(a["at"]))
                           for k, a in doc.get("answers", {}).items()}
        return company


def save_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a crash mid-write leaves the previous state, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
