"""Indexed views over the store's record lists: lookup by id, filtering, and id-ordered scans.

Records stay the very dicts of ``Store`` (the list is sorted by id in place), so writes through
the API show up in ``sandbox.store``. Times are kept as epoch seconds beside the records so filters
compare instants, whatever offset a timestamp string was written in.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, MutableSequence, Sequence
from typing import Any

from ferry.sandbox.shopify.compact import CompactRecords
from ferry.sandbox.shopify.store import Record
from ferry.sandbox.shopify.times import parse_or_none

Predicate = Callable[[int], bool]


class Table:
    def __init__(self, resource: str, records: list[Record] | CompactRecords) -> None:
        self.resource = resource
        records.sort(key=lambda r: r["id"])
        self.records = records
        self.ids: MutableSequence[int]
        self.updated: MutableSequence[int]
        self.created: MutableSequence[int]
        if isinstance(records, CompactRecords):
            # Columns copied from the compact store: nothing is decoded to index it.
            self.ids, self.updated, self.created = (array("q", col) for col in (
                records.ids, records.updated, records.created))
        else:
            self.ids = [r["id"] for r in records]
            self.updated = [parse_or_none(r.get("updated_at")) or 0 for r in records]
            self.created = [parse_or_none(r.get("created_at")) or 0 for r in records]
        self._pos = {rid: i for i, rid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.records)

    def get(self, rid: int) -> Record | None:
        """The record with id ``rid``, as the dict to edit in place (then call ``touched``)."""
        i = self._pos.get(rid)
        if i is None:
            return None
        if isinstance(self.records, CompactRecords):
            return self.records.pin(i)
        return self.records[i]

    def max_id(self) -> int:
        return self.ids[-1] if self.ids else 0

    def max_updated(self) -> int:
        return max(self.updated, default=0)

    def touched(self, rid: int) -> None:
        """Re-read the times of a record changed in place."""
        i = self._pos[rid]
        rec = self.records[i]
        self.updated[i] = parse_or_none(rec.get("updated_at")) or 0
        self.created[i] = parse_or_none(rec.get("created_at")) or 0

    def append(self, rec: Record) -> None:
        """Add a new record; its id must be above every existing id (as Shopify's are)."""
        if self.ids and rec["id"] <= self.ids[-1]:
            raise ValueError("new ids must grow")
        self.records.append(rec)
        self.ids.append(rec["id"])
        self.updated.append(parse_or_none(rec.get("updated_at")) or 0)
        self.created.append(parse_or_none(rec.get("created_at")) or 0)
        self._pos[rec["id"]] = len(self.ids) - 1

    def remove(self, rid: int) -> Record | None:
        """Delete a record (ids stay sorted; positions after it shift down)."""
        i = self._pos.pop(rid, None)
        if i is None:
            return None
        rec = self.records.pop(i)
        del self.ids[i], self.updated[i], self.created[i]
        for j in range(i, len(self.ids)):
            self._pos[self.ids[j]] = j
        return rec

    # ------------------------------------------------------------------ scans
    def forward(self, match: Predicate | None, after_id: int, want: int) -> list[int]:
        """Indices of up to ``want`` matching records with id > after_id, ascending."""
        out: list[int] = []
        start = bisect.bisect_right(self.ids, after_id)
        if match is None:
            return list(range(start, min(len(self.ids), start + want)))
        for i in range(start, len(self.ids)):
            if match(i):
                out.append(i)
                if len(out) >= want:
                    break
        return out

    def backward(self, match: Predicate | None, before_id: int, want: int) -> list[int]:
        """Indices of up to ``want`` matching records with id < before_id, ascending."""
        end = bisect.bisect_left(self.ids, before_id)
        if match is None:
            return list(range(max(0, end - want), end))
        out: list[int] = []
        for i in range(end - 1, -1, -1):
            if match(i):
                out.append(i)
                if len(out) >= want:
                    break
        out.reverse()
        return out

    def count(self, match: Predicate | None) -> int:
        if match is None:
            return len(self.ids)
        return sum(1 for i in range(len(self.ids)) if match(i))

    # ------------------------------------------------------------------ filters
    def matcher(self, filters: dict[str, Any]) -> Predicate | None:
        """Compile canonical filters (see ``query.parse_filters``) into one predicate over indices."""
        checks: list[Predicate] = []
        ids, upd, cre, recs = self.ids, self.updated, self.created, self.records
        if (since := filters.get("since_id")) is not None:
            checks.append(lambda i: ids[i] > since)
        if (wanted := filters.get("ids")) is not None:
            wanted_set = frozenset(wanted)
            checks.append(lambda i: ids[i] in wanted_set)
        for key, arr in (("updated_at", upd), ("created_at", cre)):
            if (lo := filters.get(f"{key}_min")) is not None:
                checks.append(_at_least(arr, lo))
            if (hi := filters.get(f"{key}_max")) is not None:
                checks.append(_at_most(arr, hi))
        if (status := filters.get("status")) is not None:
            checks.append(_status_check(self.resource, status, recs))
        for field in ("financial_status", "vendor", "product_type", "handle", "title"):
            if (values := filters.get(field)) is not None:
                checks.append(_field_in(recs, field, frozenset(values)))
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]
        return lambda i: all(check(i) for check in checks)


def _at_least(arr: Sequence[int], lo: int) -> Predicate:
    return lambda i: arr[i] >= lo


def _at_most(arr: Sequence[int], hi: int) -> Predicate:
    return lambda i: arr[i] <= hi


def _field_in(recs: Sequence[Record], field: str, allowed: frozenset[Any]) -> Predicate:
    return lambda i: recs[i].get(field) in allowed


def _status_check(resource: str, status: Any, recs: Sequence[Record]) -> Predicate:
    if resource == "products":
        allowed = frozenset(status)
        return lambda i: recs[i].get("status") in allowed
    # Orders: "open" (the default) = neither closed nor cancelled; Shopify hides the rest unless asked.
    if status == "open":
        return lambda i: recs[i].get("closed_at") is None and recs[i].get("cancelled_at") is None
    if status == "closed":
        return lambda i: recs[i].get("closed_at") is not None
    if status == "cancelled":
        return lambda i: recs[i].get("cancelled_at") is not None
    return lambda i: True
