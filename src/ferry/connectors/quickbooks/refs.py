"""Resolving a child's reference to its parent's QuickBooks Id.

A mapped reference is ``"<Field>@<by>": value`` (``dialect``). The value is first taken as the parent's
source key and looked up in ferry's id map (``SinkContext.target_ids``: parents load before children, so a
parent this pipeline wrote is there, at no API call); what is not there is looked up by a query on the
parent's ``by`` field (a parent written by someone else: an item named "Shipping"), 30 values a query.
Answers are cached for the sink's life; an unresolved reference fails its record with the field named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ferry.connectors.quickbooks.client import QuickBooksClient, quote
from ferry.connectors.quickbooks.dialect import REF_MARK, parent_of
from ferry.core.schema import ObjectSchema
from ferry.errors import RecordError

Record = dict[str, Any]
IdMap = Callable[[str, Sequence[str]], dict[str, str]]
REFERENCE_NOT_FOUND = "QBO_REFERENCE_NOT_FOUND"
_IN_LIST = 30


def references(record: Record) -> Iterator[tuple[str, str, str]]:
    """(field, by, value) of every reference in a mapped record and its sub-records, values given."""
    for key, value in record.items():
        if isinstance(value, list):
            for sub in value:
                if isinstance(sub, dict):
                    yield from references(sub)
        elif REF_MARK in key and value is not None:
            field, _, by = key.partition(REF_MARK)
            yield field, by, str(value)


class ReferenceResolver:
    def __init__(self, client: QuickBooksClient, id_map: IdMap | None, schemas: dict[str, ObjectSchema]) -> None:
        self.client = client
        self.id_map = id_map
        self.schemas = schemas
        self._known: dict[tuple[str, str], str] = {}

    async def prepare(self, obj: str, records: Sequence[Record]) -> None:
        """Resolve every reference of ``records`` not yet known: the id map first, then queries by ``by``."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for record in records:
            for field, by, value in references(record):
                parent = parent_of(field, self.schemas.get(obj))
                if (parent, value) not in self._known:
                    wanted.setdefault((parent, by), set()).add(value)
        for (parent, by), values in wanted.items():
            missing = sorted(values)
            if self.id_map is not None:
                for key, rid in self.id_map(parent, missing).items():
                    self._known[(parent, key)] = rid
                missing = [v for v in missing if (parent, v) not in self._known]
            for start in range(0, len(missing), _IN_LIST):
                await self._query(parent, by, missing[start : start + _IN_LIST])

    async def _query(self, parent: str, by: str, values: Sequence[str]) -> None:
        listed = ", ".join(quote(v) for v in values)
        for row in await self.client.query(f"SELECT * FROM {parent} WHERE {by} IN ({listed})", label="lookup"):
            if row.get(by) is not None and row.get("Id") is not None:
                self._known.setdefault((parent, str(row[by])), str(row["Id"]))

    def resolve(self, obj: str, record: Record) -> tuple[Record, list[RecordError]]:
        """The record with each reference's value replaced by the parent's Id (key without ``@by``)."""
        errors: list[RecordError] = []
        out: Record = {}
        for key, value in record.items():
            if isinstance(value, list):
                subs = []
                for sub in value:
                    if isinstance(sub, dict):
                        resolved, sub_errors = self.resolve(obj, sub)
                        errors += sub_errors
                        subs.append(resolved)
                    else:
                        subs.append(sub)
                out[key] = subs
                continue
            field, mark, by = key.partition(REF_MARK)
            if not mark or value is None:
                out[field if mark else key] = value
                continue
            parent = parent_of(field, self.schemas.get(obj))
            rid = self._known.get((parent, str(value)))
            if rid is None:
                errors.append(RecordError(
                    REFERENCE_NOT_FOUND,
                    f"{field}: no {parent} with source key or {by} {value!r} in QuickBooks (not written by this "
                    "pipeline yet, or dead-lettered)",
                    [field],
                ))
                continue
            out[field] = rid
        return out, errors
