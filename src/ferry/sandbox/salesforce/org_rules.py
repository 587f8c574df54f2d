"""An org's configured rules, declared per object in the `--schema` file: validation rules, record types with
their picklist subsets, and duplicate rules. None exists unless the file declares it, so the built-in org
behaves exactly as before.

They run in the org's order of execution, after the system validation and the built-in before-save logic:
record type, then validation rules, then duplicate rules, then the save (unique checks) itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry.sandbox.salesforce.errors import RecordError
from ferry.sandbox.salesforce.formula import Context, FormulaError, Node, compile_formula
from ferry.sandbox.salesforce.ids import to18

MASTER_RECORD_TYPE_ID = "012000000000000AAA"
DUPLICATE_HEADER = "sforce-duplicate-rule-header"
_VALIDATION_KEYS = frozenset({"name", "formula", "message", "errorField", "active"})
_RECORD_TYPE_KEYS = frozenset({"developerName", "name", "active", "default", "picklists"})
_DUPLICATE_KEYS = frozenset({"name", "matchRule", "matchFields", "action", "message", "operations", "active"})


class RuleSpecError(ValueError):
    """A rule declaration the sandbox cannot use; schema.py adds the file and object to the message."""


@dataclass(slots=True)
class ValidationRule:
    name: str
    formula: str
    message: str
    error_field: str | None
    check: Node


@dataclass(slots=True)
class RecordType:
    record_type_id: str
    developer_name: str
    name: str
    active: bool
    default: bool
    picklists: dict[str, frozenset[str]]  # canonical field name -> the values this record type offers
    # The subset the API enforces: restricted picklists only (the API never enforces an unrestricted one).
    enforced: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(slots=True)
class DuplicateRule:
    name: str
    match_rule: str
    match_fields: list[str]  # canonical names; a duplicate has the same non-blank value in every one
    allow_save: bool  # action "allow" (with an alert): the API still refuses unless the header says allowSave
    message: str
    on_create: bool
    on_edit: bool


@dataclass(slots=True)
class ObjectRules:
    validation: list[ValidationRule] = field(default_factory=list)
    record_types: list[RecordType] = field(default_factory=list)
    duplicates: list[DuplicateRule] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.validation or self.record_types or self.duplicates)

    def default_record_type(self) -> RecordType | None:
        active = [rt for rt in self.record_types if rt.active]
        return next((rt for rt in active if rt.default), active[0] if active else None)


def _check_keys(spec: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise RuleSpecError(f"a {what} must be a mapping")
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise RuleSpecError(f"{what}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return spec


def parse_validation_rule(spec: Any, canonical: Callable[[str], str | None]) -> ValidationRule:
    spec = _check_keys(spec, _VALIDATION_KEYS, "validation rule")
    name, formula, message = spec.get("name"), spec.get("formula"), spec.get("message")
    if not all(isinstance(v, str) and v for v in (name, formula, message)):
        raise RuleSpecError("a validation rule needs 'name', 'formula' and 'message'")
    try:
        check = compile_formula(str(formula), lambda n: canonical(n) is not None)
    except FormulaError as exc:
        raise RuleSpecError(f"validation rule {name}: {exc}") from None
    error_field = spec.get("errorField")
    if error_field is not None and canonical(str(error_field)) is None:
        raise RuleSpecError(f"validation rule {name}: errorField {error_field} is not a field of the object")
    return ValidationRule(str(name), str(formula), str(message),
                          canonical(str(error_field)) if error_field else None, check)


def record_type_id(object_index: int, index: int) -> str:
    """A stable id per declared record type (012 prefix, as the org's), so a test can write it down."""
    return to18(f"0125{object_index:05d}{index:06d}"[:15])


def parse_record_type(spec: Any, rt_id: str, picklist_values: Mapping[str, frozenset[str] | None],
                      restricted: frozenset[str]) -> RecordType:
    """``picklist_values`` maps each picklist field's canonical name to its values (None: not a picklist)."""
    spec = _check_keys(spec, _RECORD_TYPE_KEYS, "record type")
    dev = spec.get("developerName")
    if not isinstance(dev, str) or not dev:
        raise RuleSpecError("a record type needs 'developerName'")
    picklists: dict[str, frozenset[str]] = {}
    raw = spec.get("picklists") or {}
    if not isinstance(raw, dict):
        raise RuleSpecError(f"record type {dev}: picklists maps a picklist field to a list of its values")
    lower = {name.lower(): name for name in picklist_values}
    for fname, values in raw.items():
        canonical = lower.get(str(fname).lower())
        allowed = picklist_values.get(canonical) if canonical else None
        if canonical is None or allowed is None:
            raise RuleSpecError(f"record type {dev}: {fname} is not a picklist field of the object")
        if not isinstance(values, list) or not all(str(v) in allowed for v in values):
            raise RuleSpecError(f"record type {dev}: the values of {fname} must be a list of its picklist values")
        picklists[canonical] = frozenset(str(v) for v in values)
    return RecordType(rt_id, dev, str(spec.get("name") or dev), bool(spec.get("active", True)),
                      bool(spec.get("default", False)), picklists,
                      {name: values for name, values in picklists.items() if name in restricted})


def parse_duplicate_rule(spec: Any, object_name: str, canonical: Callable[[str], str | None]) -> DuplicateRule:
    spec = _check_keys(spec, _DUPLICATE_KEYS, "duplicate rule")
    name, fields = spec.get("name"), spec.get("matchFields")
    if not isinstance(name, str) or not isinstance(fields, list) or not fields:
        raise RuleSpecError("a duplicate rule needs 'name' and 'matchFields' (a list of fields)")
    names = [canonical(str(f)) for f in fields]
    if None in names:
        raise RuleSpecError(f"duplicate rule {name}: matchFields must be fields of the object")
    action = str(spec.get("action", "block")).lower()
    if action not in ("block", "allow"):
        raise RuleSpecError(f"duplicate rule {name}: action is 'block' or 'allow'")
    operations = [str(op).lower() for op in spec.get("operations", ["create", "edit"])]
    if not set(operations) <= {"create", "edit"}:
        raise RuleSpecError(f"duplicate rule {name}: operations are 'create' and/or 'edit'")
    return DuplicateRule(name, str(spec.get("matchRule") or f"{object_name}_Match_Rule"),
                         [n for n in names if n is not None], action == "allow",
                         str(spec.get("message") or "Use one of these records?"),
                         "create" in operations, "edit" in operations)


# --- enforcement --------------------------------------------------------------------------------------


def duplicate_header(headers: Mapping[str, str]) -> tuple[bool, bool]:
    """(allowSave, includeRecordDetails) of `Sforce-Duplicate-Rule-Header` (API 52.0+; every option defaults to
    false). The guide writes it `allowSave=true; includeRecordDetails=true; runAsCurrentUser=true`; commas are
    accepted too."""
    raw = headers.get(DUPLICATE_HEADER, "")
    options = {k.strip().lower(): v.strip().lower()
               for k, _, v in (part.partition("=") for part in re.split(r"[;,]", raw)) if v}
    return options.get("allowsave") == "true", options.get("includerecorddetails") == "true"


def apply_record_type(rules: ObjectRules, record: dict[str, Any], changes: Mapping[str, Any],
                      labels: Mapping[str, str], creating: bool) -> None:
    """Default the record type on insert, refuse an unknown one, and hold restricted picklists to its values."""
    if not rules.record_types:
        return
    if creating and record.get("RecordTypeId") is None:
        default = rules.default_record_type()
        record["RecordTypeId"] = default.record_type_id if default else None
    rt_id = record.get("RecordTypeId")
    chosen = next((rt for rt in rules.record_types if rt.record_type_id == rt_id), None)
    if "RecordTypeId" in changes and rt_id is not None and rt_id != MASTER_RECORD_TYPE_ID and \
            (chosen is None or not chosen.active):
        raw = changes["RecordTypeId"]
        raise RecordError("INVALID_CROSS_REFERENCE_KEY",
                          f"Record Type ID: this ID value isn't valid for the user: {raw}", ["RecordTypeId"])
    if chosen is None:
        return
    retyped = "RecordTypeId" in changes
    for fname, allowed in chosen.enforced.items():
        value = record.get(fname)
        if value is None or value in allowed or not (retyped or fname in changes):
            continue
        raise RecordError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                          f"{labels.get(fname, fname)}: bad value for restricted picklist field: {value}", [fname])


