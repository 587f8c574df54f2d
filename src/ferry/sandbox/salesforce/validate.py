"""Field-level validation the way the org does it: type coercion, lengths, picklists, emails.

A coercer turns an incoming value (a JSON value, or a CSV string from Bulk) into
the stored form, or raises a RecordError with the org's status code, message and
fields. Coercers are built once per field and cached, so the Bulk hot loop is a
dict lookup plus one call per cell.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ferry.sandbox.salesforce.errors import ApiError, RecordError, no_such_column
from ferry.sandbox.salesforce.ids import normalize_id
from ferry.sandbox.salesforce.schema import STRING_TYPES, FieldSchema, Schema, SObjectSchema

Coercer = Callable[[Any], Any]

# Close to the org's own check: local@domain.tld, no spaces, one @.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def wrong_type(f: FieldSchema, value: Any) -> RecordError:
    return RecordError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.label}: value not of required type: {value}", [f.name])


def format_datetime(value: dt.datetime) -> str:
    """The org's datetime wire form: UTC, milliseconds, `+0000`."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _as_text(f: FieldSchema, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise wrong_type(f, value)


def _string_coercer(f: FieldSchema) -> Coercer:
    max_len = f.length
    is_email = f.type == "email"
    allowed = {p.value for p in f.picklist if p.active} if f.restricted_picklist else None

    def coerce(value: Any) -> Any:
        text = value if value.__class__ is str else _as_text(f, value)
        if not text:
            return None  # the org stores an empty string as null
        if max_len and len(text) > max_len:
            raise RecordError(
                "STRING_TOO_LONG", f"{f.label}: data value too large: {text} (max length={max_len})", [f.name]
            )
        if is_email and not _EMAIL.match(text):
            raise RecordError("INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {text}", [f.name])
        if allowed is not None and text not in allowed:
            raise RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{f.label}: bad value for restricted picklist field: {text}",
                [f.name],
            )
        return text

    return coerce


