"""Indexed views over the store's record lists: lookup by id, filtering, and ordered scans.

Records stay the very dicts of ``Store`` (the list is sorted by id in place), so writes through
the API show up in ``sandbox.store``. Times are kept as epoch seconds beside the records so filters
compare instants, whatever offset a timestamp string was written in.

Scans run in id order (a record's position) or in updated_at order: an index of positions sorted by
(updated_at, id), an ``array('q')`` of 8 bytes a record (8 MB at 1,000,000 orders), built on first use
and kept in step with edits, so a record edited mid-read moves to its new place and a keyset read in
that order meets it again.
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
Key = tuple[int, int]  # (sort value, id): the sort value is the id itself in id order
_LOWEST, _HIGHEST = -(2**63), 2**63 - 1


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
        self._by_updated: array[int] | None = None  # positions in (updated, id) order; None until asked for

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

    def peek(self, rid: int) -> Record | None:
        """The record with id ``rid`` for reading only: in compact mode a fresh decoded copy, never pinned, so
        reads (GraphQL lookups of a line item's product or an order's customer) do not grow the pinned set."""
        i = self._pos.get(rid)
        return None if i is None else self.records[i]

    def has(self, rid: int) -> bool:
        """Whether a record with id ``rid`` exists (nothing decoded)."""
        return rid in self._pos

    def max_id(self) -> int:
        return self.ids[-1] if self.ids else 0

    def max_updated(self) -> int:
        return max(self.updated, default=0)

    def touched(self, rid: int) -> None:
        """Re-read the times of a record changed in place."""
        i = self._pos[rid]
        rec = self.records[i]
        updated = parse_or_none(rec.get("updated_at")) or 0
        if self._by_updated is not None and updated != self.updated[i]:
            self._unindex(i)  # found by its old key; then put back at its new place
            self.updated[i] = updated
            self._index(i)
        else:
            self.updated[i] = updated
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
        if self._by_updated is not None:
            self._index(len(self.ids) - 1)

    def remove(self, rid: int) -> Record | None:
        """Delete a record (ids stay sorted; positions after it shift down)."""
        i = self._pos.pop(rid, None)
        if i is None:
            return None
        rec = self.records.pop(i)
        del self.ids[i], self.updated[i], self.created[i]
        for j in range(i, len(self.ids)):
            self._pos[self.ids[j]] = j
        self._by_updated = None  # every position after i moved: rebuilt when next asked for (deletes are rare)
        return rec

    # ------------------------------------------------------------------ updated_at order
    def _updated_key(self, pos: int) -> Key:
        return self.updated[pos], self.ids[pos]

    def by_updated(self) -> array[int]:
        """Positions sorted by (updated_at, id). Positions are in id order already, so a stable sort on
        updated_at alone breaks ties by id, and no tuple per record is built."""
        if self._by_updated is None:
            self._by_updated = array("q", sorted(range(len(self.ids)), key=self.updated.__getitem__))
        return self._by_updated

    def _unindex(self, pos: int) -> None:
        order = self.by_updated()
        k = bisect.bisect_left(order, self._updated_key(pos), key=self._updated_key)
        if k == len(order) or order[k] != pos:
            raise AssertionError(f"{self.resource}: position {pos} missing from the updated_at index")
        del order[k]

    def _index(self, pos: int) -> None:
        order = self.by_updated()
        order.insert(bisect.bisect_right(order, self._updated_key(pos), key=self._updated_key), pos)

    # ------------------------------------------------------------------ ordered pages
    def key(self, order: str, pos: int) -> Key:
        """The sort key of the record at ``pos`` in ``order`` (a query.ORDERS value)."""
        return self._updated_key(pos) if order.startswith("updated_at") else (self.ids[pos], self.ids[pos])

    def after(self, order: str, match: Predicate | None, bound: Key | None, want: int) -> list[int]:
        """Up to ``want`` matching positions sorting strictly after ``bound`` in ``order`` (from the start when
        None), in that order."""
        if order.endswith("desc"):
            return self._down(order, match, self._rank_left(order, bound) if bound else len(self.ids), want)
        return self._up(order, match, self._rank_right(order, bound) if bound else 0, want)

    def before(self, order: str, match: Predicate | None, bound: Key, want: int) -> list[int]:
        """Up to ``want`` matching positions sorting strictly before ``bound`` in ``order``, nearest last."""
        if order.endswith("desc"):
            found = self._up(order, match, self._rank_right(order, bound), want)
        else:
            found = self._down(order, match, self._rank_left(order, bound), want)
        found.reverse()
        return found

    def first_bound(self, order: str, filters: dict[str, Any]) -> Key | None:
        """Where a first page starts: after since_id in id order; at updated_at_min (or _max, descending) in
        updated_at order, so an incremental read of a big store does not walk every older record first."""
        since = filters.get("since_id")
        if order == "id asc":
            return (since, since) if isinstance(since, int) else None
        if order == "updated_at asc" and isinstance(lo := filters.get("updated_at_min"), int):
            return lo, _LOWEST  # strictly after (lo, lowest id): every record updated at lo or later
        if order == "updated_at desc" and isinstance(hi := filters.get("updated_at_max"), int):
            return hi, _HIGHEST
        return None

    def _rank_right(self, order: str, bound: Key) -> int:
        """How many records sort at or before ``bound`` in ascending ``order``."""
        if order.startswith("updated_at"):
            return bisect.bisect_right(self.by_updated(), bound, key=self._updated_key)
        return bisect.bisect_right(self.ids, bound[1])

    def _rank_left(self, order: str, bound: Key) -> int:
        """How many records sort strictly before ``bound`` in ascending ``order``."""
        if order.startswith("updated_at"):
            return bisect.bisect_left(self.by_updated(), bound, key=self._updated_key)
        return bisect.bisect_left(self.ids, bound[1])

    def _up(self, order: str, match: Predicate | None, start: int, want: int) -> list[int]:
        """Matching positions from ascending rank ``start`` upward."""
        ranked: Sequence[int] = self.by_updated() if order.startswith("updated_at") else range(len(self.ids))
        if match is None:
            return list(ranked[start:start + want])
        out: list[int] = []
        for k in range(start, len(ranked)):
            if match(pos := ranked[k]):
                out.append(pos)
                if len(out) >= want:
                    break
        return out

    def _down(self, order: str, match: Predicate | None, end: int, want: int) -> list[int]:
        """Matching positions from ascending rank ``end - 1`` downward (nearest first)."""
        ranked: Sequence[int] = self.by_updated() if order.startswith("updated_at") else range(len(self.ids))
        if match is None:
            return list(ranked[max(0, end - want):end])[::-1]
        out: list[int] = []
        for k in range(end - 1, -1, -1):
            if match(pos := ranked[k]):
                out.append(pos)
                if len(out) >= want:
                    break
        return out

    # ------------------------------------------------------------------ counts
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
            checks.append(status_check(self.resource, status, recs))
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


def status_check(resource: str, status: Any, recs: Sequence[Record]) -> Predicate:
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
