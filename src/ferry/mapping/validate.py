"""Validate mapped records against the target's describe before any API call is spent on them.

One checker per mapped field is built once from the ``FieldSchema`` and the
field's mapping options; validating a record is then a loop of plain calls and
only the failure path raises (an internal exception, caught per field). Checks
run in the order targets apply them, and a field reports only its
first problem:

1. the field exists (``INVALID_FIELD``) and is writable by an upsert
   (``INVALID_FIELD_FOR_INSERT_UPDATE`` when neither createable nor updateable);
2. a required field has a value (``REQUIRED_FIELD_MISSING``);
3. the value converts to the field's type (``INVALID_TYPE_ON_FIELD_IN_RECORD``,
   ``INVALID_EMAIL_ADDRESS``, ``NUMBER_OUTSIDE_VALID_RANGE``);
4. text fits the field's length, counted in the target dialect's unit
   (``ferry.core.dialect``: e.g. UTF-16 code units, where an emoji is 2)
   (``STRING_TOO_LONG``, or truncated with ``on_too_long: truncate``);
5. a restricted picklist gets one of its values
   (``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``).

Messages name the object, the record key, the field and why, and show at most a
short excerpt of the value (or just its length), never a whole payload.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from ferry.core.dialect import Dialect, PlainDialect
from ferry.core.records import MappedRecord
from ferry.core.schema import FieldSchema, ObjectSchema
from ferry.errors import RecordError
from ferry.mapping.spec import FieldExpr, ObjectMapping, RefExpr, payload_key
from ferry.model.values import MISSING_KEY_PREFIX

INVALID_FIELD = "INVALID_FIELD"
INVALID_FIELD_FOR_INSERT_UPDATE = "INVALID_FIELD_FOR_INSERT_UPDATE"
REQUIRED_FIELD_MISSING = "REQUIRED_FIELD_MISSING"
INVALID_TYPE = "INVALID_TYPE_ON_FIELD_IN_RECORD"
INVALID_EMAIL_ADDRESS = "INVALID_EMAIL_ADDRESS"
NUMBER_OUTSIDE_VALID_RANGE = "NUMBER_OUTSIDE_VALID_RANGE"
STRING_TOO_LONG = "STRING_TOO_LONG"
INVALID_PICKLIST = "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"

TEXT_TYPES = frozenset(
    {
        "string",
        "textarea",
        "phone",
        "url",
        "picklist",
        "multipicklist",
        "combobox",
        "email",
        "id",
        "reference",
        "encryptedstring",
    }
)
NUMBER_TYPES = frozenset({"double", "currency", "percent"})
INT_TYPES = frozenset({"int", "long"})

_PLAIN = PlainDialect()
_OMIT: Any = object()  # checker result meaning "leave the key out of the payload"
Checker = Callable[[Any], Any]


class _Invalid(Exception):
    """Raised by a checker; only ever seen on the failure path."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


# -- excerpts for messages -------------------------------------------------------------


def excerpt(value: Any, limit: int = 40) -> str:
    """A short, quoted rendering of a value for an error message (long values are cut and sized)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return f'"{value}"'
        return f'"{value[: limit - 10]}…" ({len(value)} characters)'
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 10]}… ({type(value).__name__})"


# -- conversions -----------------------------------------------------------------------


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a usable value for a text field")
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return ", ".join(value)  # tags and the like, as people write them
    raise _Invalid(INVALID_TYPE, f"{excerpt(value)} ({type(value).__name__}) cannot be written to a text field")


@functools.cache
def multipicklist_converter(separator: str) -> Checker:
    """A list of values joined with the dialect's separator (one converter per separator, so it is shared)."""

    def to_multipicklist(value: Any) -> str:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return separator.join(value)
        return to_text(value)

    return to_multipicklist


# Whitespace, quotes, brackets and commas are where real-world typos live ("bob@example,com").
_EMAIL_TYPOS = frozenset(' \t\r\n"(),:;<>[]\\')


def is_email(value: str) -> bool:
    """An RFC-ish address check, close to what the strictest targets accept, without a regex."""
    if len(value) > 254 or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    if not local or len(local) > 64 or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    if "." not in domain or ".." in domain or domain[0] in ".-" or domain[-1] in ".-":
        return False
    if not _EMAIL_TYPOS.isdisjoint(value):
        return False
    return len(domain.rsplit(".", 1)[1]) >= 2


