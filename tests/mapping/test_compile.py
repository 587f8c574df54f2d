"""Compiled mappings: every expression form, and the example pipeline end to end on canonical records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ferry.connectors.salesforce.dialect import SALESFORCE
from ferry.connectors.shopify.normalize import normalize
from ferry.errors import ConfigError
from ferry.mapping.compile import compile_mapping
from ferry.mapping.spec import ObjectMapping
from ferry.mapping.validate import build_validator
from ferry.model.canonical import Address, Customer, Order
from tests.mapping.schemas import SCHEMAS
from tests.mapping.test_spec import STANDARD_PRICEBOOK, example_mappings

FIXTURES = Path(__file__).resolve().parents[1] / "connectors" / "shopify" / "fixtures"
CONSTANTS = {STANDARD_PRICEBOOK: "01s000000000001AAA"}


def customer(**kw: Any) -> Customer:
    return Customer(key=kw.pop("key", "1"), **kw)


def compiled(fields: dict[str, Any], entity: str = "customer", constants: dict[str, Any] | None = None) -> Any:
    spec = ObjectMapping.model_validate(
        {"name": "Thing__c", "from": entity, "external_id": "Ext__c", "fields": {"Ext__c": "key", **fields}}
    )
    return compile_mapping(spec, None, constants or {}, SALESFORCE)


def test_path_including_nested_and_none_on_the_way() -> None:
    m = compiled({"City": "address.city", "Email": "email"})
    assert m.map(customer(email="a@b.co", address=Address(city="Ghent"))) == {
        "Ext__c": "1",
        "City": "Ghent",
        "Email": "a@b.co",
    }
    assert m.map(customer()) == {"Ext__c": "1", "City": None, "Email": None}


def test_paths_read_dicts_too() -> None:
    m = compiled({"City": "address.city"})
    assert m.map({"key": "7", "address": {"city": "Oslo"}}) == {"Ext__c": "7", "City": "Oslo"}


def test_value_default_and_transforms() -> None:
    m = compiled(
        {
            "Const": {"value": "x"},
            "Null": {"value": None},
            "Note": {"path": "note", "default": "n/a"},
            "Low": {"path": "email", "transform": ["strip", "lower"]},
            "Up": {"path": "state", "transform": "upper"},
            "Day": {"path": "created_at", "transform": "date"},
        }
    )
    out = m.map(customer(email=" A@B.CO ", state="enabled", created_at="2026-03-04T15:11:12.000000Z", note=""))
    assert out == {
        "Ext__c": "1",
        "Const": "x",
        "Null": None,
        "Note": "n/a",
        "Low": "a@b.co",
        "Up": "ENABLED",
        "Day": "2026-03-04",
    }
    assert m.map(customer())["Day"] is None and m.map(customer())["Low"] is None


def test_coalesce_skips_none_and_empty() -> None:
    m = compiled({"Name": {"coalesce": ["full_name", "company", {"template": "Customer {key}"}]}})
    assert m.map(customer(full_name="Ann Lee", company="Acme"))["Name"] == "Ann Lee"
    assert m.map(customer(full_name="", company="Acme"))["Name"] == "Acme"
    assert m.map(customer(key="42"))["Name"] == "Customer 42"
    assert compiled({"N": {"coalesce": ["email", "phone"]}}).map(customer())["N"] is None


def test_template_missing_parts_strip_and_empty() -> None:
    m = compiled({"T": {"template": "{first_name} {last_name} ({address.city}) {{x}}"}})
    assert m.map(customer(first_name="Ann", last_name="Lee", address=Address(city="Rome")))["T"] == "Ann Lee (Rome) {x}"
    assert m.map(customer(last_name="Lee"))["T"] == "Lee () {x}"
    assert compiled({"T": {"template": " {first_name} "}}).map(customer())["T"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, False), (False, True), (None, True), ("true", False), ("FALSE", True), ("maybe", True)],
)
def test_map_with_bool_keys(value: Any, expected: bool) -> None:
    m = compiled({"Opt": {"map": {"path": "accepts_marketing", "values": {True: False, False: True}, "default": True}}})
    assert m.map(customer(accepts_marketing=value))["Opt"] is expected


def test_map_string_keys_case_insensitive_fallback_and_no_default() -> None:
    m = compiled({"A": {"map": {"path": "state", "values": {"enabled": "Yes", "Disabled": "No"}}}})
    assert m.map(customer(state="enabled"))["A"] == "Yes"
    assert m.map(customer(state="ENABLED"))["A"] == "Yes"
    assert m.map(customer(state="disabled"))["A"] == "No"
    assert m.map(customer(state="invited"))["A"] is None


def test_ref_produces_relationship_key_and_string_value() -> None:
    m = compiled({"Parent__c": {"ref": "Order", "by": "Shopify_Order_Id__c", "value": "number"}}, entity="order")
    assert m.keys == ("Ext__c", "Parent__r.Shopify_Order_Id__c")
    assert m.map(Order(key="9", number=1001))["Parent__r.Shopify_Order_Id__c"] == "1001"
    assert m.map(Order(key="9"))["Parent__r.Shopify_Order_Id__c"] is None


def test_query_constant_and_unresolved_query() -> None:
    fields = {"Pricebook2Id": {"query": STANDARD_PRICEBOOK}}
    assert compiled(fields, constants=CONSTANTS).map(customer())["Pricebook2Id"] == "01s000000000001AAA"
    with pytest.raises(ConfigError, match="not resolved"):
        compiled(fields)


# -- the example pipeline, normalized fixtures through map and validate ----------------------------


def run_example(stream: str, fixture: str) -> dict[str, list[tuple[dict[str, Any], list[Any]]]]:
    raw = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    plans = []
    for spec in example_mappings():
        schema = SCHEMAS[spec.name]
        compiled = compile_mapping(spec, schema, CONSTANTS, SALESFORCE)
        plans.append((spec, compiled, build_validator(spec, schema, SALESFORCE)))
    out: dict[str, list[tuple[dict[str, Any], list[Any]]]] = {}
    for entity, record in normalize(stream, raw):
        for spec, mapping, validator in plans:
            if spec.from_ == entity:
                out.setdefault(spec.name, []).append(validator.validate(mapping.map(record), record.key))
    return out


def test_example_customer_to_account_and_contact() -> None:
    out = run_example("customers", "customer_full.json")
    [(account, errors)] = out["Account"]
    assert errors == []
    assert account["Name"] == "Bob Norman"
    assert account["BillingStreet"] == "Chestnut Street 92, Apt 4"
    [(contact, errors)] = out["Contact"]
    assert errors == []
    assert contact["Account.Shopify_Customer_Id__c"] == "207119551"
    assert contact["HasOptedOutOfEmail"] is False
    assert contact["Email"] == "Bob.Norman@mail.example.com"


def test_example_messy_customer_is_dead_lettered_for_its_email_only() -> None:
    out = run_example("customers", "customer_messy.json")
    [(account, errors)] = out["Account"]
    assert errors == [] and account["Name"] == "Åsa Ölander 🐟"
    [(_, errors)] = out["Contact"]
    assert [(e.code, e.fields) for e in errors] == [("INVALID_EMAIL_ADDRESS", ["Email"])]
    assert errors[0].message == 'Contact 9000000000000000001: Email "bob@@example.com" is not a valid email address'


def test_example_products_per_variant() -> None:
    out = run_example("products", "product_multi_variant.json")
    names = [p["Name"] for p, errors in out["Product2"] if not errors]
    assert names == ["IPod Nano - 8GB - Pink", "IPod Nano - 8GB - Red", "IPod Nano - 8GB - Green"]
    entry, errors = out["PricebookEntry"][0]
    assert errors == []
    assert entry == {
        "Shopify_Variant_Id__c": "808950810",
        "Product2.Shopify_Product_Id__c": "808950810",
        "Pricebook2Id": "01s000000000001AAA",
        "UnitPrice": 199.0,
        "IsActive": True,
    }


def test_example_guest_order() -> None:
    out = run_example("orders", "order_guest_custom_item.json")
    [(account, errors)] = out["Account"]
    assert errors == [] and account["Shopify_Customer_Id__c"] == "guest:guest.shopper@example.com"
    assert account["Name"] == "花子 山田"
    [(order, errors)] = out["Order"]
    assert errors == []
    assert order["Account.Shopify_Customer_Id__c"] == "guest:guest.shopper@example.com"
    assert order["EffectiveDate"] == "2026-03-07"
    assert order["Status"] == "Draft"
    assert order["Shopify_Cancelled_At__c"] == "2026-03-07T15:10:00.000Z"
    assert order["Shopify_Total_Price__c"] == 3300.0
    custom, gift = out["OrderItem"]
    # A custom line item has no PricebookEntry to point at: dead-lettered with the reason.
    assert [e.code for e in custom[1]] == ["REQUIRED_FIELD_MISSING"]
    assert "PricebookEntryId is required but the reference PricebookEntry.Shopify_Variant_Id__c is empty" in (
        custom[1][0].message
    )
    assert gift[1] == [] and gift[0]["Quantity"] == 2.0


def test_example_order_with_customer() -> None:
    out = run_example("orders", "order_customer_multicurrency.json")
    assert "Account" not in out  # a real customer comes from the customers stream
    [(order, errors)] = out["Order"]
    assert errors == []
    assert order["Shopify_Total_Refunded__c"] == 205.14
    assert order["Shopify_Presentment_Currency__c"] == "EUR"
    assert order["Shopify_Cancelled_At__c"] is None
    assert all(not errors for _, errors in out["OrderItem"])
