"""Upsert one record with one sObject call: ``PATCH /sobjects/{Obj}/{ExtField}/{value}``.

The lowest-latency path (no batching, no job): what a webhook-driven single change wants. The
external id travels in the URL (percent-encoded, so a ``/`` or ``?`` in it cannot change the path)
and is left out of the body, as Salesforce asks. A refusal of the record (400 with an error list)
is that record's result, with Salesforce's code, message and fields, not an exception.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import orjson

from ferry.connectors.salesforce.client import SalesforceClient, api_name
from ferry.connectors.salesforce.collections import missing_key_result, to_rest_record
from ferry.connectors.salesforce.csvio import key_text
from ferry.connectors.salesforce.errors import classify, record_error, record_error_from_call
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult
from ferry.core.schema import ObjectSchema
from ferry.errors import STOPS_THE_STEP, FerryError

_RECORD_REFUSALS = frozenset({400, 404})


def _classify_keeping_record_errors(response: httpx.Response) -> FerryError | None:
    """A 400/404 with Salesforce's error list is the record's answer; everything else as usual."""
    if response.status_code in _RECORD_REFUSALS and _error_list(response) is not None:
        return None
    return classify(response)


def _error_list(response: httpx.Response) -> list[dict[str, Any]] | None:
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, list) and body and all(isinstance(e, dict) and "errorCode" in e for e in body):
        return body
    return None


async def upsert_one(
    client: SalesforceClient,
    sobject: str,
    external_id_field: str,
    record: MappedRecord,
    schema: ObjectSchema | None,
    *,
    label: str,
) -> RecordResult:
    missing = missing_key_result(record, external_id_field)
    if missing is not None:
        return missing
    key = key_text(record[external_id_field])
    body = to_rest_record({k: v for k, v in record.items() if k != external_id_field}, sobject, schema)
    body.pop("attributes", None)
    path = client.data_path(f"/sobjects/{api_name(sobject)}/{api_name(external_id_field)}/{quote(key, safe='')}")
    try:
        response = await client.request(
            "PATCH", path, label=label, json=body, classify=_classify_keeping_record_errors, records=1
        )
    except STOPS_THE_STEP:
        raise
    except FerryError as err:
        return RecordResult(key, False, errors=[record_error_from_call(err)])
    errors = _error_list(response) if response.status_code >= 400 else None
    if errors is not None:
        return RecordResult(
            key,
            False,
            errors=[
                record_error(str(e.get("errorCode")), str(e.get("message", "")), list(e.get("fields") or []))
                for e in errors
            ],
        )
    if response.status_code == 204 or not response.content:  # API < 46: 204 means "updated"
        return RecordResult(key, True, created=False)
    answer = orjson.loads(response.content)
    created = answer.get("created") if isinstance(answer, dict) else None
    return RecordResult(
        key,
        True,
        id=answer.get("id") if isinstance(answer, dict) else None,
        created=bool(created) if created is not None else response.status_code == 201,
    )