def to_email(value: Any) -> str:
    text = to_text(value).strip()
    if not is_email(text):
        raise _Invalid(INVALID_EMAIL_ADDRESS, f"{excerpt(text)} is not a valid email address")
    return text


def number_converter(fs: FieldSchema) -> Checker:
    # Integer digits allowed by the field: precision counts all digits, scale the decimals.
    int_digits = fs.precision - fs.scale if fs.precision > 0 else 0
    limit = 10.0**int_digits if int_digits > 0 else math.inf

    def to_number(value: Any) -> float:
        if value.__class__ is str:
            # Money text ("199.00") is the common case: float() takes it as is (surrounding blanks too).
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number) and abs(number) < limit:
                return number
        if isinstance(value, bool):
            raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is a boolean, not a number ({fs.type})")
        if isinstance(value, int | float | Decimal):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip().replace(",", "")) if value.strip() else math.nan
            except ValueError:
                raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a number ({fs.type})") from None
        else:
            raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a number ({fs.type})")
        if not math.isfinite(number):
            raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a finite number ({fs.type})")
        if abs(number) >= limit:
            raise _Invalid(
                NUMBER_OUTSIDE_VALID_RANGE,
                f"{excerpt(value)} has more than {int_digits} digits before the decimal point "
                f"(precision {fs.precision}, scale {fs.scale})",
            )
        return number

    return to_number


_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # `int` fields (ferry.core.schema) are 32-bit


def to_int(value: Any) -> int:
    number = _integral(value)
    if not _INT_MIN <= number <= _INT_MAX:
        raise _Invalid(NUMBER_OUTSIDE_VALID_RANGE, f"{excerpt(value)} does not fit a 32-bit integer field")
    return number


