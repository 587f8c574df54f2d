"""The validator: every error code, conversions, check order, and messages that say what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.connectors.salesforce.dialect import SALESFORCE, truncate_utf16, utf16_length
from ferry.core.schema import FieldSchema, ObjectSchema
from ferry.mapping.spec import ObjectMapping
from ferry.mapping.validate import RecordValidator, build_validator, is_email

SCHEMA = ObjectSchema(
    "Thing__c",
    {
        f.name: f
        for f in (
            FieldSchema("Ext__c", "string", 20, external_id=True),
            FieldSchema("Name", "string", 10, nillable=False),
            FieldSchema("Note__c", "textarea", 10),
            FieldSchema("Email__c", "email", 80),
            FieldSchema("Amount__c", "currency", precision=5, scale=2),
            FieldSchema("Ratio__c", "double"),
            FieldSchema("Count__c", "int"),
            FieldSchema("Flag__c", "boolean", nillable=False, defaulted_on_create=True),
            FieldSchema("Day__c", "date"),
            FieldSchema("At__c", "datetime"),
            FieldSchema("Kind__c", "picklist", 40, picklist_values=["Retail", "Wholesale"], restricted_picklist=True),
            FieldSchema("Open__c", "picklist", 40, picklist_values=["A"]),
            FieldSchema("Multi__c", "multipicklist", 100),
            FieldSchema("Tags__c", "multipicklist", 100, picklist_values=["vip", "b2b"], restricted_picklist=True),
            FieldSchema("Status", "picklist", 40, nillable=False, defaulted_on_create=True),
            FieldSchema("Formula__c", "string", 10, createable=False, updateable=False),
            FieldSchema("CreateOnly__c", "string", 10, updateable=False),
            FieldSchema(
                "ParentId", "reference", 18, nillable=False, reference_to=["Parent__c"], relationship_name="Parent__r"
            ),
        )
    },
)


def validator(*fields: str, **exprs: Any) -> RecordValidator:
    spec_fields: dict[str, Any] = {"Ext__c": "key", "Name": "full_name"}
    spec_fields.update({f: "note" for f in fields})
    spec_fields.update(exprs)
    spec_fields.setdefault("ParentId", {"ref": "Parent__c", "by": "Ext__c", "value": "key"})
    spec = ObjectMapping.model_validate(
        {"name": "Thing__c", "from": "customer", "external_id": "Ext__c", "fields": spec_fields}
    )
    return build_validator(spec, SCHEMA, SALESFORCE)


BASE = {"Ext__c": "k1", "Name": "Widget", "Parent__r.Ext__c": "p1"}


def check(v: RecordValidator, **values: Any) -> tuple[dict[str, Any], list[tuple[str, list[str], str]]]:
    out, errors = v.validate({**BASE, **values}, "k1")
    return out, [(e.code, e.fields, e.message) for e in errors]


def only_error(v: RecordValidator, **values: Any) -> tuple[str, str, str]:
    _, errors = check(v, **values)
    assert len(errors) == 1, errors
    code, fields, message = errors[0]
    assert len(fields) == 1
    return code, fields[0], message


def test_happy_path_converts_and_passes() -> None:
    v = validator("Email__c", "Amount__c", "Count__c", "Flag__c", "Day__c", "At__c", "Kind__c")
    out, errors = check(
        v,
        Email__c="ann@example.com",
        Amount__c="199.00",
        Count__c="3",
        Flag__c="true",
        Day__c="2026-03-04T15:11:12.000000Z",
        At__c="2026-03-04T10:11:12-05:00",
        Kind__c="retail",
    )
    assert errors == []
    assert out == {
        **BASE,
        "Email__c": "ann@example.com",
        "Amount__c": 199.0,
        "Count__c": 3,
        "Flag__c": True,
        "Day__c": "2026-03-04",
        "At__c": "2026-03-04T15:11:12.000Z",
        "Kind__c": "Retail",  # case fixed to the picklist's own value
    }


def test_invalid_field() -> None:
    v = validator("Nope__c")
    assert v.problems == ("Thing__c.Nope__c: no such field in the target's describe",)
    code, field, message = only_error(v, Nope__c="x")
    assert (code, field) == ("INVALID_FIELD", "Nope__c")
    assert message == "Thing__c k1: Nope__c is not a field of Thing__c (describe does not list it)"


def test_read_only_field() -> None:
    code, field, _ = only_error(validator("Formula__c"), Formula__c="x")
    assert (code, field) == ("INVALID_FIELD_FOR_INSERT_UPDATE", "Formula__c")


def test_create_only_fields_are_allowed_and_listed_for_the_sink() -> None:
    v = validator("CreateOnly__c")
    assert check(v, CreateOnly__c="x")[1] == []
    assert v.create_only == ("CreateOnly__c",)


@pytest.mark.parametrize("empty", [None, ""])
def test_required_field_missing(empty: Any) -> None:
    code, field, message = only_error(validator(), Name=empty)
    assert (code, field) == ("REQUIRED_FIELD_MISSING", "Name")
    assert message == "Thing__c k1: Name is required but empty"


def test_required_reference_is_checked_on_the_underlying_field() -> None:
    code, field, message = only_error(validator(), **{"Parent__r.Ext__c": None})
    assert (code, field) == ("REQUIRED_FIELD_MISSING", "ParentId")
    assert "the reference Parent__r.Ext__c is empty" in message


def test_reference_value_is_not_held_to_the_id_length() -> None:
    assert check(validator(), **{"Parent__r.Ext__c": "guest:someone.with.a.long.address@example.com"})[1] == []


def test_external_id_is_always_required_and_never_a_missing_id_key() -> None:
    code, field, _ = only_error(validator(), Ext__c=None)
    assert (code, field) == ("REQUIRED_FIELD_MISSING", "Ext__c")
    code, _, message = only_error(validator(), Ext__c="missing-id:0123456789abcdef")
    assert code == "REQUIRED_FIELD_MISSING" and "no id" in message


def test_unmapped_required_field_is_reported() -> None:
    spec = ObjectMapping.model_validate(
        {"name": "Thing__c", "from": "customer", "external_id": "Ext__c", "fields": {"Ext__c": "key"}}
    )
    v = build_validator(spec, SCHEMA, SALESFORCE)
    assert "Thing__c.Name is required on create but not mapped" in v.problems
    _, errors = v.validate({"Ext__c": "k1"}, "k1")
    assert sorted((e.code, e.fields[0]) for e in errors) == [
        ("REQUIRED_FIELD_MISSING", "Name"),
        ("REQUIRED_FIELD_MISSING", "ParentId"),
    ]


def test_defaulted_non_nillable_null_is_omitted_not_sent() -> None:
    out, errors = check(validator("Status"), Status=None)
    assert errors == [] and "Status" not in out
    out, _ = check(validator("Note__c"), Note__c="")
    assert out["Note__c"] is None


@pytest.mark.parametrize(
    "bad",
    [
        "bob@@example.com",
        "bob",
        "bob@example",
        "bob @example.com",
        "bob@example,com",
        "@example.com",
        "a..b@x.com",
        "bob@.example.com",
        "bob@example.c",
    ],
)
def test_invalid_email(bad: str) -> None:
    code, field, message = only_error(validator("Email__c"), Email__c=bad)
    assert (code, field) == ("INVALID_EMAIL_ADDRESS", "Email__c")
    assert message == f'Thing__c k1: Email__c "{bad}" is not a valid email address'


@pytest.mark.parametrize("good", ["a@b.co", "first.last+tag@sub.example.co.uk", "o'neil@example.ie", "ÅSA@exämple.se"])
def test_valid_email(good: str) -> None:
    assert is_email(good)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Amount__c", "12,3x"),
        ("Amount__c", True),
        ("Amount__c", "nan"),
        ("Ratio__c", [1]),
        ("Count__c", "3.5"),
        ("Count__c", "three"),
        ("Count__c", False),
        ("Flag__c", "maybe"),
        ("Flag__c", 2),
        ("Day__c", "03/04/2026"),
        ("At__c", "tomorrow"),
        ("At__c", 5),
        ("Note__c", {"a": 1}),
    ],
)
def test_invalid_type(field: str, value: Any) -> None:
    code, got_field, message = only_error(validator(field), **{field: value})
    assert (code, got_field) == ("INVALID_TYPE_ON_FIELD_IN_RECORD", field)
    assert message.startswith(f"Thing__c k1: {field} ")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("Amount__c", 5, 5.0),
        ("Amount__c", "-999.99", -999.99),
        ("Ratio__c", "1e3", 1000.0),
        ("Count__c", 2.0, 2),
        ("Count__c", "7", 7),
        ("Flag__c", False, False),
        ("Flag__c", "FALSE", False),
        ("Day__c", "2026-03-04", "2026-03-04"),
        ("At__c", "2026-03-04", "2026-03-04T00:00:00.000Z"),
        ("At__c", "2026-03-04T10:11:12.5+01:00", "2026-03-04T09:11:12.500Z"),
        ("Note__c", 12.5, "12.5"),
        ("Note__c", True, "true"),
        ("Note__c", ("a", "b"), "a, b"),
        ("Multi__c", ("a", "b"), "a;b"),
    ],
)
def test_conversions(field: str, value: Any, expected: Any) -> None:
    out, errors = check(validator(field), **{field: value})
    assert errors == []
    assert out[field] == expected and type(out[field]) is type(expected)


def test_number_outside_precision() -> None:
    code, field, message = only_error(validator("Amount__c"), Amount__c="1000.00")  # precision 5, scale 2: 3 digits
    assert (code, field) == ("NUMBER_OUTSIDE_VALID_RANGE", "Amount__c")
    assert "more than 3 digits" in message


def test_string_too_long_names_the_length_not_the_value() -> None:
    code, field, message = only_error(validator("Note__c"), Note__c="x" * 11)
    assert (code, field) == ("STRING_TOO_LONG", "Note__c")
    assert message == "Thing__c k1: Note__c is 11 characters long; the field allows 10"


def test_length_counts_utf16_units_like_salesforce() -> None:
    v = validator("Note__c")
    assert check(v, Note__c="é" * 10)[1] == []  # 10 BMP characters fit
    code, _, message = only_error(v, Note__c="🐟" * 6)  # 6 characters, 12 UTF-16 units
    assert code == "STRING_TOO_LONG" and "is 12 characters long" in message


def test_truncate_instead_of_dead_letter_never_splits_a_surrogate_pair() -> None:
    v = validator(Note__c={"path": "note", "on_too_long": "truncate"})
    out, errors = check(v, Note__c="abcdefghi🐟xyz")
    assert errors == [] and out["Note__c"] == "abcdefghi"
    assert truncate_utf16("ab🐟", 3) == "ab" and truncate_utf16("ab🐟", 4) == "ab🐟"
    assert utf16_length("a🐟") == 3


def test_restricted_picklist() -> None:
    code, field, message = only_error(validator("Kind__c"), Kind__c="Resale")
    assert (code, field) == ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Kind__c")
    assert '"Resale" is not a value of the restricted picklist (Retail, Wholesale)' in message
    assert check(validator("Open__c"), Open__c="anything")[1] == []  # unrestricted
    out, errors = check(validator("Tags__c"), Tags__c=("VIP", "b2b"))
    assert errors == [] and out["Tags__c"] == "vip;b2b"
    code, _, message = only_error(validator("Tags__c"), Tags__c=("vip", "gold"))
    assert code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" and '"gold"' in message


def test_checks_run_in_order_and_each_field_reports_once() -> None:
    # Too long AND not a picklist value: length comes first, one error for the field.
    code, _, _ = only_error(validator("Kind__c"), Kind__c="x" * 41)
    assert code == "STRING_TOO_LONG"
    # Errors on several fields are all reported.
    _, errors = check(validator("Email__c", "Count__c"), Email__c="nope", Count__c="x", Name=None)
    assert sorted(e[0] for e in errors) == [
        "INVALID_EMAIL_ADDRESS",
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "REQUIRED_FIELD_MISSING",
    ]


def test_long_bad_values_are_excerpted() -> None:
    _, _, message = only_error(validator("Count__c"), Count__c="x" * 500)
    assert "(500 characters)" in message and len(message) < 120


def test_int_range() -> None:
    code, _, _ = only_error(validator("Count__c"), Count__c=2**31)
    assert code == "NUMBER_OUTSIDE_VALID_RANGE"


def test_keys_the_mapping_did_not_declare_are_checked_against_describe() -> None:
    v = validator()
    out, errors = v.validate({**BASE, "Count__c": "4", "Bogus__c": 1}, "k1")
    assert out["Count__c"] == 4
    assert [(e.code, e.fields) for e in errors] == [("INVALID_FIELD", ["Bogus__c"])]
