"""Parsing the `objects:` section: the shipped example, every form, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ferry.connectors.salesforce.dialect import SALESFORCE
from ferry.errors import ConfigError
from ferry.mapping.spec import (
    CoalesceExpr,
    MapExpr,
    ObjectMapping,
    PathExpr,
    QueryExpr,
    RefExpr,
    TemplateExpr,
    ValueExpr,
    load_order,
    query_constants,
    ref_dependencies,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"
STANDARD_PRICEBOOK = "SELECT Id FROM Pricebook2 WHERE IsStandard = true"


def example_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["objects"]
    return objects


def example_mappings() -> list[ObjectMapping]:
    return [ObjectMapping.model_validate(o) for o in example_objects()]


def mapping(fields: dict[str, Any], *, name: str = "Contact", entity: str = "customer") -> ObjectMapping:
    return ObjectMapping.model_validate(
        {"name": name, "from": entity, "external_id": "Ext__c", "fields": {"Ext__c": "key", **fields}}
    )


def test_the_example_pipeline_parses() -> None:
    mappings = example_mappings()
    assert [m.name for m in mappings] == ["Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem"]
    by_name = {m.name: m for m in mappings}
    account = by_name["Account"].fields
    assert account["Shopify_Customer_Id__c"] == PathExpr(path="key")
    name = account["Name"]
    assert isinstance(name, CoalesceExpr) and isinstance(name.coalesce[-1], TemplateExpr)
    assert isinstance(account["Description"], PathExpr) and account["Description"].on_too_long == "truncate"
    contact = by_name["Contact"].fields
    assert contact["AccountId"] == RefExpr(ref="Account", by="Shopify_Customer_Id__c", value=PathExpr(path="key"))
    opt_out = contact["HasOptedOutOfEmail"]
    assert isinstance(opt_out, MapExpr) and opt_out.map.values == {True: False, False: True}
    assert by_name["Product2"].fields["Family"] == ValueExpr(value=None)
    assert by_name["PricebookEntry"].fields["Pricebook2Id"] == QueryExpr(query=STANDARD_PRICEBOOK)
    order_date = by_name["Order"].fields["EffectiveDate"]
    assert isinstance(order_date, PathExpr) and order_date.transform == ("date",)
    assert by_name["Order"].from_ == "order"


def test_dependencies_and_constants_of_the_example() -> None:
    by_name = {m.name: m for m in example_mappings()}
    deps = ref_dependencies(by_name["OrderItem"])
    assert [(d.object, d.field, d.by) for d in deps] == [
        ("Order", "OrderId", "Shopify_Order_Id__c"),
        ("PricebookEntry", "PricebookEntryId", "Shopify_Variant_Id__c"),
    ]
    assert deps[0].payload_key(None, SALESFORCE) == "Order.Shopify_Order_Id__c"
    assert query_constants(by_name["Order"]) == [STANDARD_PRICEBOOK]
    assert query_constants(by_name["Account"]) == []


def test_load_order_puts_parents_first_whatever_the_file_order() -> None:
    mappings = list(reversed(example_mappings()))
    order = [m.name for m in load_order(mappings)]
    assert order.index("Account") < order.index("Contact")
    assert order.index("Account") < order.index("Order") < order.index("OrderItem")
    assert order.index("Product2") < order.index("PricebookEntry") < order.index("OrderItem")
    assert sorted(order) == sorted(m.name for m in mappings)


def test_load_order_rejects_a_cycle_and_ignores_outside_and_self_refs() -> None:
    a = mapping({"BId": {"ref": "B", "by": "Ext__c", "value": "key"}}, name="A")
    b = mapping({"AId": {"ref": "A", "by": "Ext__c", "value": "key"}}, name="B")
    with pytest.raises(ConfigError, match="cycle: A -> B -> A"):
        load_order([a, b])
    c = mapping(
        {
            "ParentId": {"ref": "C", "by": "Ext__c", "value": "key"},
            "OwnerId": {"ref": "User", "by": "Ext__c", "value": "key"},
        },
        name="C",
    )
    assert [m.name for m in load_order([c])] == ["C"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("email", PathExpr(path="email")),
        ({"value": 3}, ValueExpr(value=3)),
        (
            {"path": "note", "default": "-", "transform": "upper"},
            PathExpr(path="note", default="-", transform=("upper",)),
        ),
        ({"path": "note", "transform": ["strip", "lower"]}, PathExpr(path="note", transform=("strip", "lower"))),
        ({"template": "{first_name} x"}, TemplateExpr(template="{first_name} x")),
        ({"query": "SELECT Id FROM User"}, QueryExpr(query="SELECT Id FROM User")),
    ],
)
def test_each_form_parses(raw: Any, expected: Any) -> None:
    assert mapping({"F__c": raw}).fields["F__c"] == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pth": "email"}, r"Contact\.F__c: unknown expression with keys \[pth\]"),
        ({"path": "email", "trnsform": "lower"}, r"Contact\.F__c: unknown key\(s\) trnsform in a path expression"),
        ({"path": "email", "value": 1}, r"Contact\.F__c: ambiguous expression"),
        ({"path": "email", "transform": "titlecase"}, r"Contact\.F__c: transform"),
        ({"path": "email", "on_too_long": "cut"}, r"Contact\.F__c: on_too_long"),
        ({"coalesce": []}, r"Contact\.F__c: coalesce takes a non-empty list"),
        ({"coalesce": ["email", {"ref": "A", "by": "B", "value": "key"}]}, r"must be the whole field expression"),
        ({"map": {"path": "state", "valus": {}}}, r"Contact\.F__c\.map: unknown key\(s\) valus"),
        ({"ref": "Account", "by": "Ext__c"}, r"a ref needs value"),
        (42, r"Contact\.F__c: expected a path string or a mapping.*\{value: \.\.\.\}"),
        ("", r"Contact\.F__c: an empty path"),
        (
            "adress.city",
            r"Contact\.F__c: path 'adress\.city': Customer has no field 'adress' \(did you mean 'address'\?\)",
        ),
        ("email.domain", r"email is a plain value; cannot read \.domain"),
        ({"template": "Hi {nme}"}, r"Customer has no field 'nme'"),
        ({"template": "Hi {name"}, r"bad template"),
    ],
)
def test_bad_expressions_name_the_object_and_field(raw: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        mapping({"F__c": raw})


def test_object_level_errors() -> None:
    with pytest.raises(ValidationError, match="unknown entity 'customers'"):
        mapping({}, entity="customers")
    with pytest.raises(ValidationError, match="external_id Missing__c is not mapped"):
        ObjectMapping.model_validate(
            {"name": "A", "from": "customer", "external_id": "Missing__c", "fields": {"X": "key"}}
        )
    with pytest.raises(ValidationError, match="extra"):
        ObjectMapping.model_validate(
            {"name": "A", "from": "customer", "external_id": "X", "fields": {"X": "key"}, "upsert": True}
        )


def test_populate_by_python_name() -> None:
    m = ObjectMapping(name="A", from_="order", external_id="X", fields={"X": PathExpr(path="key")})
    assert m.from_ == "order"
