"""The Accounting API's operations on one company, independent of HTTP: read, write (create, update, delete,
void), query, batch and CDC. Each returns the answer's JSON body; a rule violation raises ``QboFault``.
"""

from __future__ import annotations

from typing import Any

from ferry.sandbox.quickbooks import errors
from ferry.sandbox.quickbooks.company import BY_LOWER, ENTITIES, Company, Record
from ferry.sandbox.quickbooks.query import parse, run
from ferry.sandbox.quickbooks.times import parse as parse_time
from ferry.sandbox.quickbooks.times import qbo_now
from ferry.sandbox.quickbooks.writes import Writer

BATCH_MAX = 30
CDC_MAX_DAYS = 30
CDC_MAX_ROWS = 1000  # per answer, across every entity asked for


def entity_of(url_name: str) -> str:
    entity = BY_LOWER.get(url_name.lower())
    if entity is None:
        raise errors.unsupported(f"{url_name} is not a supported entity;")
    return entity


def read(company: Company, entity: str, rid: str) -> dict[str, Any]:
    record = company.get(entity, rid)
    if record is None:
        raise errors.not_found(f"Object Not Found : Something you're trying to use has been made inactive. Check "
                               f"the fields with accounts, customers, items, vendors or employees. {entity} Id={rid}")
    return {entity: record, "time": qbo_now()}


def write(company: Company, entity: str, body: Any, operation: str | None, include: str | None) -> dict[str, Any]:
    """``POST /{entity}``: a create, or an update when the body has an Id; ``?operation=delete|void`` (and
    ``operation=update&include=void``, how Payments and SalesReceipts are voided)."""
    if not isinstance(body, dict):
        raise errors.bad_request("body")
    writer = Writer(company)
    op = (operation or "").lower()
    if op == "delete":
        return {entity: writer.delete(entity, body), "time": qbo_now()}
    if op == "void" or (op == "update" and (include or "").lower() == "void"):
        return {entity: writer.void(entity, body), "time": qbo_now()}
    if op not in ("", "create", "update"):
        raise errors.unsupported(f"{operation}")
    record = writer.update(entity, body) if body.get("Id") else writer.create(entity, body)
    return {entity: record, "time": qbo_now()}


def query(company: Company, text: str) -> dict[str, Any]:
    if not text.strip():
        raise errors.required("query", "query")
    return {"QueryResponse": run(company, parse(text)), "time": qbo_now()}


def batch(company: Company, body: Any) -> tuple[dict[str, Any], bool]:
    """The batch answer and whether any item wrote something."""
    items = body.get("BatchItemRequest") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise errors.required("BatchItemRequest", "BatchItemRequest")
    if len(items) > BATCH_MAX:
        raise errors.QboFault("1040", "Max Batch Items Exceeded",
                              f"Number of BatchItemRequest exceeds the limit of {BATCH_MAX}", "BatchItemRequest")
    answers: list[dict[str, Any]] = []
    wrote = False
    for item in items:
        answer, item_wrote = _batch_item(company, item if isinstance(item, dict) else {})
        answers.append(answer)
        wrote = wrote or item_wrote
    return {"BatchItemResponse": answers, "time": qbo_now()}, wrote


def _batch_item(company: Company, item: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    bid = item.get("bId")
    try:
        if "Query" in item:
            return {"bId": bid, "QueryResponse": run(company, parse(str(item["Query"])))}, False
        names = [k for k in item if k in ENTITIES]
        if len(names) != 1:
            raise errors.required("entity", "BatchItemRequest")
        entity = names[0]
        operation = str(item.get("operation") or "create").lower()
        if operation not in ("create", "update", "delete"):
            raise errors.unsupported(operation)
        answer = write(company, entity, item[entity], operation if operation == "delete" else None, None)
        return {"bId": bid, entity: answer[entity]}, True
    except errors.QboFault as fault:
        return {"bId": bid, "Fault": fault.fault()}, False


def cdc(company: Company, entities: str | None, changed_since: str | None, now: float) -> dict[str, Any]:
    if not entities:
        raise errors.required("entities", "entities")
    if not changed_since:
        raise errors.required("changedSince", "changedSince")
    try:
        since = parse_time(changed_since)
    except ValueError:
        raise errors.QboFault("2040", "Invalid Date", f"Invalid Date : {changed_since}", "changedSince") from None
    if now - since > CDC_MAX_DAYS * 86400:
        raise errors.business(f"changedSince cannot be more than {CDC_MAX_DAYS} days in the past", "6000",
                              "changedSince")
    responses: list[dict[str, Any]] = []
    room = CDC_MAX_ROWS  # one cap shared by all the entities asked for
    for name in [n.strip() for n in entities.split(",") if n.strip()]:
        entity = entity_of(name)
        rows = [r for r in company.all(entity) if _updated_since(r, since)]
        rows += [d for d in company.deleted[entity].values() if _updated_since(d, since)]
        rows = rows[:room]
        room -= len(rows)
        responses.append({entity: rows, "startPosition": 1, "maxResults": len(rows), "totalCount": len(rows)}
                         if rows else {})
    return {"CDCResponse": [{"QueryResponse": responses}], "time": qbo_now()}


def _updated_since(record: Record, since: float) -> bool:
    return parse_time(record["MetaData"]["LastUpdatedTime"]) >= since


def company_info(company: Company) -> dict[str, Any]:
    info = {
        "CompanyName": company.name, "LegalName": company.name, "Country": "US",
        "CompanyAddr": {"Id": "1", "Line1": "123 Sierra Way", "City": "San Pablo", "CountrySubDivisionCode": "CA",
                        "PostalCode": "87999", "Country": "USA"},
        "SupportedLanguages": "en", "DefaultTimeZone": "America/Los_Angeles", "Id": "1", "SyncToken": "0",
        "domain": "QBO", "sparse": False, "MetaData": {"CreateTime": "2024-01-01T00:00:00-08:00",
                                                       "LastUpdatedTime": "2024-01-01T00:00:00-08:00"},
    }
    return {"CompanyInfo": info, "time": qbo_now()}