def _integral(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is a boolean, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        stripped = value.strip()
        try:
            return int(stripped)
        except ValueError:
            pass
        try:
            as_float = float(stripped)  # "2.0" from a spreadsheet-ish source
        except ValueError:
            as_float = math.nan
        if as_float.is_integer():
            return int(as_float)
    raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not an integer")


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    elif isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a boolean (true/false)")


def to_date(value: Any) -> str:
    """``YYYY-MM-DD``; a datetime string is cut to its date part (as written, in its own offset)."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        head = value.strip()[:10]
        try:
            return date.fromisoformat(head).isoformat()
        except ValueError:
            pass
    raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a date (YYYY-MM-DD)")


def to_datetime(value: Any) -> str:
    """ISO UTC with milliseconds, ``YYYY-MM-DDTHH:MM:SS.000Z``, the form the targets return."""
    if isinstance(value, str):
        v = value.strip()
        # Fast path: ferry's canonical timestamps are already UTC, fixed width.
        if len(v) == 27 and v[10] == "T" and v[19] == "." and v[26] == "Z":
            return v[:23] + "Z"
        try:
            parsed = datetime.fromisoformat(v)
        except ValueError:
            raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a date-time (ISO 8601)") from None
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raise _Invalid(INVALID_TYPE, f"{excerpt(value)} is not a date-time (ISO 8601)")
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed.isoformat(timespec="milliseconds")[:-6] + "Z"


def _passthrough(value: Any) -> Any:
    return value


def converter_for(fs: FieldSchema, multi_value_separator: str) -> Checker:
    if fs.type == "email":
        return to_email
    if fs.type == "multipicklist":
        return multipicklist_converter(multi_value_separator)
    if fs.type in TEXT_TYPES:
        return to_text
    if fs.type in NUMBER_TYPES:
        return number_converter(fs)
    if fs.type in INT_TYPES:
        return to_int
    if fs.type == "boolean":
        return to_bool
    if fs.type == "date":
        return to_date
    if fs.type == "datetime":
        return to_datetime
    return _passthrough  # base64, time, location, anyType: the target judges


# -- checkers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldOptions:
    """What the mapping says about a field that changes validation."""

    truncate: bool = False
    is_external_id: bool = False
    is_reference: bool = False
    payload_key: str = ""


def _always(code: str, reason: str) -> Checker:
    def fail(_value: Any) -> Any:
        raise _Invalid(code, reason)

    return fail


@dataclass(frozen=True, slots=True)
class FastPath:
    """What a field's checker would answer without work, so the validator can skip the call.

    ``text_limit``: a ``str`` of 1..text_limit characters passes unchanged (-1: never);
    ``none_passes``: None passes as None (not required, not omitted when null);
    ``key_limit``: the external id: a ``str`` of 1..key_limit characters that is not a missing-id key
    passes unchanged (-1: never);
    ``convert``: for a ``str`` of 1..convert_limit characters the checker's answer (or failure) is this
    converter's (text converters never lengthen a string, so the length check cannot fail);
    ``convert_scalars``: for an int, float or bool (exact class) the checker's answer (or failure) is
    ``convert``'s too: such a value is neither None nor "", and the field has no length to check.
    """

    text_limit: int = -1
    none_passes: bool = False
    key_limit: int = -1
    convert: Checker | None = None
    convert_limit: int = -1
    convert_scalars: bool = False


def fast_path(fs: FieldSchema | None, opts: FieldOptions, dialect: Dialect) -> FastPath:
    """The shortcuts ``build_checker``'s closure takes first, derived by the same rules."""
    if fs is None or (not fs.createable and not fs.updateable):
        return FastPath()
    convert = to_text if opts.is_reference else converter_for(fs, dialect.multi_value_separator)
    required = fs.required_on_create or opts.is_external_id
    omit_null = not fs.nillable and fs.defaulted_on_create and not required and fs.type != "boolean"
    max_len = fs.length if fs.type in TEXT_TYPES and fs.length > 0 and not opts.is_reference else 0
    restricted = fs.restricted_picklist and bool(fs.picklist_values) and not opts.is_reference
    fast_text = convert is to_text and not restricted and not opts.is_external_id
    # At most max_len units however it is written: short enough to pass without counting.
    short = max_len // dialect.max_char_units if max_len else 1 << 62
    text_limit = short if fast_text else -1
    key_limit = short if opts.is_external_id and convert is to_text and not restricted else -1
    # No picklist step and no external-id test, and a string short enough: the converter is the check.
    direct = not restricted and not opts.is_external_id and convert is not to_text
    return FastPath(text_limit, not required and not omit_null, key_limit, convert if direct else None,
                    short if direct else -1, direct and max_len == 0)


def build_checker(
    object_name: str, field_name: str, fs: FieldSchema | None, opts: FieldOptions, dialect: Dialect
) -> Checker:
    """The whole per-field pipeline (exists, required, type, length, picklist) as one closure; text is
    measured and cut in the target dialect's unit."""
    if fs is None:
        return _always(INVALID_FIELD, f"is not a field of {object_name} (describe does not list it)")
    if not fs.createable and not fs.updateable:
        reason = f"is read-only in {object_name} (neither createable nor updateable)"
        return _always(INVALID_FIELD_FOR_INSERT_UPDATE, reason)

    # A reference's value is the parent's external id, not the target's own id: only required-ness is
    # the reference field's; its length belongs to the parent's field, which the parent's own load checks.
    separator = dialect.multi_value_separator
    convert = to_text if opts.is_reference else converter_for(fs, separator)
    required = fs.required_on_create or opts.is_external_id
    # A non-nillable field with a default (Order.Status, OwnerId): omit it rather than send null.
    omit_null = not fs.nillable and fs.defaulted_on_create and not required and fs.type != "boolean"
    max_len = fs.length if fs.type in TEXT_TYPES and fs.length > 0 and not opts.is_reference else 0
    truncate = opts.truncate
    restricted = fs.restricted_picklist and bool(fs.picklist_values) and not opts.is_reference
    picklist = frozenset(fs.picklist_values) if restricted else None
    picklist_folded = {v.casefold(): v for v in fs.picklist_values} if picklist else {}
    multi = fs.type == "multipicklist"
    missing_reason = (
        f"is required but the reference {opts.payload_key} is empty" if opts.is_reference else "is required but empty"
    )

    # Plain text that is certainly short enough needs no further work: the common case, answered first.
    fast_text = convert is to_text and picklist is None and not opts.is_external_id
    units_per_char = dialect.max_char_units
    fast_limit = max_len // units_per_char if max_len else 1 << 62
    text_length, truncate_text = dialect.text_length, dialect.truncate

    def check(value: Any) -> Any:
        if fast_text and value.__class__ is str and 0 < len(value) <= fast_limit:
            return value
        if value is None or value == "":
            if required:
                raise _Invalid(REQUIRED_FIELD_MISSING, missing_reason)
            return _OMIT if omit_null else None
        if opts.is_external_id and isinstance(value, str) and value.startswith(MISSING_KEY_PREFIX):
            raise _Invalid(REQUIRED_FIELD_MISSING, "is required but the source record has no id")
        converted = convert(value)
        if max_len and isinstance(converted, str) and units_per_char * len(converted) > max_len:
            # Only strings that could exceed the limit pay for the dialect's count.
            units = text_length(converted)
            if units > max_len:
                if not truncate:
                    raise _Invalid(STRING_TOO_LONG, f"is {units} characters long; the field allows {max_len}")
                converted = truncate_text(converted, max_len)
        if picklist is not None and converted not in picklist:
            if multi:
                return separator.join(_picklist_value(p, picklist, picklist_folded) for p in converted.split(separator))
            return _picklist_value(converted, picklist, picklist_folded)
        return converted

    return check


def _picklist_value(value: Any, allowed: frozenset[str], folded: dict[str, str]) -> str:
    """The allowed value itself (case as the picklist spells it), or INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST."""
    if value in allowed:
        return str(value)
    canonical = folded.get(str(value).casefold())
    if canonical is None:
        shown = ", ".join(sorted(allowed)[:10])
        raise _Invalid(INVALID_PICKLIST, f"{excerpt(value)} is not a value of the restricted picklist ({shown})")
    return canonical


# -- the validator --------------------------------------------------------------------


@dataclass(slots=True)
class RecordValidator:
    """Validates and converts one target object's mapped records."""

    object_name: str
    schema: ObjectSchema
    rules: tuple[tuple[str, str, Checker], ...]  # (payload key, schema field, checker)
    unmapped_required: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # static findings for `ferry plan` (every record would hit them)
    create_only: tuple[str, ...] = ()  # payload keys the sink must drop when updating an existing record
    fast: tuple[FastPath, ...] = ()  # per rule; empty means no shortcuts (every value goes to its checker)
    dialect: Dialect = _PLAIN  # how keys the mapping did not declare are read (references) and checked
    _keys: frozenset[str] = frozenset()
    _extra: dict[str, tuple[str, Checker]] = field(default_factory=dict)
    _steps: tuple[tuple[str, str, Checker, int, bool], ...] = ()

    def __post_init__(self) -> None:
        self._keys = frozenset(k for k, _, _ in self.rules)
        fast = self.fast if len(self.fast) == len(self.rules) else (FastPath(),) * len(self.rules)
        self._steps = tuple(
            (k, name, check, f.text_limit, f.none_passes) for (k, name, check), f in zip(self.rules, fast, strict=True)
        )

    @property
    def fast_paths(self) -> tuple[FastPath, ...]:
        """Per rule, the shortcuts (none when the validator was built without them)."""
        return self.fast if len(self.fast) == len(self.rules) else (FastPath(),) * len(self.rules)

    @property
    def steps(self) -> tuple[tuple[str, str, Checker, int, bool], ...]:
        """Per rule, as ``validate`` runs it: payload key, schema field, checker, text limit, None passes."""
        return self._steps

    def validate(self, mapped: MappedRecord, key: str) -> tuple[MappedRecord, list[RecordError]]:
        out: MappedRecord = {}
        errors: list[RecordError] = []
        get = mapped.get
        for payload_key_, field_name, check, text_limit, none_passes in self._steps:
            value = get(payload_key_)
            # The two answers most fields give (absent, or short plain text) without calling the checker.
            if value is None:
                if none_passes:
                    out[payload_key_] = None
                    continue
            elif value.__class__ is str and 0 < len(value) <= text_limit:
                out[payload_key_] = value
                continue
            try:
                converted = check(value)
            except _Invalid as bad:
                errors.append(self._error(key, field_name, bad))
                continue
            if converted is not _OMIT:
                out[payload_key_] = converted
        if mapped.keys() != self._keys:
            self._validate_extra_keys(mapped, key, out, errors)
        for field_name in self.unmapped_required:
            errors.append(self._error(key, field_name, _Invalid(REQUIRED_FIELD_MISSING, "is required but not mapped")))
        return out, errors

    def _error(self, key: str, field_name: str, bad: _Invalid) -> RecordError:
        return RecordError(bad.code, f"{self.object_name} {key}: {field_name} {bad.reason}", [field_name])

    def _validate_extra_keys(
        self, mapped: MappedRecord, key: str, out: MappedRecord, errors: list[RecordError]
    ) -> None:
        """Keys the mapping did not declare (custom Python mappings); checked against describe, slower."""
        for extra_key, value in mapped.items():
            if extra_key in self._keys:
                continue
            if extra_key not in self._extra:
                field_name = self._field_for_key(extra_key)
                is_ref = self.dialect.reference_of(extra_key, self.schema) is not None
                opts = FieldOptions(is_reference=is_ref, payload_key=extra_key)
                self._extra[extra_key] = (
                    field_name,
                    build_checker(self.object_name, field_name, self.schema.field(field_name), opts, self.dialect),
                )
            field_name, check = self._extra[extra_key]
            try:
                converted = check(value)
            except _Invalid as bad:
                errors.append(self._error(key, field_name, bad))
                continue
            if converted is not _OMIT:
                out[extra_key] = converted

    def _field_for_key(self, payload_key_: str) -> str:
        ref = self.dialect.reference_of(payload_key_, self.schema)
        if ref is None:
            return payload_key_
        return ref.field if self.schema.field(ref.field) is not None else payload_key_


def build_validator(spec: ObjectMapping, schema: ObjectSchema, dialect: Dialect) -> RecordValidator:
    """Compile a validator for one mapped object from its describe, the mapping's field options and the
    target's dialect (how it measures text, how it carries references)."""
    rules = []
    fast = []
    problems = []
    create_only = []
    for field_name, expr in spec.fields.items():
        key = payload_key(field_name, expr, schema, dialect)
        fs = schema.field(field_name)
        opts = FieldOptions(
            truncate=_truncates(expr),
            is_external_id=field_name == spec.external_id,
            is_reference=isinstance(expr, RefExpr),
            payload_key=key,
        )
        rules.append((key, field_name, build_checker(spec.name, field_name, fs, opts, dialect)))
        fast.append(fast_path(fs, opts, dialect))
        problems += _static_problems(spec.name, field_name, fs, spec.external_id)
        if fs is not None and fs.createable and not fs.updateable:
            create_only.append(key)
    unmapped = tuple(name for name, fs in schema.fields.items() if fs.required_on_create and name not in spec.fields)
    problems += [f"{spec.name}.{name} is required on create but not mapped" for name in unmapped]
    return RecordValidator(
        spec.name, schema, tuple(rules), unmapped, tuple(problems), tuple(create_only), fast=tuple(fast),
        dialect=dialect,
    )


def _truncates(expr: FieldExpr) -> bool:
    return getattr(expr, "on_too_long", "dead_letter") == "truncate"  # ref and query have no such option


def _static_problems(object_name: str, field_name: str, fs: FieldSchema | None, external_id: str) -> list[str]:
    where = f"{object_name}.{field_name}"
    if fs is None:
        return [f"{where}: no such field in the target's describe"]
    if not fs.createable and not fs.updateable:
        return [f"{where}: read-only in the target"]
    if field_name == external_id and not (fs.external_id or fs.id_lookup):
        return [f"{where}: used as external_id but the target does not mark it as an external id"]
    return []


__all__ = [
    "INVALID_EMAIL_ADDRESS",
    "INVALID_FIELD",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "INVALID_PICKLIST",
    "INVALID_TYPE",
    "NUMBER_OUTSIDE_VALID_RANGE",
    "REQUIRED_FIELD_MISSING",
    "STRING_TOO_LONG",
    "FastPath",
    "FieldOptions",
    "RecordValidator",
    "build_checker",
    "build_validator",
    "excerpt",
]