def _boolean_coercer(f: FieldSchema) -> Coercer:
    def coerce(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise wrong_type(f, value)

    return coerce


def _to_number(f: FieldSchema, value: Any) -> float | int:
    if isinstance(value, bool):
        raise wrong_type(f, value)
    if isinstance(value, int | float):
        number: float | int = value
    elif isinstance(value, str):
        try:
            number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise wrong_type(f, value) from None
    else:
        raise wrong_type(f, value)
    if isinstance(number, float) and not math.isfinite(number):
        raise wrong_type(f, value)
    return number


def _out_of_range(f: FieldSchema, value: Any) -> RecordError:
    return RecordError(
        "NUMBER_OUTSIDE_VALID_RANGE", f"{f.label}: value outside of valid range on numeric field: {value}", [f.name]
    )


def _int_coercer(f: FieldSchema) -> Coercer:
    limit = 10 ** (f.digits or 9)

    def coerce(value: Any) -> Any:
        number = _to_number(f, value)
        if isinstance(number, float):
            if not number.is_integer():
                raise wrong_type(f, value)
            number = int(number)
        if abs(number) >= limit:
            raise _out_of_range(f, value)
        return number

    return coerce


def _decimal_coercer(f: FieldSchema) -> Coercer:
    scale = f.scale
    limit = 10 ** max((f.precision or 18) - scale, 1)

    def coerce(value: Any) -> Any:
        number = round(float(_to_number(f, value)), scale)
        if abs(number) >= limit:
            raise _out_of_range(f, value)
        return number

    return coerce


def _date_coercer(f: FieldSchema) -> Coercer:
    def coerce(value: Any) -> Any:
        if not isinstance(value, str):
            raise wrong_type(f, value)
        text = value.strip()
        if not _DATE.match(text):
            try:
                return parse_datetime(text).date().isoformat()  # REST accepts a datetime for a date
            except ValueError:
                raise wrong_type(f, value) from None
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            raise wrong_type(f, value) from None

    return coerce


def _datetime_coercer(f: FieldSchema) -> Coercer:
    def coerce(value: Any) -> Any:
        if not isinstance(value, str):
            raise wrong_type(f, value)
        try:
            return format_datetime(parse_datetime(value))
        except ValueError:
            raise wrong_type(f, value) from None

    return coerce


def _reference_coercer(f: FieldSchema, schema: Schema) -> Coercer:
    known_targets = [schema.get(t) for t in f.reference_to]
    prefixes = {t.key_prefix for t in known_targets if t is not None}
    check_prefix = bool(prefixes) and len(prefixes) == len(f.reference_to)

    def coerce(value: Any) -> Any:
        text = _as_text(f, value)
        if text == "":
            return None
        record_id = normalize_id(text)
        if record_id is None:
            raise RecordError("MALFORMED_ID", f"{f.label}: id value of incorrect type: {text}", [f.name])
        if check_prefix and record_id[:3] not in prefixes:
            raise RecordError("FIELD_INTEGRITY_EXCEPTION", f"{f.label}: id value of incorrect type: {text}", [f.name])
        return record_id

    return coerce


def _time_coercer(f: FieldSchema) -> Coercer:
    def coerce(value: Any) -> Any:
        if not isinstance(value, str):
            raise wrong_type(f, value)
        try:
            t = dt.time.fromisoformat(value.rstrip("Z"))
        except ValueError:
            raise wrong_type(f, value) from None
        return t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    return coerce


def _build_coercer(f: FieldSchema, schema: Schema) -> Coercer:
    if f.type in STRING_TYPES:
        return _string_coercer(f)
    if f.type == "boolean":
        return _boolean_coercer(f)
    if f.type == "int":
        return _int_coercer(f)
    if f.type in ("double", "currency", "percent"):
        return _decimal_coercer(f)
    if f.type == "date":
        return _date_coercer(f)
    if f.type == "datetime":
        return _datetime_coercer(f)
    if f.type == "time":
        return _time_coercer(f)
    return _reference_coercer(f, schema)  # reference and id


class Coercers:
    """One coercer per field of one schema, built on first use."""

    def __init__(self, schema: Schema) -> None:
        self._schema = schema

    def get(self, f: FieldSchema) -> Coercer:
        fn: Coercer | None = f.coercer
        if fn is None:
            fn = f.coercer = _build_coercer(f, self._schema)
        return fn


# --- JSON deserialization (REST, Collections, Composite) ---------------------------------------------
# The org deserializes a JSON body into typed fields before it saves anything. A value of the wrong
# JSON type (an object for a date, "soon" for a date, "abc" for a number) fails the whole request with
# 400 JSON_PARSER_ERROR; only values that deserialize reach the field checks above. Bulk CSV has no such
# step, so there the same values give INVALID_TYPE_ON_FIELD_IN_RECORD per row.

# A date alone is read as midnight UTC (lenient: not confirmed either way); a space instead of the T is not.
_JSON_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")
_JSON_NUMBER = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")
# The type names the org's deserializer reports ("Cannot deserialize instance of double ...").
_JSON_TYPE_NAMES = {"currency": "double", "percent": "double", "id": "string", "reference": "string"}


def _json_date_ok(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _json_datetime_ok(value: Any) -> bool:
    if not isinstance(value, str) or not _JSON_DATETIME.match(value):
        return False
    try:
        parse_datetime(value)
    except ValueError:
        return False
    return True


def _json_number_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (isinstance(value, str) and bool(_JSON_NUMBER.match(value)))


def _json_boolean_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, str):
        return value.lower() in ("true", "false")
    return isinstance(value, int) and value in (0, 1)


def _json_scalar_ok(value: Any) -> bool:
    return not isinstance(value, dict | list)


_JSON_CHECKS: dict[str, Callable[[Any], bool]] = {
    "date": _json_date_ok, "datetime": _json_datetime_ok, "boolean": _json_boolean_ok,
    "int": _json_number_ok, "double": _json_number_ok, "currency": _json_number_ok, "percent": _json_number_ok,
}


def _token(value: Any) -> tuple[str, str]:
    """Jackson's token name for a JSON value, and how its message shows the value."""
    if isinstance(value, dict):
        return "START_OBJECT", "{"
    if isinstance(value, bool):
        return ("VALUE_TRUE", "true") if value else ("VALUE_FALSE", "false")
    if isinstance(value, int):
        return "VALUE_NUMBER_INT", str(value)
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT", repr(value)
    return "VALUE_STRING", str(value)


def _position(raw: bytes | None, key: str, value: Any) -> tuple[int, int]:
    """Best effort [line, column] of the value in the request body (the org reports where parsing stopped)."""
    if not raw:
        return 1, 1
    text = raw.decode("utf-8", errors="replace")
    rendered = orjson.dumps(value).decode() if not isinstance(value, dict | list) else ""
    m = re.search(re.escape(f'"{key}"') + r"\s*:\s*" + re.escape(rendered), text) if rendered else None
    m = m or re.search(re.escape(f'"{key}"') + r"\s*:\s*", text)
    if m is None:
        return 1, 1
    end = m.end()
    line = text.count("\n", 0, end) + 1
    return line, end - (text.rfind("\n", 0, end) + 1) + 1


def json_type_error(f: FieldSchema, value: Any, raw: bytes | None) -> ApiError:
    line, column = _position(raw, f.name, value)
    type_name = _JSON_TYPE_NAMES.get(f.type, f.type)
    if isinstance(value, list):
        return ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {type_name} from START_ARRAY "
                        f"value [line:{line}, column:{column}]")
    token, shown = _token(value)
    return ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {type_name} from {token} value "
                    f"{shown} or request may be missing a required field at [line:{line}, column:{column}]")


