"""The generated map-and-validate function answers exactly what mapping.map then validator.validate answer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ferry.connectors.salesforce.dialect import SALESFORCE
from ferry.connectors.shopify.normalize import normalize
from ferry.core.schema import FieldSchema, ObjectSchema
from ferry.engine.plan import build_plans
from ferry.errors import RecordError
from ferry.mapping.compile import compile_mapping
from ferry.mapping.fused import MapAndValidate, fuse, general
from ferry.mapping.spec import ObjectMapping
from ferry.mapping.validate import build_validator
from ferry.model.canonical import Address, Customer, Order
from ferry.sandbox.shopify.generator import generate_store
from tests.mapping.schemas import SCHEMAS
from tests.mapping.test_spec import STANDARD_PRICEBOOK, example_mappings
from tests.mapping.test_validate import SCHEMA

FIXTURES = Path(__file__).resolve().parents[1] / "connectors" / "shopify" / "fixtures"
CONSTANTS = {STANDARD_PRICEBOOK: "01s000000000001AAA"}

Answer = tuple[list[tuple[str, Any]], list[tuple[str, str, list[str], bool]]]


def answer(fn: MapAndValidate, record: Any) -> Answer:
    """Keys in order with their values, and every error as data (RecordError has no __eq__ to lean on)."""
    out, errors = fn(record)
    assert all(isinstance(e, RecordError) for e in errors)
    return list(out.items()), [(e.code, e.message, e.fields, e.transient) for e in errors]


def pair(spec: ObjectMapping, schema: ObjectSchema, constants: dict[str, Any]) -> tuple[MapAndValidate, MapAndValidate]:
    compiled = compile_mapping(spec, schema, constants, SALESFORCE)
    validator = build_validator(spec, schema, SALESFORCE)
    fused = fuse(compiled, validator, tuple(spec.fields.values()))
    assert fused is not None
    return fused, general(compiled, validator)


def test_the_example_pipeline_fuses_and_build_plans_uses_it() -> None:
    plans = build_plans(example_mappings(), SCHEMAS, CONSTANTS, SALESFORCE)
    assert all(p.fused is not None for p in plans)


def test_example_pipeline_on_a_generated_store_and_the_fixtures() -> None:
    store = generate_store(seed=11, customers=150, products=30, orders=300)
    raws = [(s, r) for s in ("customers", "products", "orders") for r in store.records(s)]
    for path in sorted(FIXTURES.glob("*.json")):
        stream = {"customer": "customers", "order": "orders", "product": "products"}[path.stem.split("_")[0]]
        raws.append((stream, json.loads(path.read_text(encoding="utf-8"))))
    pairs = {m.name: (m.from_, *pair(m, SCHEMAS[m.name], CONSTANTS)) for m in example_mappings()}
    checked = failing = 0
    for stream, raw in raws:
        for entity, record in normalize(stream, raw):
            for from_, fused, slow in pairs.values():
                if from_ == entity:
                    got = answer(fused, record)
                    assert got == answer(slow, record), record
                    checked += 1
                    failing += bool(got[1])
    assert checked > 1_000 and failing > 0  # the store has bad records: the error paths are compared too


# Every field of the test schema, each through a different form, with awkward values on the record.
FIELDS: dict[str, Any] = {
    "Ext__c": "key",
    "Name": {"coalesce": ["full_name", "company", {"template": "Customer {key}"}]},
    "Note__c": {"path": "note", "on_too_long": "truncate"},
    "Email__c": "email",
    "Amount__c": "currency",
    "Ratio__c": "address.phone",
    "Count__c": "state",
    "Flag__c": {"map": {"path": "accepts_marketing", "values": {True: False, False: True}, "default": True}},
    "Day__c": {"path": "created_at", "transform": "date"},
    "At__c": "updated_at",
    "Kind__c": "address.company",
    "Open__c": {"path": "address.city", "default": "A"},
    "Multi__c": "tags",
    "Tags__c": {"path": "phone", "transform": ["strip", "lower"]},
    "Status": "address.country",
    "CreateOnly__c": "first_name",
    "ParentId": {"ref": "Parent__c", "by": "Ext__c", "value": "last_name"},
    "Formula__c": {"value": "x"},  # read-only: every record gets the error, made per record
    "Missing__c": {"value": None},  # not in the describe at all
}
VALUES: list[Any] = [
    None, "", " ", "a", "abcdefghij", "abcdefghijk", "x" * 40, "😀" * 5, "😀" * 6, "Retail", "retail", "a@b.co",
    "not an email", "12.50", "1,234.00", "999.999", "nan", "2026-03-04", "2026-03-04T10:11:12-05:00",
    "2026-03-04T15:11:12.000000Z", "true", "missing-id:abc", 0, 1, 2.5, True, False, ("vip", "b2b"), ("VIP",), 10**12,
]
STRING_ONLY = {"key"}  # Customer.key is typed str; the rest take anything, as messy sources send


def random_customer(rnd: random.Random) -> Customer:
    def pick(name: str) -> Any:
        value = rnd.choice(VALUES)
        return str(value) if name in STRING_ONLY else value

    address = None if rnd.random() < 0.2 else Address(**{f: pick(f) for f in Address.__slots__})  # type: ignore[arg-type]
    fields = {f: pick(f) for f in Customer.__slots__ if f != "address"}
    return Customer(**fields, address=address)


@pytest.mark.parametrize("seed", range(4))
def test_every_form_and_awkward_values_answer_the_same(seed: int) -> None:
    spec = ObjectMapping.model_validate({"name": "Thing__c", "from": "customer", "external_id": "Ext__c",
                                         "fields": FIELDS})
    fused, slow = pair(spec, SCHEMA, {})
    rnd = random.Random(seed)
    for _ in range(1_500):
        record = random_customer(rnd)
        assert answer(fused, record) == answer(slow, record), record


def test_constants_are_checked_once_and_still_fail_per_record() -> None:
    schema = ObjectSchema("Thing__c", {f.name: f for f in (
        FieldSchema("Ext__c", "string", 20, external_id=True),
        FieldSchema("Status", "picklist", 40, nillable=False, defaulted_on_create=True),
        FieldSchema("Kind__c", "picklist", 40, picklist_values=["Retail"], restricted_picklist=True),
        FieldSchema("Count__c", "int"),
        FieldSchema("Pricebook2Id", "reference", 18, reference_to=["Pricebook2"]),
    )})
    for value in (None, "", "retail", "Retail", "Nope", 3, "3", True):
        fields = {
            "Ext__c": "key", "Status": {"value": value}, "Kind__c": {"value": value},
            "Count__c": {"value": value, "transform": "upper"}, "Pricebook2Id": {"query": STANDARD_PRICEBOOK},
        }
        spec = ObjectMapping.model_validate(
            {"name": "Thing__c", "from": "customer", "external_id": "Ext__c", "fields": fields}
        )
        fused, slow = pair(spec, schema, {STANDARD_PRICEBOOK: value})
        for key in ("1", "2"):
            assert answer(fused, Customer(key=key)) == answer(slow, Customer(key=key)), value


def test_records_the_reads_were_not_written_for_take_the_general_path() -> None:
    spec = next(m for m in example_mappings() if m.name == "Order")
    fused, slow = pair(spec, SCHEMAS["Order"], CONSTANTS)
    as_dict = {"key": "5", "customer_key": "c1", "name": "#1", "processed_at": "2026-03-04T15:11:12.000000Z",
               "billing_address": {"city": "Paris", "street": None}, "total_price": "10.00"}
    shapes: list[Any] = [
        SimpleNamespace(**as_dict),  # a custom pipeline's own object, without most fields
        Order(key="6", billing_address=as_dict["billing_address"]),  # type: ignore[arg-type]  # a dict inside
        Order(key="7", billing_address=Address(city="Lyon"), total_price="abc"),
    ]
    for record in shapes:
        assert answer(fused, record) == answer(slow, record)
    with pytest.raises(AttributeError):  # no key at all: the same failure as before
        fused(object())


def test_repeated_payload_keys_are_not_fused() -> None:
    spec = next(m for m in example_mappings() if m.name == "Contact")
    compiled = compile_mapping(spec, SCHEMAS["Contact"], CONSTANTS, SALESFORCE)
    validator = build_validator(spec, SCHEMAS["Contact"], SALESFORCE)
    doubled = type(compiled)(compiled.name, compiled.entity, compiled.external_id, compiled.items + compiled.items[:1])
    assert fuse(doubled, validator, (*spec.fields.values(), next(iter(spec.fields.values())))) is None


@pytest.mark.parametrize("key", ["1", "missing-id:0123456789abcdef", "x" * 300, " "])
def test_the_external_id_shortcut_still_refuses_missing_and_long_keys(key: str) -> None:
    spec = next(m for m in example_mappings() if m.name == "Account")
    fused, slow = pair(spec, SCHEMAS["Account"], CONSTANTS)
    record = Customer(key=key, full_name="A")
    assert answer(fused, record) == answer(slow, record)
    assert bool(answer(fused, record)[1]) == (key != "1" and key != " ")


SCALARS: list[Any] = [0, 1, -1, 2, 3, 2.5, -0.0, 999.99, 999.999, 1000.0, 1e300, float("inf"), float("nan"),
                      2**31 - 1, 2**31, -(2**31) - 1, 10**30, True, False, 1.0, 0.0]
SCALAR_FIELDS = ("Amount__c", "Ratio__c", "Count__c", "Flag__c", "Day__c", "At__c", "Email__c", "Note__c", "Name")


def test_int_float_and_bool_values_answer_the_same_on_every_field_type() -> None:
    """The scalar shortcut (the converter called directly) against the checker, on every type it applies to."""
    slots = zip(SCALAR_FIELDS, Address.__slots__, strict=False)  # the first nine of Address's eleven
    fields = {"Ext__c": "key", **{name: f"address.{slot}" for name, slot in slots}}
    spec = ObjectMapping.model_validate({"name": "Thing__c", "from": "customer", "external_id": "Ext__c",
                                         "fields": fields})
    fused, slow = pair(spec, SCHEMA, {})
    assert "__class__ is int" in (fused.__doc__ or "")  # the shortcut under test is in the generated code
    rnd = random.Random(5)
    for _ in range(3_000):
        address = Address(*(rnd.choice(SCALARS) for _ in Address.__slots__))
        record = Customer(key="1", address=address)
        assert answer(fused, record) == answer(slow, record), address
