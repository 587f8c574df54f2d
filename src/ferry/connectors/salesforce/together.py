"""Several objects' upserts in ONE API call: a Composite request whose subrequests are sObject Collections
upserts (``PATCH /composite/sobjects/{Obj}/{ExtField}``), one per part, parents' parts first.

Salesforce: "the entire series of requests counts as a single call toward your API limits"; a composite holds at
most 5 sObject Collections subrequests (of <= 200 records each). ``collateSubrequests: false`` keeps them in the
order given (collated subrequests "may run in a different order" from API 49), so an Account's upsert has run
before the Contact naming it by external id is saved. ``allOrNone`` is false at both levels: a bad Contact fails
alone, with its own error, and the rest of its subrequest and the other subrequests are saved.

Fallback as ``CompositeUpsert``: a composite the org refuses (a permanent error) or a subrequest refused for a
limit sends those parts through plain Collections, one after another in the given order, and Composite is off
for the rest of the sink's life (``disabled_reason``). A call that fails in transit fails each of its records
with the call's error (transient when worth a retry): nothing is lost, the engine's outbox keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ferry.connectors.salesforce.client import SalesforceClient, api_name
from ferry.connectors.salesforce.collections import CollectionsUpsert, missing_key_result, to_rest_record
from ferry.connectors.salesforce.composite import RECORDS_PER_SUBREQUEST, SUBREQUESTS_PER_CALL, CompositeUpsert
from ferry.connectors.salesforce.csvio import key_text
from ferry.connectors.salesforce.errors import record_error_from_call
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult
from ferry.core.schema import ObjectSchema
from ferry.errors import AuthError, BudgetExhausted, ConfigError, FerryError, PermanentError, RecordError


@dataclass(frozen=True, slots=True)
class Part:
    sobject: str
    external_id: str
    records: Sequence[MappedRecord]
    schema: ObjectSchema | None  # for parent references (None: the records carry none)


class TogetherUpsert:
    def __init__(self, client: SalesforceClient, collections: CollectionsUpsert, composite: CompositeUpsert) -> None:
        self.client = client
        self.collections = collections
        self.composite = composite  # shares its "Composite refused" state: one org, one answer

    async def upsert(self, parts: Sequence[Part], *, label: str) -> list[list[RecordResult]]:
        """One result list per part, in input order. Parts beyond one call's limits go in further calls, one
        after another (the order between parts holds across calls too)."""
        subs = [(n, start) for n, part in enumerate(parts)
                for start in range(0, max(len(part.records), 1), RECORDS_PER_SUBREQUEST)]
        results: list[list[RecordResult | None]] = [
            [missing_key_result(r, part.external_id) for r in part.records] for part in parts
        ]
        for first in range(0, len(subs), SUBREQUESTS_PER_CALL):
            await self._call(parts, subs[first:first + SUBREQUESTS_PER_CALL], results, label)
        return [[r if r is not None else _lost() for r in part] for part in results]

    async def _call(
        self, parts: Sequence[Part], subs: Sequence[tuple[int, int]], results: list[list[RecordResult | None]],
        label: str,
    ) -> None:
        # (part, index of each record sent) per subrequest; records without an external id were answered already.
        sent = [(n, [i for i in range(start, min(start + RECORDS_PER_SUBREQUEST, len(parts[n].records)))
                     if results[n][i] is None]) for n, start in subs]
        sent = [(n, idx) for n, idx in sent if idx]
        if not sent:
            return
        if self.composite.disabled_reason is not None:
            await self._one_by_one(parts, sent, results, label)
            return
        requests = [
            {
                "method": "PATCH",
                "url": self.client.data_path(
                    f"/composite/sobjects/{api_name(parts[n].sobject)}/{api_name(parts[n].external_id)}"),
                "referenceId": f"part{k}",
                "body": {"allOrNone": False,
                         "records": [to_rest_record(parts[n].records[i], parts[n].sobject, parts[n].schema)
                                     for i in idx]},
            }
            for k, (n, idx) in enumerate(sent)
        ]
        payload = {"allOrNone": False, "collateSubrequests": False, "compositeRequest": requests}
        try:
            answer = await self.client.json("POST", self.client.data_path("/composite"), label=label, json=payload,
                                            records=sum(len(idx) for _, idx in sent))
        except (BudgetExhausted, AuthError, ConfigError):
            raise  # the run must stop (or be fixed); these are not about the records
        except PermanentError as err:
            self.composite.disable(f"the org refused Composite ({err.code}): {err}")
            await self._one_by_one(parts, sent, results, label)
            return
        except FerryError as err:
            failure = record_error_from_call(err)
            for n, idx in sent:
                for i in idx:
                    results[n][i] = RecordResult(_key(parts[n], i), False, errors=[failure])
            return
        replies = answer.get("compositeResponse") if isinstance(answer, dict) else None
        by_ref = {r.get("referenceId"): r for r in replies or [] if isinstance(r, dict)}
        refused: list[tuple[int, list[int]]] = []
        for k, (n, idx) in enumerate(sent):
            placed: list[RecordResult | None] = [None] * len(parts[n].records)
            fallback: list[int] = []
            self.composite.place_reply(by_ref.get(f"part{k}"), idx, parts[n].records, parts[n].external_id, placed,
                                       fallback)
            for i in idx:
                results[n][i] = placed[i]
            if fallback:
                refused.append((n, sorted(fallback)))
        if refused:  # a subrequest refused for a limit: those parts through plain Collections, in order
            await self._one_by_one(parts, refused, results, label)

    async def _one_by_one(
        self, parts: Sequence[Part], sent: Sequence[tuple[int, list[int]]], results: list[list[RecordResult | None]],
        label: str,
    ) -> None:
        """Without Composite: each part's records in a Collections call, parts one after another (parents first)."""
        for n, idx in sent:
            part = parts[n]
            self.composite.fallbacks += len(idx)
            again = await self.collections.upsert(part.sobject, part.external_id, [part.records[i] for i in idx],
                                                  part.schema, label=label, serial=True)
            for i, result in zip(idx, again, strict=True):
                results[n][i] = result


def _key(part: Part, i: int) -> str:
    return key_text(part.records[i][part.external_id])


def _lost() -> RecordResult:  # pragma: no cover - every slot is filled above; kept so nothing is ever dropped
    return RecordResult("", False, errors=[RecordError("NOT_PROCESSED", "no result recorded", [], True)])

