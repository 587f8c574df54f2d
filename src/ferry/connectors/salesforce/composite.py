"""Upsert up to 1,000 records in ONE API call: Composite carrying 5 sObject Collections subrequests.

``POST /composite`` with ``compositeRequest`` items, each ``PATCH /services/data/vXX/composite/sobjects/
{Obj}/{ExtField}`` of at most 200 records. Salesforce documents that "the entire series of requests
counts as a single call toward your API limits", that a composite holds at most 25 subrequests, and
that at most 5 of them may be sObject Collections or query operations (Collections in Composite since
API 43.0). So one call carries 5 x 200 = 1,000 records where plain Collections need 5 calls.

``allOrNone`` is false at both levels: one bad record never holds back the others, and each record
gets its own result from its subrequest's body, in input order.

Fallback: if the org refuses the composite call itself (a permanent error: an older API version,
composite turned off by a proxy, or a governor limit such as LIMIT_EXCEEDED), or a subrequest is
refused as a whole for a limit, those records go through plain Collections instead and the writer
stops using Composite for the rest of the run; ``disabled_reason`` says why (shown in the run record).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from ferry.connectors.salesforce.client import SalesforceClient, api_name
from ferry.connectors.salesforce.collections import (
    CollectionsUpsert,
    missing_key_result,
    parse_result,
    to_rest_record,
)
from ferry.connectors.salesforce.csvio import key_text
from ferry.connectors.salesforce.errors import TRANSIENT_RECORD_CODES, record_error, record_error_from_call
from ferry.connectors.salesforce.tasks import run_all
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult
from ferry.core.schema import ObjectSchema
from ferry.errors import STOPS_THE_STEP, FerryError, PermanentError

log = structlog.get_logger("ferry.connectors.salesforce.composite")

SUBREQUESTS_PER_CALL = 5  # Salesforce: at most 5 sObject Collections or query subrequests per composite
RECORDS_PER_SUBREQUEST = 200
RECORDS_PER_CALL = SUBREQUESTS_PER_CALL * RECORDS_PER_SUBREQUEST
# Codes saying "this org / this request shape cannot do that here": go back to plain Collections.
_FALLBACK_CODES = frozenset(
    {
        "LIMIT_EXCEEDED",
        "TOO_MANY_APEX_REQUESTS",
        "APEX_CPU_TIME_LIMIT_EXCEEDED",
        "TXN_SECURITY_METERING_ERROR",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "FUNCTIONALITY_NOT_ENABLED",
        "API_DISABLED_FOR_ORG",
    }
)


class CompositeUpsert:
    def __init__(self, client: SalesforceClient, collections: CollectionsUpsert) -> None:
        self.client = client
        self.collections = collections
        self.disabled_reason: str | None = None
        self.fallbacks = 0  # records sent through plain Collections instead

    async def upsert(
        self,
        sobject: str,
        external_id_field: str,
        records: Sequence[MappedRecord],
        schema: ObjectSchema | None,
        *,
        label: str,
    ) -> list[RecordResult]:
        if self.disabled_reason is not None:
            return await self.collections.upsert(sobject, external_id_field, records, schema, label=label)
        sub_url = self.client.data_path(f"/composite/sobjects/{api_name(sobject)}/{api_name(external_id_field)}")
        results: list[RecordResult | None] = [missing_key_result(r, external_id_field) for r in records]
        todo = [i for i, r in enumerate(results) if r is None]
        bodies = {i: to_rest_record(records[i], sobject, schema) for i in todo}
        groups = [todo[i : i + RECORDS_PER_CALL] for i in range(0, len(todo), RECORDS_PER_CALL)]
        fallback: list[int] = []
        await run_all(
            self._call(sub_url, group, records, bodies, external_id_field, results, fallback, label) for group in groups
        )
        if fallback:
            fallback.sort()
            self.fallbacks += len(fallback)
            again = await self.collections.upsert(
                sobject, external_id_field, [records[i] for i in fallback], schema, label=label
            )
            for i, result in zip(fallback, again, strict=True):
                results[i] = result
        return [r if r is not None else _lost() for r in results]

    async def _call(
        self,
        sub_url: str,
        indices: list[int],
        records: Sequence[MappedRecord],
        bodies: dict[int, dict[str, Any]],
        external_id_field: str,
        results: list[RecordResult | None],
        fallback: list[int],
        label: str,
    ) -> None:
        subs = [indices[i : i + RECORDS_PER_SUBREQUEST] for i in range(0, len(indices), RECORDS_PER_SUBREQUEST)]
        payload = {
            "allOrNone": False,
            "compositeRequest": [
                {
                    "method": "PATCH",
                    "url": sub_url,
                    "referenceId": f"chunk{n}",
                    "body": {"allOrNone": False, "records": [bodies[i] for i in sub]},
                }
                for n, sub in enumerate(subs)
            ],
        }
        try:
            answer = await self.client.json("POST", self.client.data_path("/composite"), label=label, json=payload,
                                            records=sum(len(sub) for sub in subs))
        except STOPS_THE_STEP:
            raise
        except PermanentError as err:
            self.disable(f"the org refused Composite ({err.code}): {err}")
            fallback.extend(indices)
            return
        except FerryError as err:
            failure = record_error_from_call(err)
            for i in indices:
                results[i] = RecordResult(key_text(records[i][external_id_field]), False, errors=[failure])
            return
        replies = answer.get("compositeResponse") if isinstance(answer, dict) else None
        by_ref = {r.get("referenceId"): r for r in replies or [] if isinstance(r, dict)}
        for n, sub in enumerate(subs):
            self.place_reply(by_ref.get(f"chunk{n}"), sub, records, external_id_field, results, fallback)

    def place_reply(
        self,
        reply: dict[str, Any] | None,
        sub: list[int],
        records: Sequence[MappedRecord],
        external_id_field: str,
        results: list[RecordResult | None],
        fallback: list[int],
    ) -> None:
        keys = [key_text(records[i][external_id_field]) for i in sub]
        status = int(reply.get("httpStatusCode") or 0) if reply else 0
        body = reply.get("body") if reply else None
        if status == 200 and isinstance(body, list) and len(body) == len(sub):
            for i, key, raw in zip(sub, keys, body, strict=True):
                results[i] = parse_result(key, raw)
            return
        code, message = _sub_error(body)
        if code in _FALLBACK_CODES or reply is None:
            self.disable(f"a Collections subrequest was refused ({code or 'no answer'}): {message}")
            fallback.extend(sub)
            return
        transient = status >= 500 or status == 429 or code in TRANSIENT_RECORD_CODES
        error = record_error(code or f"HTTP_{status}", message or "subrequest failed")
        error.transient = error.transient or transient
        for i, key in zip(sub, keys, strict=True):
            results[i] = RecordResult(key, False, errors=[error])

    def disable(self, reason: str) -> None:
        if self.disabled_reason is None:
            self.disabled_reason = reason
            log.warning("composite.fallback", reason=reason)


def _sub_error(body: Any) -> tuple[str | None, str]:
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        return str(first.get("errorCode") or first.get("statusCode") or "") or None, str(first.get("message", ""))
    return None, ""


def _lost() -> RecordResult:  # pragma: no cover - every slot is filled above; kept so nothing is ever dropped
    from ferry.errors import RecordError

    return RecordResult("", False, errors=[RecordError("NOT_PROCESSED", "no result recorded", [], True)])
