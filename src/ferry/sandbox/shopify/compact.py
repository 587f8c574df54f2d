"""Records kept compact: one zlib-compressed orjson document per record, decoded only when read.

A generated order is ~11 KiB of JSON and ~12 KiB as Python dicts; compressed it is ~2.4 KiB. A
1,000,000-order store therefore fits in a few GiB instead of ~12 GiB. ``CompactRecords`` is the
sequence ``Table`` and ``Store`` hold in that mode: reading an element decodes a fresh dict (a list
page builds its 250 records and drops them), while a record handed out for an edit is *pinned*: kept
decoded and returned from then on, so changes made to it in place stay visible, as with plain dicts.

With a ``spill_dir`` the compressed documents go to an unlinked file there instead of the heap (read
back with ``pread``; the kernel's page cache, which it can reclaim, holds the hot part), so the
process keeps only the id/time/offset columns: ~40 bytes a record.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import orjson

from ferry.sandbox.shopify.store import Record
from ferry.sandbox.shopify.times import parse_or_none

_LEVEL = 1  # the fastest level compresses these documents ~4.6x; higher levels gain little


def _pack(rec: Record) -> bytes:
    return zlib.compress(orjson.dumps(rec), _LEVEL)


def _unpack(blob: bytes) -> Record:
    rec: Record = orjson.loads(zlib.decompress(blob))
    return rec


class CompactRecords(Sequence[Record]):
    """One resource's records in ascending id order, compressed; with the id and time columns tables index."""

    def __init__(self, records: Iterable[Record] = (), *, spill_dir: Path | None = None) -> None:
        self._blobs: list[bytes] | _Spill = _Spill(spill_dir) if spill_dir is not None else []
        self.ids = array("q")
        self.updated = array("q")
        self.created = array("q")
        self._pinned: dict[int, Record] = {}  # id -> the live dict of a record handed out for editing
        self.extend(records)

    def extend(self, records: Iterable[Record]) -> None:
        for rec in records:
            self._add(rec, _pack(rec))

    def _add(self, rec: Record, blob: bytes) -> None:
        rid = rec["id"]
        if self.ids and rid <= self.ids[-1]:
            raise ValueError("records must come in ascending id order")
        self._blobs.append(blob)
        self.ids.append(rid)
        self.updated.append(parse_or_none(rec.get("updated_at")) or 0)
        self.created.append(parse_or_none(rec.get("created_at")) or 0)

    def __len__(self) -> int:
        return len(self._blobs)

    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        live = self._pinned.get(self.ids[i])
        return live if live is not None else _unpack(self._blobs[i])

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self._blobs)):
            yield self[i]

    def __add__(self, other: Iterable[Record]) -> list[Record]:
        return [*self, *other]  # as list + list: a new list of the records (decoded)

    def __radd__(self, other: Iterable[Record]) -> list[Record]:
        return [*other, *self]

    def pin(self, i: int) -> Record:
        """The record at ``i`` as a dict that stays the record: edits made to it in place are kept."""
        rid = self.ids[i]
        live = self._pinned.get(rid)
        if live is None:
            live = self._pinned[rid] = _unpack(self._blobs[i])
        return live

    @property
    def pinned(self) -> int:
        return len(self._pinned)

    def sort(self, key: object = None) -> None:
        """Already in id order (``extend`` enforces it); present so a table treats it like a list."""

    def append(self, rec: Record) -> None:
        """A new record (ids must grow); kept pinned, as the caller may still change it."""
        self._add(rec, b"")
        self._pinned[rec["id"]] = rec

    def pop(self, i: int) -> Record:
        rec = self[i]
        self._pinned.pop(self.ids[i], None)
        del self._blobs[i], self.ids[i], self.updated[i], self.created[i]
        return rec

    def json_array(self, start: int, end: int) -> bytes:
        """Records ``start:end`` as one JSON array, straight from the stored documents (no decoding)."""
        return self.json_of(range(start, min(end, len(self._blobs))))

    def json_of(self, positions: Iterable[int]) -> bytes:
        """The records at ``positions`` as one JSON array: the stored bytes are orjson's own output for the
        record, so this is byte for byte what ``orjson.dumps`` of the decoded records gives, without decoding."""
        parts = []
        for i in positions:
            live = self._pinned.get(self.ids[i])
            parts.append(orjson.dumps(live) if live is not None else zlib.decompress(self._blobs[i]))
        return b"[" + b",".join(parts) + b"]"

    def stored_bytes(self) -> int:
        """Compressed bytes stored, in memory or spilled (not counting the pinned dicts)."""
        if isinstance(self._blobs, _Spill):
            return self._blobs.size()
        return sum(len(b) for b in self._blobs)


class _Spill:
    """An append-only file of blobs with their offsets: the list interface ``CompactRecords`` needs."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="records-", dir=directory)
        os.unlink(name)  # gone with the process, whatever way it ends
        self._fd = fd
        self._end = 0
        self._offsets = array("q")
        self._lengths = array("l")

    def append(self, blob: bytes) -> None:
        os.pwrite(self._fd, blob, self._end)
        self._offsets.append(self._end)
        self._lengths.append(len(blob))
        self._end += len(blob)

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i: int) -> bytes:
        return os.pread(self._fd, self._lengths[i], self._offsets[i])

    def __delitem__(self, i: int) -> None:
        del self._offsets[i], self._lengths[i]

    def size(self) -> int:
        return sum(self._lengths)
