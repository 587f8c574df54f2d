"""Upsert through sObject Collections: ``PATCH /composite/sobjects/{Obj}/{ExtField}``, 200 records a call.

``allOrNone`` is false so one bad record never holds back its neighbours; results come back one per
record in input order. Chunks run concurrently up to ``max_concurrency``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ferry.connectors.salesforce.client import SalesforceClient, api_name
from ferry.connectors.salesforce.csvio import key_text
from ferry.connectors.salesforce.errors import record_error, record_error_from_call
from ferry.connectors.salesforce.tasks import run_all
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult
from ferry.core.schema import ObjectSchema
from ferry.errors import STOPS_THE_STEP, ConfigError, FerryError, RecordError


def split_reference(key: str) -> tuple[str | None, str, str] | None:
    """``"Account.Ext__c"`` → (None, "Account", "Ext__c"); ``"Lead:Who.Email"`` → ("Lead", "Who", "Email")."""
    rel, dot, ext = key.partition(".")
    if not dot:
        return None
    parent_type, colon, rel_name = rel.partition(":")
    return (parent_type, rel_name, ext) if colon else (None, rel, ext)


def to_rest_record(record: MappedRecord, sobject: str, schema: ObjectSchema | None) -> dict[str, Any]:
    """A flat mapped record in the Collections shape, parent references nested by relationship name."""
    out: dict[str, Any] = {"attributes": {"type": sobject}}
    for key, value in record.items():
        if "." not in key:  # a plain field (split_reference would say None): most keys, on the per-record path
            out[key] = value
            continue
        ref = split_reference(key)
        assert ref is not None
        parent_type, rel, ext = ref
        field = schema.by_relationship(rel) if schema is not None else None
        if field is None or not (parent_type or field.reference_to):
            raise ConfigError(f"{sobject} has no relationship named {rel!r} (used by the mapped key {key!r})")
        if value is None:
            out[field.name] = None  # clearing a lookup: null the reference field itself
        else:
            out[rel] = {"attributes": {"type": parent_type or field.reference_to[0]}, ext: value}
    return out


def missing_key_result(record: MappedRecord, external_id_field: str) -> RecordResult | None:
    """Upsert needs the external id; a record without it fails here, before any call."""
    value = record.get(external_id_field)
    if value is None or value == "":
        return RecordResult(
            key="",
            success=False,
            errors=[
                RecordError(
                    "MISSING_EXTERNAL_ID", f"{external_id_field} is empty; an upsert needs it", [external_id_field]
                )
            ],
        )
    return None


def parse_result(key: str, raw: Any) -> RecordResult:
    if not isinstance(raw, dict):
        return RecordResult(key, False, errors=[RecordError("BAD_RESPONSE", "no result for this record", [], True)])
    if raw.get("success"):
        return RecordResult(key, True, id=raw.get("id"), created=raw.get("created"))
    errors = [
        record_error(
            str(e.get("statusCode") or e.get("errorCode") or "UNKNOWN"),
            str(e.get("message", "")),
            list(e.get("fields") or []),
        )
        for e in raw.get("errors") or []
        if isinstance(e, dict)
    ] or [record_error("UNKNOWN", "Salesforce reported a failure without an error")]
    return RecordResult(key, False, id=raw.get("id"), errors=errors)


class CollectionsUpsert:
    def __init__(self, client: SalesforceClient, *, batch_size: int = 200, max_concurrency: int = 4) -> None:
        self.client = client
        self.batch_size = batch_size
        self._gate = asyncio.Semaphore(max_concurrency)

    async def upsert(
        self,
        sobject: str,
        external_id_field: str,
        records: Sequence[MappedRecord],
        schema: ObjectSchema | None,
        *,
        label: str,
        serial: bool = False,
    ) -> list[RecordResult]:
        """One result per record in input order; ``serial`` sends the chunks one after another."""
        path = self.client.data_path(f"/composite/sobjects/{api_name(sobject)}/{api_name(external_id_field)}")
        results: list[RecordResult | None] = [missing_key_result(r, external_id_field) for r in records]
        todo = [i for i, r in enumerate(results) if r is None]
        # Shape every record before the first call: a mapping mistake is a ConfigError, not 200 failed records.
        bodies = {i: to_rest_record(records[i], sobject, schema) for i in todo}
        chunks = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        if serial:
            for chunk in chunks:
                await self._chunk(path, chunk, records, bodies, external_id_field, results, label)
        else:
            await run_all(
                self._chunk(path, chunk, records, bodies, external_id_field, results, label) for chunk in chunks
            )
        return [r if r is not None else _lost() for r in results]

    async def _chunk(
        self,
        path: str,
        indices: list[int],
        records: Sequence[MappedRecord],
        bodies: dict[int, dict[str, Any]],
        external_id_field: str,
        results: list[RecordResult | None],
        label: str,
    ) -> None:
        keys = [key_text(records[i][external_id_field]) for i in indices]
        payload = {"allOrNone": False, "records": [bodies[i] for i in indices]}
        async with self._gate:
            try:
                answer = await self.client.json("PATCH", path, label=label, json=payload, records=len(indices))
            except STOPS_THE_STEP:
                raise  # the run must stop (or be fixed); these are not about the records
            except FerryError as err:
                failure = record_error_from_call(err)
                for i, key in zip(indices, keys, strict=True):
                    results[i] = RecordResult(key, False, errors=[failure])
                return
        rows = answer if isinstance(answer, list) and len(answer) == len(indices) else [None] * len(indices)
        for i, key, raw in zip(indices, keys, rows, strict=True):
            results[i] = parse_result(key, raw)


def _lost() -> RecordResult:  # pragma: no cover - every slot is filled above; kept so nothing is ever dropped
    return RecordResult("", False, errors=[RecordError("NOT_PROCESSED", "no result recorded", [], True)])
