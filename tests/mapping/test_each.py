"""The ``each`` form: a list of sub-records from a tuple path (an order's lines), references keyed by the dialect."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ferry.core.dialect import PlainDialect
from ferry.mapping.compile import compile_mapping
from ferry.mapping.spec import ObjectMapping, load_order, query_constants
from ferry.model.canonical import Order, OrderLine


def _invoice(line_fields: dict[str, object]) -> ObjectMapping:
    return ObjectMapping.model_validate(
        {"name": "Invoice", "from": "order", "external_id": "DocNumber",
         "fields": {"DocNumber": "name", "Line": {"each": "lines", "fields": line_fields}}}
    )


def test_each_maps_one_sub_record_per_element_with_the_dialects_reference_key() -> None:
    m = _invoice({"Amount": "unit_price", "Detail.ItemRef": {"ref": "Item", "by": "Name", "value": "variant_key"},
                  "Kind": {"value": "SalesItemLineDetail"}})
    order = Order(key="1", name="#1", lines=(OrderLine(key="a", variant_key="v1", unit_price="2.00"),
                                             OrderLine(key="b", variant_key=None, unit_price="3.50")))
    mapped = compile_mapping(m, None, {}, PlainDialect()).map(order)
    assert mapped == {"DocNumber": "#1", "Line": [
        {"Amount": "2.00", "Detail.ItemRef.Name": "v1", "Kind": "SalesItemLineDetail"},
        {"Amount": "3.50", "Detail.ItemRef.Name": None, "Kind": "SalesItemLineDetail"},
    ]}
    assert compile_mapping(m, None, {}, PlainDialect()).map(Order(key="2"))["Line"] == []


def test_references_inside_each_order_the_load() -> None:
    item = ObjectMapping.model_validate({"name": "Item", "from": "product_variant", "external_id": "Name",
                                         "fields": {"Name": "key"}})
    invoice = _invoice({"ItemRef": {"ref": "Item", "by": "Name", "value": "variant_key"}})
    assert [m.name for m in load_order([invoice, item])] == ["Item", "Invoice"]


def test_queries_inside_each_are_constants_of_the_mapping() -> None:
    m = _invoice({"TaxCodeRef": {"query": "SELECT Id FROM TaxCode WHERE Name = 'NON'"}})
    assert query_constants(m) == ["SELECT Id FROM TaxCode WHERE Name = 'NON'"]


@pytest.mark.parametrize(
    ("line_fields", "each", "problem"),
    [
        ({"A": "x"}, "name", "is not a list of records"),
        ({"A": "nope"}, "lines", "OrderLine has no field 'nope'"),
        ({}, "lines", "each needs fields"),
    ],
)
def test_bad_each_is_refused_at_load(line_fields: dict[str, object], each: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ObjectMapping.model_validate({"name": "I", "from": "order", "external_id": "D",
                                      "fields": {"D": "name", "L": {"each": each, "fields": line_fields}}})


def test_each_cannot_nest_inside_another_form() -> None:
    with pytest.raises(ValidationError, match="must be the whole field expression"):
        ObjectMapping.model_validate({"name": "I", "from": "order", "external_id": "D", "fields": {
            "D": "name", "L": {"coalesce": [{"each": "lines", "fields": {"A": "key"}}]}}})
