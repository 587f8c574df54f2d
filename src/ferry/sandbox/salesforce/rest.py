"""REST resources: versions, describe, sObject rows, external-id upsert, query, limits."""

from __future__ import annotations

import datetime as dt
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ferry.sandbox.salesforce.describe import describe_object, global_describe, object_summary
from ferry.sandbox.salesforce.dml import RECYCLE_BIN_DAYS, MultipleMatches, SaveResult
from ferry.sandbox.salesforce.errors import ApiError, RecordError, not_found
from ferry.sandbox.salesforce.ids import IdFactory, normalize_id
from ferry.sandbox.salesforce.org_rules import duplicate_header
from ferry.sandbox.salesforce.query import ChildPlan
from ferry.sandbox.salesforce.routing import Call, Reply, Router
from ferry.sandbox.salesforce.schema import SObjectSchema
from ferry.sandbox.salesforce.soql import parse
from ferry.sandbox.salesforce.state import OrgState
from ferry.sandbox.salesforce.store import Record
from ferry.sandbox.salesforce.validate import ParsedBody, check_json_types, format_datetime, parse_body, parse_datetime

_BATCH_SIZE = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)
_MAX_CURSORS = 500


def record_json(obj: SObjectSchema, record: Record, version: str, fields: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": {"type": obj.name, "url": f"/services/data/v{version}/sobjects/{obj.name}/{record['Id']}"}
    }
    for name in fields if fields is not None else obj.fields:
        out[name] = record.get(name)
    return out


MAX_REPLICATION_IDS = 600_000  # getUpdated/getDeleted answer at most this many ids


def _check_id_limit(count: int) -> None:
    if count > MAX_REPLICATION_IDS:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", f"The operation would return more than {MAX_REPLICATION_IDS} ids; "
                       "choose start and end dates that are closer together")


def unknown_external_field(name: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}")


def save_error_reply(result: SaveResult) -> Reply:
    """A failed single-record save: 400. (A missing or deleted target row is a 404, answered before the save.)"""
    return Reply(400, result.errors[0].rest_body())


def parse_record_body(state: OrgState, obj: SObjectSchema, call: Call) -> ParsedBody:
    body = call.json()
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object value")
    check_json_types(obj, body, call.body)
    try:
        return mark_call(parse_body(state.schema, obj, body), call)
    except RecordError as err:
        raise err.as_api_error() from None


def mark_call(body: ParsedBody, call: Call) -> ParsedBody:
    """What the org's rules need from the request itself: the duplicate-rule header and the API version."""
    body.duplicate_header = duplicate_header(call.headers)
    body.api_version = call.version
    return body


@dataclass(slots=True)
class Cursor:
    records: list[dict[str, Any]]
    batch_size: int
    endpoint: str  # "query" or "queryAll"
    weights: list[int] | None = None  # rows per record, when child subqueries add rows to it

    def page_end(self, offset: int) -> int:
        """Where the page starting at ``offset`` ends: child rows count toward the batch size, as in the org."""
        if self.weights is None:
            return offset + self.batch_size
        used, end = 0, offset
        while end < len(self.records) and (end == offset or used + self.weights[end] <= self.batch_size):
            used += self.weights[end]
            end += 1
        return end