def check_json_types(obj: SObjectSchema, body: dict[str, Any], raw: bytes | None = None) -> None:
    """Raise the org's JSON_PARSER_ERROR for the first value that cannot deserialize into its field's type.

    Keys that are not fields (relationship references, unknown names) are left to parse_body.
    """
    for key, value in body.items():
        if value is None or key == "attributes":
            continue
        f = obj.by_lower.get(key.lower())
        if f is None:
            continue
        check = _JSON_CHECKS.get(f.type, _json_scalar_ok)
        if not check(value):
            raise json_type_error(f, value, raw)


# --- request bodies ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ParentRef:
    """`"Account": {"Shopify_Customer_Id__c": "123"}` - set a lookup by the parent's external id."""

    field: FieldSchema  # the lookup field on the child (AccountId)
    parent: SObjectSchema
    key_field: FieldSchema  # the parent's external id / idLookup field
    value: Any


@dataclass(slots=True)
class ParsedBody:
    values: list[tuple[FieldSchema, Any]] = field(default_factory=list)
    refs: list[ParentRef] = field(default_factory=list)
    record_id: str | None = None  # an "Id" given in the body (collections update)
    id_given: bool = False
    duplicate_header: tuple[bool, bool] = (False, False)  # Sforce-Duplicate-Rule-Header allowSave, includeRecordDetails
    api_version: str = "66.0"  # for the record URLs of a duplicateResult


def resolve_parent_ref(schema: Schema, rel_field: FieldSchema, parent_name: str | None, key_name: str,
                       value: Any) -> ParentRef:
    target = schema.get(parent_name or (rel_field.reference_to[0] if rel_field.reference_to else ""))
    if target is None or (parent_name and target.name not in rel_field.reference_to):
        raise RecordError("INVALID_FIELD", f"Invalid type for foreign key: {parent_name}", [rel_field.name])
    key_field = target.field(key_name)
    if key_field is None:
        raise no_such_column(key_name, target.name)
    if not key_field.id_lookup:
        raise RecordError(
            "INVALID_FIELD",
            f"Field name provided, {key_field.name} is not an External ID or indexed field for {target.name}",
            [],
        )
    return ParentRef(rel_field, target, key_field, value)


def _parse_reference(schema: Schema, obj: SObjectSchema, rel_field: FieldSchema, key: str, nested: Any) -> ParentRef:
    if not isinstance(nested, dict):
        raise RecordError("INVALID_FIELD", f"Cannot deserialize relationship {key}: expected an object", [])
    attrs = nested.get("attributes")
    parent_name = attrs.get("type") if isinstance(attrs, dict) else None
    keys = [k for k in nested if k != "attributes"]
    if len(keys) != 1:
        raise RecordError(
            "INVALID_FIELD", f"The relationship {key} must specify exactly one external id field", [rel_field.name]
        )
    return resolve_parent_ref(schema, rel_field, parent_name, keys[0], nested[keys[0]])


def parse_body(schema: Schema, obj: SObjectSchema, body: dict[str, Any]) -> ParsedBody:
    """Map JSON keys to fields and relationship references; unknown keys are INVALID_FIELD."""
    parsed = ParsedBody()
    for key, value in body.items():
        if key == "attributes":
            continue
        f = obj.field(key)
        if f is not None:
            if f.name == "Id":
                parsed.id_given = True
                parsed.record_id = value if isinstance(value, str) else None
                continue
            parsed.values.append((f, value))
            continue
        rel = obj.relationship(key)
        if rel is not None:
            parsed.refs.append(_parse_reference(schema, obj, rel, key, value))
            continue
        raise no_such_column(key, obj.name)
    return parsed
