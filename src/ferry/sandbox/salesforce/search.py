"""The Search resources: `GET search/?q=<SOSL>` and `parameterizedSearch` (GET with URL parameters, POST with a
JSON body). Both answer `{"searchRecords": [...]}`, records carrying `attributes` {type, url}.

Which fields a scope searches: NAME the name fields (with first/last name and the fields the reference lists for
some standard objects, such as Lead.Company and Account.Website), EMAIL the email fields, PHONE the phone
fields (also matched digit for digit, so 4155550100 finds "(415) 555-0100"), ALL and SIDEBAR every text, text
area, email, phone and URL field. Ids, picklists, numbers, dates and booleans are not in the search index.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from ferry.sandbox.salesforce import soql as ast
from ferry.sandbox.salesforce.errors import ApiError
from ferry.sandbox.salesforce.routing import Call, Reply, Router
from ferry.sandbox.salesforce.schema import FieldSchema, SObjectSchema
from ferry.sandbox.salesforce.soql import Parser, SoqlError
from ferry.sandbox.salesforce.sosl import (
    MAX_LIMIT,
    SCOPES,
    Returning,
    Search,
    SearchExpr,
    Term,
    parse_search_text,
    parse_sosl,
    words_of,
)
from ferry.sandbox.salesforce.state import OrgState
from ferry.sandbox.salesforce.store import Record

_ALL_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "combobox"})
_NAME_PARTS = frozenset({"FirstName", "LastName"})
# Fields NAME FIELDS also searches on these standard objects ("IN SearchGroup" in the SOQL and SOSL reference).
_MORE_NAME_FIELDS = {
    "Account": {"Website", "Site", "NameLocal"}, "Asset": {"SerialNumber"},
    "Case": {"SuppliedName", "SuppliedCompany", "Subject"},
    "Contact": {"AssistantName", "FirstNameLocal", "LastNameLocal"},
    "Lead": {"Company", "CompanyLocal", "FirstNameLocal", "LastNameLocal"}, "User": {"CommunityNickname"},
}
_UNSEARCHED = frozenset({"Profile"})  # setup objects the org's search index does not hold


def searched_fields(obj: SObjectSchema, scope: str) -> list[FieldSchema]:
    fields = obj.fields.values()
    if scope == "NAME":
        more = _MORE_NAME_FIELDS.get(obj.name, set())
        return [f for f in fields if f.name_field or f.name in _NAME_PARTS or f.name in more]
    if scope == "EMAIL":
        return [f for f in fields if f.type == "email"]
    if scope == "PHONE":
        return [f for f in fields if f.type == "phone"]
    return [f for f in fields if f.type in _ALL_TYPES]


class _Document:
    """One record as the index sees it: the word list of each searched field (and phone digits)."""

    def __init__(self, record: Record, fields: list[FieldSchema]) -> None:
        self.texts: list[list[str]] = []
        self.digits: list[str] = []
        for f in fields:
            value = record.get(f.name)
            if not isinstance(value, str) or not value:
                continue
            self.texts.append(words_of(value))
            if f.type == "phone":
                self.digits.append(re.sub(r"\D", "", value))

    def has(self, term: Term) -> bool:
        if any(_phrase_in(term.patterns, words) for words in self.texts):
            return True
        digits = re.sub(r"\D", "", term.text)
        return len(digits) >= 2 and digits == re.sub(r"[\s()+\-.]", "", term.text) and any(
            d.endswith(digits) for d in self.digits)

    def matches(self, expr: SearchExpr) -> bool:
        if isinstance(expr, Term):
            return self.has(expr)
        if expr.op == "NOT":
            return not self.matches(expr.items[0])
        if expr.op == "AND":
            return all(self.matches(e) for e in expr.items)
        return any(self.matches(e) for e in expr.items)


def _phrase_in(patterns: list[re.Pattern[str]], words: list[str]) -> bool:
    n = len(patterns)
    if n == 0:
        return False
    return any(all(p.match(w) for p, w in zip(patterns, words[i:i + n], strict=True))
               for i in range(len(words) - n + 1))


class SearchApi:
    def __init__(self, state: OrgState) -> None:
        self.state = state

    def register(self, router: Router) -> None:
        router.add("GET", "search", self.search)
        router.add("GET", "parameterizedSearch", self.parameterized_get)
        router.add("POST", "parameterizedSearch", self.parameterized_post)

    # --- resources ------------------------------------------------------------------------------------

    def search(self, call: Call, _: dict[str, str]) -> Reply:
        sosl = call.query.get("q")
        if not sosl:
            raise ApiError(400, "MALFORMED_SEARCH", "A search string has to be specified")
        return Reply(200, {"searchRecords": self.run(parse_sosl(sosl), call.version)})

    def parameterized_get(self, call: Call, _: dict[str, str]) -> Reply:
        params = _multi_params(call)
        first = {k: v[-1] for k, v in params.items()}
        specs = []
        global_fields = _split(first.get("fields"))
        for name in params.get("sobject", []):
            specs.append({"name": name, "fields": _split(first.get(f"{name}.fields")) or global_fields,
                          "where": first.get(f"{name}.where"), "limit": first.get(f"{name}.limit"),
                          "orderBy": first.get(f"{name}.orderBy")})
        return self._parameterized(call, first.get("q"), first, specs)

    def parameterized_post(self, call: Call, _: dict[str, str]) -> Reply:
        body = call.json()
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of search request from a "
                           "non-object value")
        global_fields = body.get("fields") or []
        specs = [{**spec, "fields": spec.get("fields") or global_fields}
                 for spec in body.get("sobjects") or [] if isinstance(spec, dict)]
        return self._parameterized(call, body.get("q"), body, specs)

    # --- parameterized search -------------------------------------------------------------------------

    def _parameterized(self, call: Call, q: Any, options: dict[str, Any], specs: list[dict[str, Any]]) -> Reply:
        if not isinstance(q, str) or not q.strip():
            raise ApiError(400, "MALFORMED_SEARCH", "A search string has to be specified")
        scope = str(options.get("in") or "ALL").upper()
        if scope not in SCOPES:
            raise ApiError(400, "INVALID_SEARCH", f"Invalid in value: {options.get('in')}")
        search = Search(q, parse_search_text(q), scope, limit=_int_option(options, "overallLimit", MAX_LIMIT))
        default_limit = options.get("defaultLimit")
        for spec in specs:
            limit = spec.get("limit") if spec.get("limit") is not None else default_limit
            search.returning.append(self._returning(spec, limit, options.get("offset")))
        return Reply(200, {"searchRecords": self.run(search, call.version)})

    def _returning(self, spec: dict[str, Any], limit: Any, offset: Any) -> Returning:
        name = str(spec.get("name", ""))
        fields = [str(f) for f in spec.get("fields") or []] or ["Id"]
        query = ast.Query([ast.FieldPath(f.strip().split("."), 0) for f in fields], name, 0, soql=name)
        if spec.get("where"):
            query.where = _parse_part(str(spec["where"]), lambda p: p.condition())
        if spec.get("orderBy"):
            text = re.sub(r"\bnulls_(first|last)\b", r"NULLS \1", str(spec["orderBy"]), flags=re.IGNORECASE)
            query.order_by = _parse_part(text, lambda p: p.order_list())
        query.limit = _as_int(limit, "limit")
        query.offset = _as_int(offset, "offset")
        return Returning(query)

    # --- run ------------------------------------------------------------------------------------------

    def run(self, search: Search, version: str) -> list[dict[str, Any]]:
        """Every RETURNING object's matches in turn (all searchable objects, Ids only, without RETURNING)."""
        returning = search.returning or [
            Returning(ast.Query([ast.FieldPath(["Id"], 0)], name, 0, soql=search.sosl))
            for name in self.state.schema.objects if name not in _UNSEARCHED]
        executor = self.state.executor
        out: list[dict[str, Any]] = []
        for spec in returning:
            plan = executor.plan(spec.query, children=False)
            if plan.grouped is not None or plan.count_only:
                raise ApiError(400, "MALFORMED_SEARCH", "Aggregate functions are not supported in a search")
            fields = searched_fields(plan.sobject, search.scope)
            table = self.state.store.table(plan.sobject.name)
            hits = [r for r in table.rows.values() if _Document(r, fields).matches(search.expr)]
            for record in executor.select_from(plan, hits):
                if len(out) >= search.limit:
                    return out
                out.append(executor.project(plan, record, version))
        return out


def _multi_params(call: Call) -> dict[str, list[str]]:
    """URL parameters with repeats kept (sobject=Account&sobject=Contact)."""
    if not call.raw_query:
        return {k: [v] for k, v in call.query.items()}
    out: dict[str, list[str]] = {}
    for key, value in parse_qsl(call.raw_query, keep_blank_values=True):
        out.setdefault(key, []).append(value)
    return out


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _as_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "INVALID_SEARCH", f"Invalid {name} value: {value}") from None
    if number < 0:
        raise ApiError(400, "INVALID_SEARCH", f"Invalid {name} value: {value}")
    return number


def _int_option(options: dict[str, Any], name: str, default: int) -> int:
    value = _as_int(options.get(name), name)
    return default if value is None else min(value, MAX_LIMIT)


T = TypeVar("T")


def _parse_part(text: str, read: Callable[[Parser], T]) -> T:
    """A where or orderBy parameter, read with the SOQL parser; a syntax error is the search's MALFORMED_SEARCH."""
    try:
        parser = Parser(text)
        result = read(parser)
        if parser.tok.kind != "EOF":
            raise parser.unexpected()
    except SoqlError as err:
        raise ApiError(400, "MALFORMED_SEARCH", err.message) from None
    return result