class RestApi:
    def __init__(self, state: OrgState) -> None:
        self.state = state
        self.cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._locators = IdFactory(seed=7)

    def register(self, router: Router) -> None:
        r = router.add
        r("GET", "", self.resources)
        r("GET", "sobjects", self.describe_global)
        r("GET", "sobjects/{sobject}", self.basic_info)
        r("POST", "sobjects/{sobject}", self.create)
        r("GET", "sobjects/{sobject}/describe", self.describe)
        r("GET", "sobjects/{sobject}/updated", self.get_updated)
        r("GET", "sobjects/{sobject}/deleted", self.get_deleted)
        r("GET", "sobjects/{sobject}/{id}", self.get_by_id)
        r("PATCH", "sobjects/{sobject}/{id}", self.update_by_id)
        r("POST", "sobjects/{sobject}/{id}", self.method_override)
        r("DELETE", "sobjects/{sobject}/{id}", self.delete_by_id)
        r("GET", "sobjects/{sobject}/{field}/{value}", self.get_by_external_id)
        r("PATCH", "sobjects/{sobject}/{field}/{value}", self.upsert)
        r("POST", "sobjects/{sobject}/{field}/{value}", self.method_override_ext)
        r("DELETE", "sobjects/{sobject}/{field}/{value}", self.delete_by_external_id)
        r("GET", "query", self.query, collection=True)
        r("GET", "queryAll", self.query_all, collection=True)
        r("GET", "query/{locator}", self.query_more, collection=True)
        r("GET", "queryAll/{locator}", self.query_more, collection=True)
        r("GET", "limits", self.limits)
        r("GET", "limits/recordCount", self.record_count)

    # --- metadata -------------------------------------------------------------------------------------

    def resources(self, call: Call, _: dict[str, str]) -> Reply:
        base = f"/services/data/v{call.version}"
        names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs", "search", "parameterizedSearch",
                 "tooling"]
        return Reply(200, {name: f"{base}/{name}" for name in names})

    def describe_global(self, call: Call, _: dict[str, str]) -> Reply:
        return Reply(200, global_describe(self.state.schema, call.version))

    def basic_info(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        return Reply(200, {"objectDescribe": object_summary(obj, call.version), "recentItems": []})

    def describe(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        return Reply(200, describe_object(self.state.schema, obj, call.version))

    # --- rows by id -----------------------------------------------------------------------------------

    def create(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        result = self.state.org.create(obj, parse_record_body(self.state, obj, call))
        if not result.success:
            return save_error_reply(result)
        location = f"/services/data/v{call.version}/sobjects/{obj.name}/{result.id}"
        return Reply(201, {"id": result.id, "success": True, "errors": []}, headers={"Location": location})

    def _live_record(self, obj: SObjectSchema, raw_id: str) -> Record:
        record_id = normalize_id(raw_id)
        table = self.state.store.table(obj.name)
        if record_id is None or record_id[:3] != obj.key_prefix:
            # A segment that is not an id of this object is read as an external-id field name.
            raise unknown_external_field(raw_id)
        record = table.rows.get(record_id)
        if record is None:
            if record_id in table.deleted:
                raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
            raise not_found()
        return record

    def _selected_fields(self, obj: SObjectSchema, call: Call) -> list[str] | None:
        raw = call.query.get("fields")
        if not raw:
            return None
        names = []
        for name in raw.split(","):
            f = obj.field(name.strip())
            if f is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{name.strip()}' on entity '{obj.name}'. If you "
                               "are attempting to use a custom field, be sure to append the '__c' after the custom "
                               "field name. Please reference your WSDL or the describe call for the appropriate names.")
            names.append(f.name)
        return names

    def get_by_id(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        record = self._live_record(obj, p["id"])
        return Reply(200, record_json(obj, record, call.version, self._selected_fields(obj, call)))

    def update_by_id(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        self._live_record(obj, p["id"])
        result = self.state.org.update(obj, p["id"], parse_record_body(self.state, obj, call))
        return Reply(204) if result.success else save_error_reply(result)

    def delete_by_id(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        self._live_record(obj, p["id"])
        result = self.state.org.delete(p["id"], obj)
        return Reply(204) if result.success else save_error_reply(result)

    def method_override(self, call: Call, p: dict[str, str]) -> Reply:
        """`POST ...?_HttpMethod=PATCH` for clients without PATCH."""
        method = call.query.get("_HttpMethod", "").upper()
        if method == "PATCH":
            return self.update_by_id(call, p)
        if method == "DELETE":
            return self.delete_by_id(call, p)
        if p["id"].lower() == "id":
            # POST /sobjects/{Obj}/Id creates: Id treated as an external id whose value is null (API >= 37)
            return self.create(call, p)
        raise ApiError(405, "METHOD_NOT_ALLOWED", "HTTP Method 'POST' not allowed. Allowed are GET,PATCH,DELETE")

    # --- rows by external id --------------------------------------------------------------------------

    def _key_field(self, obj: SObjectSchema, name: str) -> Any:
        f = obj.field(name)
        if f is None or not f.id_lookup:
            raise unknown_external_field(name)
        return f

    def _matches(self, obj: SObjectSchema, field_name: str, value: str) -> list[str]:
        f = self._key_field(obj, field_name)
        if f.name == "Id":
            record_id = normalize_id(value)
            return [record_id] if record_id and record_id in self.state.store.table(obj.name).rows else []
        try:
            key = self.state.org.coercers.get(f)(value)
        except RecordError:
            return []
        return list(self.state.store.table(obj.name).lookup(f, key))

    def _multiple(self, obj: SObjectSchema, ids: list[str], version: str) -> Reply:
        return Reply(300, [f"/services/data/v{version}/sobjects/{obj.name}/{i}" for i in ids])

    def get_by_external_id(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        ids = self._matches(obj, p["field"], p["value"])
        if len(ids) > 1:
            return self._multiple(obj, ids, call.version)
        if not ids:
            raise not_found()
        record = self.state.store.table(obj.name).rows[ids[0]]
        return Reply(200, record_json(obj, record, call.version, self._selected_fields(obj, call)))

    def upsert(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        key_field = self._key_field(obj, p["field"])
        if key_field.name == "Id":
            self._live_record(obj, p["value"])  # upsert by Id updates only: a missing record is a 404
        body = parse_record_body(self.state, obj, call)
        in_body = [v for f, v in body.values if f is key_field]
        if in_body and str(in_body[0]) != p["value"]:
            raise ApiError(400, "INVALID_FIELD", f"The {key_field.name} field should not be specified in the sobject "
                           "data or must match the value in the URL.", [key_field.name])
        if call.query.get("updateOnly", "").lower() == "true" and not self._matches(obj, key_field.name, p["value"]):
            raise not_found()
        try:
            result = self.state.org.upsert(obj, key_field, p["value"], body)
        except MultipleMatches as many:
            return self._multiple(obj, many.ids, call.version)
        if not result.success:
            return save_error_reply(result)
        if float(call.version) < 46:
            return Reply(201, {"id": result.id, "success": True, "errors": []}) if result.created else Reply(204)
        body_out: dict[str, Any] = {"id": result.id, "success": True, "errors": [], "created": bool(result.created)}
        return Reply(201 if result.created else 200, body_out)

    def method_override_ext(self, call: Call, p: dict[str, str]) -> Reply:
        if call.query.get("_HttpMethod", "").upper() == "PATCH":
            return self.upsert(call, p)
        raise ApiError(405, "METHOD_NOT_ALLOWED", "HTTP Method 'POST' not allowed. Allowed are GET,PATCH,DELETE")

    def delete_by_external_id(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        ids = self._matches(obj, p["field"], p["value"])
        if len(ids) > 1:
            return self._multiple(obj, ids, call.version)
        if not ids:
            raise not_found()
        result = self.state.org.delete(ids[0], obj)
        return Reply(204) if result.success else save_error_reply(result)

    # --- replication: sObject Get Updated / Get Deleted -------------------------------------------------

    def _replication_window(self, call: Call, max_days: int) -> tuple[str, str]:
        """[start, end) in wire form; the org ignores seconds and answers only for the last ``max_days`` days."""
        bounds = []
        for name in ("start", "end"):
            raw = call.query.get(name)
            if not raw:
                raise ApiError(400, "MISSING_ARGUMENT", f"{name} is required: an ISO 8601 date and time")
            try:
                moment = parse_datetime(raw.replace(" ", "+"))  # an unencoded '+' arrives as a space
            except ValueError:
                raise ApiError(400, "INVALID_REPLICATION_DATE", f"{name}: invalid date and time: {raw}") from None
            bounds.append(moment.replace(second=0, microsecond=0))
        start, end = bounds
        now = self.state.clock()
        if start >= end:
            # SOAP getUpdated/getDeleted rules: start must precede end (seconds dropped), never equal it.
            raise ApiError(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate")
        if start < now - dt.timedelta(days=max_days):
            raise ApiError(400, "INVALID_REPLICATION_DATE",
                           f"startDate cannot be more than {max_days} days ago")
        return format_datetime(start), format_datetime(min(end, now))

    def get_updated(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        start, end = self._replication_window(call, 30)
        ids = [rid for rid, r in self.state.store.table(obj.name).rows.items() if start <= r["SystemModstamp"] < end]
        _check_id_limit(len(ids))
        return Reply(200, {"ids": ids, "latestDateCovered": end})

    def get_deleted(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        start, end = self._replication_window(call, RECYCLE_BIN_DAYS)
        self.state.org.empty_recycle_bin()
        gone = [{"id": rid, "deletedDate": r["SystemModstamp"]}
                for rid, r in self.state.store.table(obj.name).deleted.items() if start <= r["SystemModstamp"] < end]
        _check_id_limit(len(gone))
        earliest = format_datetime((self.state.clock() - dt.timedelta(days=RECYCLE_BIN_DAYS))
                                   .replace(second=0, microsecond=0))
        return Reply(200, {"deletedRecords": gone, "earliestDateAvailable": earliest, "latestDateCovered": end})

    # --- query ----------------------------------------------------------------------------------------

    def query(self, call: Call, _: dict[str, str]) -> Reply:
        return self._run_query(call, include_deleted=False)

    def query_all(self, call: Call, _: dict[str, str]) -> Reply:
        self.state.org.empty_recycle_bin()  # queryAll sees the recycle bin: only its last 15 days
        return self._run_query(call, include_deleted=True)

    def _run_query(self, call: Call, include_deleted: bool) -> Reply:
        soql = call.query.get("q")
        if soql is None:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        executor = self.state.executor
        plan = executor.plan(parse(soql))
        if plan.count_only or plan.grouped is not None:
            return Reply(200, executor.aggregate_result(plan, include_deleted))
        rows = executor.rows(plan, include_deleted)
        records = [executor.project(plan, r, call.version, include_deleted) for r in rows]
        batch = self._batch_size(call)
        endpoint = "queryAll" if include_deleted else "query"
        children = [item.relationship for item in plan.items if isinstance(item, ChildPlan)]
        weights = [1 + sum(len(r[name]["records"]) for name in children if r[name]) for r in records] \
            if children else None
        return self._page(Cursor(records, batch, endpoint, weights), 0, call.version)

    def _batch_size(self, call: Call) -> int:
        m = _BATCH_SIZE.search(call.headers.get("sforce-query-options", ""))
        if not m:
            return 2000
        return min(max(int(m.group(1)), 200), 2000)

    def _page(self, cursor: Cursor, offset: int, version: str) -> Reply:
        total = len(cursor.records)
        end = cursor.page_end(offset)
        body: dict[str, Any] = {"totalSize": total, "done": end >= total}
        if end < total:
            locator = self._locators.new("01g")
            self.cursors[locator] = cursor
            while len(self.cursors) > _MAX_CURSORS:
                self.cursors.popitem(last=False)
            body["nextRecordsUrl"] = f"/services/data/v{version}/{cursor.endpoint}/{locator}-{end}"
        body["records"] = cursor.records[offset:end]
        return Reply(200, body)

    def query_more(self, call: Call, p: dict[str, str]) -> Reply:
        locator, _, offset_text = p["locator"].rpartition("-")
        cursor = self.cursors.get(locator)
        if cursor is None or not offset_text.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(cursor, int(offset_text), call.version)

    # --- limits ---------------------------------------------------------------------------------------

    def limits(self, call: Call, _: dict[str, str]) -> Reply:
        return Reply(200, self.state.budget.limits_body())

    def record_count(self, call: Call, _: dict[str, str]) -> Reply:
        names = [n for n in call.query.get("sObjects", "").split(",") if n] or list(self.state.schema.objects)
        counts = []
        for name in names:
            obj = self.state.schema.get(name)
            if obj is not None:
                counts.append({"count": len(self.state.store.table(obj.name).rows), "name": obj.name})
        return Reply(200, {"sObjects": counts})

    def reset(self) -> None:
        self.cursors.clear()
