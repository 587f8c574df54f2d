"""sObject Collections (create/update/upsert/delete/retrieve, <= 200 records) and Composite (<= 25 subrequests)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from ferry.sandbox.salesforce.dml import MultipleMatches, SaveResult
from ferry.sandbox.salesforce.errors import ApiError, RecordError
from ferry.sandbox.salesforce.ids import normalize_id
from ferry.sandbox.salesforce.rest import mark_call, record_json, unknown_external_field
from ferry.sandbox.salesforce.routing import Call, Reply, Router, endpoint_name, parse_sub_url
from ferry.sandbox.salesforce.schema import FieldSchema, SObjectSchema
from ferry.sandbox.salesforce.state import OrgState
from ferry.sandbox.salesforce.validate import check_json_types, parse_body

MAX_COLLECTION = 200
MAX_RETRIEVE = 2000  # a POST retrieve takes up to 2,000 ids (a GET runs into the URL length first)
MAX_SUBREQUESTS = 25
MAX_COLLECTION_SUBREQUESTS = 5
_REF = re.compile(r"@\{([A-Za-z0-9][A-Za-z0-9_]*)\.([^}]+)\}")
_INDEX = re.compile(r"^([^\[]*)((?:\[\d+\])*)$")
ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header", [])
HALTED = [{"errorCode": "PROCESSING_HALTED",
           "message": "The transaction was rolled back since another operation in the same transaction failed."}]


def _too_many(limit: int = MAX_COLLECTION) -> ApiError:
    message = f"record limit reached. cannot submit more than {limit} records into this call"
    return ApiError(400, "EXCEEDED_ID_LIMIT", message)


def _records_of(body: Any) -> tuple[list[Any], bool]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize the request: expected an object with 'records'")
    records = body["records"]
    if len(records) > MAX_COLLECTION:
        raise _too_many()
    return records, bool(body.get("allOrNone", False))


class CollectionsApi:
    def __init__(self, state: OrgState, router: Router) -> None:
        self.state = state
        self.router = router

    def register(self, router: Router) -> None:
        r = router.add
        r("POST", "composite/sobjects", self.create, collection=True)
        r("PATCH", "composite/sobjects", self.update, collection=True)
        r("DELETE", "composite/sobjects", self.delete, collection=True)
        r("GET", "composite/sobjects/{sobject}", self.retrieve, collection=True)
        r("POST", "composite/sobjects/{sobject}", self.retrieve_post, collection=True)
        r("PATCH", "composite/sobjects/{sobject}/{field}", self.upsert, collection=True)
        r("POST", "composite", self.composite)
        r("POST", "composite/batch", self.batch)

    # --- collections ----------------------------------------------------------------------------------

    def _typed_object(self, record: Any) -> SObjectSchema:
        attrs = record.get("attributes") if isinstance(record, dict) else None
        name = attrs.get("type") if isinstance(attrs, dict) else None
        if not name:
            raise ApiError(400, "INVALID_INPUT", "When using sObject collections, each record must specify its "
                           "type in attributes")
        obj = self.state.schema.get(str(name))
        if obj is None:
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported.")
        return obj

    def _run(self, call: Call, all_or_none: bool, work: list[Any], save: Any, with_created: bool = False) -> Reply:
        """Save each record in input order; with allOrNone, roll every write back if any record failed."""
        all_or_none = all_or_none or call.force_all_or_none
        with self.state.store.transaction() as savepoint:
            results: list[SaveResult] = [save(item) for item in work]
            if all_or_none and any(not r.success for r in results):
                savepoint.rollback()
                # The rolled-back records keep the id they had been given, as in the org's documented example.
                results = [r if not r.success else SaveResult(r.id, False, [ROLLED_BACK], r.created)
                           for r in results]
        return Reply(200, [r.as_json(with_created) for r in results])

    @staticmethod
    def _deserialize(call: Call, objects: list[SObjectSchema], records: list[Any]) -> None:
        """The org deserializes the whole list before saving any record: a wrong JSON type fails the request."""
        for obj, rec in zip(objects, records, strict=True):
            if isinstance(rec, dict):
                check_json_types(obj, rec, call.body)

    def create(self, call: Call, _: dict[str, str]) -> Reply:
        records, all_or_none = _records_of(call.json())
        objects = [self._typed_object(rec) for rec in records]
        self._deserialize(call, objects, records)

        def save(item: tuple[SObjectSchema, dict[str, Any]]) -> SaveResult:
            obj, rec = item
            try:
                return self.state.org.create(obj, mark_call(parse_body(self.state.schema, obj, rec), call))
            except RecordError as err:
                return SaveResult(None, False, [err])

        return self._run(call, all_or_none, list(zip(objects, records, strict=True)), save)

    def update(self, call: Call, _: dict[str, str]) -> Reply:
        records, all_or_none = _records_of(call.json())
        objects = [self._typed_object(rec) for rec in records]
        self._deserialize(call, objects, records)

        def save(item: tuple[SObjectSchema, dict[str, Any]]) -> SaveResult:
            obj, rec = item
            try:
                body = mark_call(parse_body(self.state.schema, obj, rec), call)
            except RecordError as err:
                return SaveResult(None, False, [err])
            return self.state.org.update(obj, body.record_id, body)

        return self._run(call, all_or_none, list(zip(objects, records, strict=True)), save)

    def upsert(self, call: Call, p: dict[str, str]) -> Reply:
        obj = self.state.sobject(p["sobject"])
        key_field = obj.field(p["field"])
        if key_field is None or not key_field.id_lookup:
            raise unknown_external_field(p["field"])
        records, all_or_none = _records_of(call.json())
        self._deserialize(call, [obj] * len(records), records)
        keys = [self._key_value(rec, key_field) for rec in records]
        dupes = {k for k, n in Counter(self._fold(key_field, k) for k in keys if k is not None).items() if n > 1}

        def save(item: tuple[dict[str, Any], Any]) -> SaveResult:
            rec, key = item
            if key is not None and self._fold(key_field, key) in dupes:
                dup = RecordError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {key}", [key_field.name])
                return SaveResult(None, False, [dup])
            try:
                if isinstance(rec, dict) and isinstance(rec.get("attributes"), dict) and \
                        str(rec["attributes"].get("type", obj.name)).lower() != obj.name.lower():
                    raise RecordError("INVALID_TYPE", f"Record type does not match the URL object: {obj.name}", [])
                body = mark_call(parse_body(self.state.schema, obj, rec), call)
                return self.state.org.upsert(obj, key_field, key, body)
            except RecordError as err:
                return SaveResult(None, False, [err])
            except MultipleMatches as many:
                message = f"more than one record found for external id field: {many.ids}"
                return SaveResult(None, False, [RecordError("DUPLICATE_EXTERNAL_ID", message, [key_field.name])])

        return self._run(call, all_or_none, list(zip(records, keys, strict=True)), save, with_created=True)

    @staticmethod
    def _key_value(rec: Any, key_field: FieldSchema) -> Any:
        if not isinstance(rec, dict):
            return None
        lower = key_field.name.lower()
        return next((v for k, v in rec.items() if k.lower() == lower), None)

    @staticmethod
    def _fold(key_field: FieldSchema, value: Any) -> Any:
        text = str(value)
        return text if key_field.case_sensitive else text.lower()

    def delete(self, call: Call, _: dict[str, str]) -> Reply:
        ids = [i for i in call.query.get("ids", "").split(",") if i]
        if not ids:
            raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
        if len(ids) > MAX_COLLECTION:
            raise _too_many()
        all_or_none = call.query.get("allOrNone", "false").lower() == "true"
        return self._run(call, all_or_none, ids, lambda raw: self.state.org.delete(raw))

    def retrieve(self, call: Call, p: dict[str, str]) -> Reply:
        ids = [i for i in call.query.get("ids", "").split(",") if i]
        fields = [f for f in call.query.get("fields", "").split(",") if f]
        return self._retrieve(call, p["sobject"], ids, fields)

    def retrieve_post(self, call: Call, p: dict[str, str]) -> Reply:
        body = call.json()
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "expected an object with ids and fields")
        return self._retrieve(call, p["sobject"], list(body.get("ids") or []), list(body.get("fields") or []))

    def _retrieve(self, call: Call, sobject: str, ids: list[str], fields: list[str]) -> Reply:
        obj = self.state.sobject(sobject)
        if len(ids) > MAX_RETRIEVE:
            raise _too_many(MAX_RETRIEVE)
        names: list[str] = []
        for name in fields:
            f = obj.field(name.strip())
            if f is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{name.strip()}' on entity '{obj.name}'.")
            names.append(f.name)
        rows = self.state.store.table(obj.name).rows
        out: list[Any] = []
        for raw in ids:
            record_id = normalize_id(raw)
            record = rows.get(record_id) if record_id else None
            out.append(record_json(obj, record, call.version, names or None) if record else None)
        return Reply(200, out)

    # --- composite ------------------------------------------------------------------------------------

    def composite(self, call: Call, _: dict[str, str]) -> Reply:
        body = call.json()
        subs = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subs, list) or not subs:
            raise ApiError(400, "JSON_PARSER_ERROR", "compositeRequest is required")
        if len(subs) > MAX_SUBREQUESTS:
            raise ApiError(400, "LIMIT_EXCEEDED", f"Composite request can contain at most {MAX_SUBREQUESTS} "
                           "subrequests")
        self._check_collection_count(subs)
        results, _failed = self.run_subrequests(subs, bool(body.get("allOrNone", False)),
                                                refs=may_reference(call.body))
        return Reply(200, {"compositeResponse": results})

    def run_subrequests(self, subs: list[Any], all_or_none: bool, allowed: Callable[[Call], bool] | None = None,
                        *, refs: bool = True) -> tuple[list[dict[str, Any]], bool]:
        """Run Composite subrequests in order, with references between them; returns (results, any failed).

        With ``all_or_none`` the first failure rolls every write back and the others answer PROCESSING_HALTED
        (Composite with allOrNone, and every graph of Composite Graph). ``allowed`` refuses a subrequest
        before it runs (Composite Graph accepts only record resources). ``refs`` False: the request holds no
        reference (``may_reference``), its subrequests' bodies are not searched for one.
        """
        results: list[dict[str, Any]] = []
        outputs: dict[str, Any] = {}
        failed_at: int | None = None
        with self.state.store.transaction() as savepoint:
            for index, sub in enumerate(subs):
                ref_id = str(sub.get("referenceId", "")) if isinstance(sub, dict) else ""
                if failed_at is not None and all_or_none:
                    results.append(self.sub_result(ref_id, 400, HALTED))
                    continue
                reply = self._run_sub(sub, outputs, all_or_none, allowed, refs)
                results.append(self.sub_result(ref_id, reply.status, reply.body, reply.headers))
                if reply.status < 300:
                    outputs[ref_id] = reply.body
                if reply.status >= 400 or (all_or_none and _has_record_failure(reply.body)):
                    failed_at = index if failed_at is None else failed_at
            if all_or_none and failed_at is not None:
                savepoint.rollback()
                results = [r if i == failed_at else self.sub_result(r["referenceId"], 400, HALTED)
                           for i, r in enumerate(results)]
        return results, failed_at is not None

    def _check_collection_count(self, subs: list[Any]) -> None:
        heavy = 0
        for sub in subs:
            url = str(sub.get("url", "")) if isinstance(sub, dict) else ""
            try:
                _, segments, _ = parse_sub_url(url)
            except ApiError:
                continue
            low = [s.lower() for s in segments[:2]]
            if low[:1] in (["query"], ["queryall"]) or low == ["composite", "sobjects"]:
                heavy += 1
        if heavy > MAX_COLLECTION_SUBREQUESTS:
            raise ApiError(400, "LIMIT_EXCEEDED", "A composite request can contain at most 5 sObject Collections or "
                           "query subrequests")

    @staticmethod
    def sub_result(ref_id: str, status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return {"body": body, "httpHeaders": headers or {}, "httpStatusCode": status, "referenceId": ref_id}

    def _run_sub(self, sub: Any, outputs: dict[str, Any], all_or_none: bool,
                 allowed: Callable[[Call], bool] | None = None, refs: bool = True) -> Reply:
        if not isinstance(sub, dict) or sub.get("method") not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            return Reply(400, [{"errorCode": "INVALID_FIELD", "message": "Each subrequest needs a valid method"}])
        try:
            url, body = str(sub.get("url", "")), sub.get("body")
            if refs:
                url, body = _substitute_text(url, outputs, url=True), _substitute(body, outputs)
            version, segments, query = parse_sub_url(url)
        except _MissingReference as missing:
            return Reply(400, [{"errorCode": "PROCESSING_HALTED", "message": str(missing)}])
        except ApiError as err:
            return Reply(err.status, err.body())
        headers = {str(k).lower(): str(v) for k, v in (sub.get("httpHeaders") or {}).items()}
        call = Call(sub["method"], version, segments, query, headers,
                    orjson.dumps(body) if body is not None else b"", in_composite=True,
                    force_all_or_none=all_or_none, parsed=body)
        if allowed is not None and not allowed(call):
            return Reply(400, [{"errorCode": "INVALID_INPUT",
                                "message": f"{call.method} {url} is not supported in a composite graph"}])
        self._count_subrequest(call)
        return self.router.dispatch(call)

    def _count_subrequest(self, call: Call) -> None:
        """Admin stats only (not the API budget: a composite is one call): what each subrequest was, so a
        test can tell a Composite of describes from one that writes."""
        try:
            route, _ = self.router.find(call.method, call.segments)
        except ApiError:
            return
        self.state.budget.subrequests[endpoint_name(call.method, route)] += 1

    # --- composite batch (each subrequest counts against the API budget, as documented) ----------------

    def batch(self, call: Call, _: dict[str, str]) -> Reply:
        body = call.json()
        subs = body.get("batchRequests") if isinstance(body, dict) else None
        if not isinstance(subs, list) or not subs or len(subs) > MAX_SUBREQUESTS:
            raise ApiError(400, "INVALID_BATCH_REQUEST", "batchRequests must hold 1 to 25 subrequests")
        halt = bool(body.get("haltOnError", False))
        results: list[dict[str, Any]] = []
        halted = False
        for sub in subs:
            if halted:
                results.append({"statusCode": 412, "result": [{"errorCode": "BATCH_PROCESSING_HALTED",
                                                              "message": "Batch processing halted per request"}]})
                continue
            reply = self._run_batch_sub(sub)
            results.append({"statusCode": reply.status, "result": reply.body})
            halted = halt and reply.status >= 400
        has_errors = any(r["statusCode"] >= 400 for r in results)
        return Reply(200, {"hasErrors": has_errors, "results": results})

    def _run_batch_sub(self, sub: Any) -> Reply:
        url = "/services/data/" + str(sub.get("url", "")).lstrip("/") if isinstance(sub, dict) else ""
        try:
            version, segments, query = parse_sub_url(url)
            self.state.budget.charge("POST /services/data/vXX.X/composite/batch (subrequest)")
        except ApiError as err:
            return Reply(err.status, err.body())
        rich = sub.get("richInput")
        call = Call(str(sub.get("method", "GET")), version, segments, query, {},
                    orjson.dumps(rich) if rich is not None else b"", in_composite=True)
        return self.router.dispatch(call)


class _MissingReference(Exception):
    pass


def _has_record_failure(body: Any) -> bool:
    return isinstance(body, list) and any(isinstance(r, dict) and r.get("success") is False for r in body)


def _lookup_reference(outputs: dict[str, Any], ref_id: str, path: str) -> Any:
    if ref_id not in outputs:
        raise _MissingReference(
            f"Invalid reference specified. No value for {ref_id}.{path} found in {ref_id}. Provided referenceId "
            f"('{ref_id}') must start with a letter or a number, and it can contain only letters, numbers and "
            "underscores ('_').")
    value = outputs[ref_id]
    for part in path.split("."):
        m = _INDEX.match(part)
        name, indexes = (m.group(1), m.group(2)) if m else (part, "")
        if name:
            value = value.get(name) if isinstance(value, dict) else None
        for idx in re.findall(r"\[(\d+)\]", indexes):
            value = value[int(idx)] if isinstance(value, list) and int(idx) < len(value) else None
    return value


def may_reference(raw: bytes) -> bool:
    """Whether a Composite request's JSON text can hold a reference (``@{ref.field}``): the marker, or any
    escaped character (an escape could spell one). Without either, no subrequest needs substituting."""
    return b"@{" in raw or b"\\u" in raw


def _substitute_text(text: str, outputs: dict[str, Any], url: bool = False) -> str:
    def replace(m: re.Match[str]) -> str:
        value = _lookup_reference(outputs, m.group(1), m.group(2))
        return "" if value is None else str(value)

    return _REF.sub(replace, text)


def _substitute(value: Any, outputs: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole:  # a whole-string reference keeps the referenced value's JSON type
            return _lookup_reference(outputs, whole.group(1), whole.group(2))
        return _substitute_text(value, outputs)
    if isinstance(value, dict):
        return {k: _substitute(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, outputs) for v in value]
    return value
