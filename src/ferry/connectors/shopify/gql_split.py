"""A large stream read as several bulk operations over disjoint id ranges, running at once.

From API version 2026-01 Shopify runs up to five bulk query operations per shop and app at the same time
(shopify.dev, bulk-operations/queries); before it, one. One operation is the read's floor for a big stream
(Shopify works through it object after object), so a stream expected large runs as ``k`` operations, each
over one id range (``id:<=b1``, ``id:>b1 id:<=b2``, ..., ``id:>b(k-1)``: open at both ends, so together they
match exactly what the one operation would, and a record's id never changes, so a record is in one range).
The bounds split the span between the smallest and the largest matching id (asked in the same request as
the count) evenly: ids grow with creation time, so in a backfill equal id spans hold about equal numbers of
records (a catch-up's changed records may crowd the newest range: the split is a heuristic, never a risk to
correctness, since the ranges cover every id whatever their sizes).

The slots: every stream read in bulk holds one; the free ones go, one at a time, to the stream with the most
result lines per operation (records times ``LINES_PER_RECORD``), as long as each of its operations keeps at
least ``min_part`` records (a small operation's start-up and poll would cost more than it saves).

The parts are read in range order, each result file to its end before the next: the read's place is (part,
top-level objects done in that part's file), saved with every page. What keeps the cursor rule: a change
committed while an operation ran, on a record it had already passed, is stamped at least that operation's
start less the clock margin; the cursor after the read stops at the earliest start of the operations read
(``started``, kept across a crash), so the next read meets every such change.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Rough result-file lines per top-level record: a customer is one line, a product comes with its variants,
# an order with its line items (the generated store: ~2.9 and ~3.3). Only used to share the free slots.
LINES_PER_RECORD = {"customers": 1, "products": 3, "orders": 3}


def share_slots(expected: Mapping[str, int | None], slots: int, min_part: int) -> dict[str, int]:
    """Operations per bulk stream: one each (slots permitting), the free slots to the largest per operation."""
    parts = dict.fromkeys(expected, 1)
    free = slots - len(parts)
    while free > 0:
        can_split = [s for s, n in expected.items() if n is not None and n // (parts[s] + 1) >= min_part]
        if not can_split:
            break
        best = max(can_split, key=lambda s: (_lines(s, expected[s]) / parts[s], s))
        parts[best] += 1
        free -= 1
    return parts


def _lines(stream: str, records: int | None) -> int:
    return (records or 0) * LINES_PER_RECORD.get(stream, 1)


def id_ranges(first: int | None, last: int | None, parts: int) -> list[str | None]:
    """Search terms of ``parts`` disjoint id ranges covering every id (``[None]``: one operation, no range)."""
    if parts <= 1 or first is None or last is None or last - first < parts:
        return [None]
    bounds = [first + (last - first) * j // parts for j in range(1, parts)]
    ranges: list[str | None] = [f"id:<={bounds[0]}"]
    ranges += [f"id:>{lo} id:<={hi}" for lo, hi in itertools.pairwise(bounds)]
    ranges.append(f"id:>{bounds[-1]}")
    return ranges


def legacy_id(gid: Any) -> int | None:
    """123 of ``gid://shopify/Order/123``."""
    tail = str(gid or "").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


@dataclass(slots=True)
class Part:
    id: str | None  # the operation's id; None until it started (Shopify refused it for want of a slot)
    range: str | None  # its id range as search terms; None: the whole stream


@dataclass(slots=True)
class BulkProgress:
    """Where a bulk read stands: its operations, the one whose file is being read, and how far."""

    since: str | None  # the read's inclusive lower bound on updated_at
    parts: list[Part]
    part: int = 0  # index of the operation whose file is read now
    done: int = 0  # top-level objects of that file staged for good
    newest: str | None = None  # newest version staged so far
    started: str | None = None  # earliest createdAt of the operations read so far (the cursor stops there)
    resumed: bool = field(default=False)  # continues a read a run before this one left

    @property
    def current(self) -> Part:
        return self.parts[self.part]

    @property
    def last(self) -> bool:
        return self.part == len(self.parts) - 1

    def as_json(self) -> dict[str, Any]:
        """One operation: the shape ferry always saved (``id``, ``since``, ``done``, ``newest``); several: the
        same keys for the current one, plus every part and the earliest start."""
        out: dict[str, Any] = {"id": self.current.id, "since": self.since, "done": self.done, "newest": self.newest}
        if len(self.parts) > 1:
            out |= {"parts": [[p.id, p.range] for p in self.parts], "part": self.part, "started": self.started}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BulkProgress:
        raw = data.get("parts")
        if isinstance(raw, list) and raw:
            parts = [Part(p[0], p[1]) for p in raw]
            part = min(max(int(data.get("part") or 0), 0), len(parts) - 1)
        else:
            parts, part = [Part(data.get("id"), None)], 0
        return cls(data.get("since"), parts, part, int(data.get("done") or 0), data.get("newest"),
                   data.get("started"), resumed=True)

    def next_json(self) -> dict[str, Any]:
        """The state once the current operation's file is read whole: the next one's, from its start."""
        return replace(self, part=self.part + 1, done=0).as_json()

    def next_part(self) -> None:
        self.part += 1
        self.done = 0

    def saw_start(self, created_at: str | None) -> None:
        if created_at and (self.started is None or created_at < self.started):
            self.started = created_at