def run_validation_rules(rules: ObjectRules, record: dict[str, Any], old: dict[str, Any] | None,
                         canonical: Callable[[str], str]) -> None:
    context = Context(record, old, canonical)
    for rule in rules.validation:
        try:
            failed = bool(rule.check(context))
        except FormulaError:
            failed = False  # a value the formula cannot use (text in VALUE()): the org reports it; we let it pass
        if failed:
            raise RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message,
                              [rule.error_field] if rule.error_field else [])


def find_duplicates(rules: ObjectRules, object_name: str, record: dict[str, Any], creating: bool,
                    header: tuple[bool, bool], candidates: Callable[[], list[dict[str, Any]]], version: str) -> None:
    """Raise DUPLICATES_DETECTED (with the org's duplicateResult) when an active rule finds matching records."""
    for rule in rules.duplicates:
        if not (rule.on_create if creating else rule.on_edit):
            continue
        allow_save_header, include_details = header
        if rule.allow_save and allow_save_header:
            continue
        keys = [_fold(record.get(f)) for f in rule.match_fields]
        if any(k is None for k in keys):
            continue
        matches = [other for other in candidates() if other["Id"] != record.get("Id")
                   and [_fold(other.get(f)) for f in rule.match_fields] == keys]
        if matches:
            raise RecordError("DUPLICATES_DETECTED", rule.message, [],
                              _duplicate_result(rule, object_name, matches, version, include_details))


def _fold(value: Any) -> Any:
    if value is None or value == "":
        return None
    return value.strip().lower() if isinstance(value, str) else value


def _duplicate_result(rule: DuplicateRule, object_name: str, matches: list[dict[str, Any]], version: str,
                      include_details: bool) -> dict[str, Any]:
    def record(match: dict[str, Any]) -> dict[str, Any]:
        # includeRecordDetails=true: every field of the matching record; otherwise its Id only.
        out: dict[str, Any] = {"attributes": {"type": object_name,
                                              "url": f"/services/data/v{version}/sobjects/{object_name}/{match['Id']}"}}
        out.update(match if include_details else {"Id": match["Id"]})
        return out

    records = [{"additionalInformation": [], "fieldDiffs": [], "matchConfidence": 100.0, "record": record(m)}
               for m in matches]
    return {"allowSave": rule.allow_save, "duplicateRule": rule.name, "duplicateRuleEntityType": object_name,
            "errorMessage": rule.message,
            "matchResults": [{"entityType": object_name, "errors": [], "matchEngine": "ExactMatchEngine",
                              "matchRecords": records, "rule": rule.match_rule, "size": len(records),
                              "success": True}]}

