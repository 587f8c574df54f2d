"""WooCommerce JSON -> canonical records, on messy records shaped as the wc/v3 API sends them."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from ferry.connectors.woocommerce.normalize import guest_key_for, normalize, record_key, record_version
from ferry.model.canonical import Customer, Order, OrderLine, Product, ProductVariant, Refund
from ferry.model.values import MIN_VERSION


def _address(**overrides: Any) -> dict[str, Any]:
    base = {"first_name": "Ryan", "last_name": "McDonald", "company": "", "address_1": "33 Market St",
            "address_2": "Apt 4", "city": "Αθήνα", "state": "", "postcode": "105 57", "country": "GR",
            "email": "Ryan.McDonald@Mail.Example.com", "phone": ""}
    return base | overrides


def _order(**overrides: Any) -> dict[str, Any]:
    base = {
        "id": 183, "parent_id": 0, "status": "processing", "currency": "EUR", "number": "183",
        # The store is in Berlin: local times are two hours ahead of the *_gmt twins in summer.
        "date_created": "2026-07-21T23:13:41", "date_created_gmt": "2026-07-21T21:13:41",
        "date_modified": "2026-07-22T01:14:05", "date_modified_gmt": "2026-07-21T23:14:05",
        "date_paid": "2026-07-21T23:14:00", "date_paid_gmt": "2026-07-21T21:14:00",
        "date_completed": None, "date_completed_gmt": None,
        "discount_total": "10.00", "total": "287.92", "total_tax": "47.57", "customer_id": 0,
        "customer_note": "  leave at the door  ", "created_via": "checkout",
        "billing": _address(), "shipping": _address(email=None) | {"phone": ""},
        "line_items": [
            {"id": 228, "name": "Limited Explorer Mug - Navy", "product_id": 16, "variation_id": 18, "quantity": 3,
             "subtotal": "240.45", "total": "230.45", "sku": "WC-00016-NAV", "price": 76.816666,
             "meta_data": [{"id": 856, "key": "color", "value": "Navy", "display_value": "Navy"},
                           {"id": 857, "key": "_reduced_stock", "value": "3"}]},
            {"id": 229, "name": "Gift wrap", "product_id": 0, "variation_id": 0, "quantity": 1,
             "subtotal": "5.00", "total": "5.00", "sku": "", "price": 5},
            {"id": 230, "name": "Plain Tee", "product_id": 21, "variation_id": 0, "quantity": "2",
             "subtotal": "30.00", "total": "30.00", "sku": None, "price": 15},
        ],
        "refunds": [{"id": 301, "reason": "Damaged", "total": "-20.50"}, {"id": 302, "reason": "", "total": "-5"}],
    }
    return base | overrides


def _variable_product() -> dict[str, Any]:
    return {
        "id": 42, "name": "Everyday Summit Jacket", "slug": "summit-jacket", "type": "variable", "status": "publish",
        "description": "<p>Warm &amp; dry.</p>", "short_description": "", "sku": "WC-00042", "price": "154.63",
        "regular_price": "", "date_created_gmt": "2025-12-15T19:22:28", "date_modified_gmt": "2026-05-09T19:22:28",
        "categories": [{"id": 22, "name": "Outdoor", "slug": "outdoor"}], "tags": [{"id": 3, "name": "winter"}],
        "variations": [43, 46],
        "_variations": [
            {"id": 43, "sku": "WC-00042-BLK", "price": "150.00", "regular_price": "150.00", "status": "publish",
             "date_modified_gmt": "2026-05-09T19:22:28", "attributes": [{"id": 0, "name": "Color", "option": "Black"}],
             "stock_quantity": 4, "menu_order": 1, "description": ""},
            {"id": 46, "sku": "", "price": "158.63", "regular_price": "158.63", "status": "private",
             "date_modified_gmt": "2026-06-01T08:00:00", "stock_quantity": None, "menu_order": 2,
             "attributes": [{"id": 0, "name": "Color", "option": "Forest Green"}]},
        ],
    }


def _customer(**overrides: Any) -> dict[str, Any]:
    base = {"id": 7, "email": "ana@example.com", "first_name": "", "last_name": "", "role": "customer",
            "username": "ana", "date_created_gmt": "2026-02-01T10:00:00", "date_modified_gmt": None,
            "billing": _address(first_name="Ana", last_name="Núñez", email="billing@example.com", phone="+30 21"),
            "shipping": _address(), "is_paying_customer": True}
    return base | overrides


def test_a_guest_order_yields_its_customer_first_keyed_like_shopify_guests() -> None:
    out = normalize("orders", _order())
    entities = [entity for entity, _ in out]
    assert entities == ["customer", "order", "order_line", "order_line", "order_line", "refund", "refund"]
    guest, order = out[0][1], out[1][1]
    assert isinstance(guest, Customer) and isinstance(order, Order)
    assert guest.key == "guest:ryan.mcdonald@mail.example.com" == order.customer_key
    assert guest.is_guest and order.is_guest and guest.source_id is None
    assert guest.full_name == "Ryan McDonald" and guest.version == order.version
    assert guest_key_for(_order(billing=_address(email="  "))) == "guest:order:183"


def test_order_times_are_the_gmt_fields_and_its_day_is_the_stores() -> None:
    order = normalize("orders", _order())[1][1]
    assert isinstance(order, Order)
    assert order.version == "2026-07-21T23:14:05.000000Z"  # date_modified_gmt, not the local 01:14 next day
    assert order.created_at == "2026-07-21T21:13:41.000000Z"
    assert order.processed_at == "2026-07-21T21:14:00.000000Z"  # paid
    assert order.processed_on == "2026-07-21"  # the local date_created's day
    assert order.updated_at == "2026-07-21T23:14:05.000000Z"
    assert order.name == "#183" and order.number == 183 and order.note == "leave at the door"
    assert order.financial_status == "partially_refunded" and order.currency == order.presentment_currency == "EUR"


def test_order_lines_point_at_the_variation_else_the_product_and_refunds_add_up() -> None:
    out = normalize("orders", _order())
    lines = [r for e, r in out if e == "order_line"]
    refunds = [r for e, r in out if e == "refund"]
    assert all(isinstance(x, OrderLine) for x in lines) and all(isinstance(x, Refund) for x in refunds)
    mug, wrap, tee = lines
    assert (mug.variant_key, mug.product_key, mug.is_custom) == ("18", "16", False)
    assert mug.unit_price == "80.15" and mug.total_discount == "10.00" and mug.quantity == 3  # 240.45 / 3
    assert mug.variant_title == "Navy"  # the variation's attribute, not the internal _reduced_stock
    assert (wrap.variant_key, wrap.product_key, wrap.is_custom) == (None, None, True)
    assert (tee.variant_key, tee.quantity, tee.unit_price, tee.sku) == ("21", 2, "15.00", None)
    assert [(r.key, r.amount, r.note) for r in refunds] == [("301", "20.50", "Damaged"), ("302", "5", None)]
    order = out[1][1]
    assert isinstance(order, Order) and order.total_refunded == "25.50" and order.subtotal_price == "275.45"


def test_a_registered_customers_order_has_no_guest() -> None:
    out = normalize("orders", _order(customer_id=7, refunds=[]))
    order = out[0][1]
    assert next(e for e, _ in out) == "order" and isinstance(order, Order)
    assert order.customer_key == "7" and not order.is_guest and order.total_refunded == "0.00"
    assert order.financial_status == "paid"


def test_a_variable_product_is_sold_as_its_variations_a_simple_one_as_itself() -> None:
    out = normalize("products", _variable_product())
    product = out[0][1]
    variants = [r for e, r in out if e == "product_variant"]
    assert isinstance(product, Product) and all(isinstance(v, ProductVariant) for v in variants)
    assert [v.key for v in variants] == ["43", "46"] and product.variant_keys == ("43", "46")
    black, green = variants
    assert black.display_name == "Everyday Summit Jacket - Black" and black.sku == "WC-00042-BLK"
    assert green.sku == "WC-00042"  # none of its own: the product's
    assert black.price == "150.00" and black.status == "active" and green.status == "archived"  # private
    assert black.description == "Warm & dry." and black.product_key == "42" and black.inventory_quantity == 4
    # The product's version covers its variations: a variation edit is a new version of what is staged.
    assert record_version("products", _variable_product()) == "2026-06-01T08:00:00.000000Z"
    assert product.product_type == "Outdoor" and product.tags == ("winter",) and product.status == "active"

    simple = {"id": 21, "name": "Plain Tee", "type": "simple", "status": "draft", "sku": "TEE", "price": "15",
              "regular_price": "15.00", "date_modified_gmt": "2026-03-01T00:00:00", "variations": []}
    out = normalize("products", simple)
    [(_, only)] = [(e, r) for e, r in out if e == "product_variant"]
    assert isinstance(only, ProductVariant)
    assert (only.key, only.product_key, only.display_name, only.price, only.status) == (
        "21", "21", "Plain Tee", "15.00", "draft")
    grouped = normalize("products", {"id": 50, "type": "grouped", "name": "Set", "grouped_products": [21, 42]})
    assert [e for e, _ in grouped] == ["product"]


def test_customers_take_names_from_billing_and_times_from_gmt() -> None:
    [(entity, customer)] = normalize("customers", _customer())
    assert entity == "customer" and isinstance(customer, Customer)
    assert (customer.key, customer.source_id, customer.email) == ("7", "7", "ana@example.com")
    assert (customer.first_name, customer.last_name, customer.full_name) == ("Ana", "Núñez", "Ana Núñez")
    assert customer.phone == "+30 21" and customer.address is not None and customer.address.country == "GR"
    assert customer.address.street == "33 Market St, Apt 4"
    assert customer.version == "2026-02-01T10:00:00.000000Z"  # date_modified_gmt null: created


@pytest.mark.parametrize("stream", ["customers", "products", "orders"])
def test_messy_records_never_raise(stream: str) -> None:
    base = {"customers": _customer(), "products": _variable_product(), "orders": _order()}[stream]
    junk: list[Any] = [None, "", 0, "0", -1, "x", 1.5, True, [], {}, [None, 3, "a"], {"a": None}, "2026-13-45T99:99"]
    rng = random.Random(12)
    for _ in range(400):
        record = copy.deepcopy(base)
        _scramble(record, rng, junk)
        out = normalize(stream, record)
        assert out and all(hasattr(r, "key") and r.key for _, r in out)
        key, version = record_key(record), record_version(stream, record)
        assert key and version >= MIN_VERSION
    guest, order = normalize("orders", {"id": 0, "customer_id": "0"})
    assert order[1].key.startswith("missing-id:") and guest[1].key == f"guest:order:{order[1].key}"


def _scramble(value: Any, rng: random.Random, junk: list[Any]) -> None:
    """Replace some values anywhere in the record by junk, or drop them."""
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    for k, v in items:
        roll = rng.random()
        if roll < 0.15:
            value[k] = rng.choice(junk)
        elif roll < 0.2 and isinstance(value, dict):
            del value[k]
        elif isinstance(v, dict | list):
            _scramble(v, rng, junk)


def test_gmt_times_take_the_short_path_only_when_it_gives_what_the_parser_gives() -> None:
    from ferry.connectors.woocommerce.normalize import _gmt
    from ferry.model.values import utc_timestamp

    samples = ["2026-07-21T21:13:41", "2024-02-29T23:59:59", "2026-12-31T00:00:00", "2026-02-30T10:00:00",
               "0000-00-00T00:00:00", "2026-07-21 21:13:41", "2026-07-21T24:00:00", "2026-07-21T21:13:60",
               "2026-07-21T21:13:41Z", "\uff12\uff10\uff12\uff16-07-21T21:13:41", " 2026-07-21T21:13:41",
               "2026-7-21T21:13:41"]
    for value in samples:
        assert _gmt({"t": value}, "t") == utc_timestamp(value), value
    assert _gmt({"t": "2026-07-21T21:13:41"}, "t") == "2026-07-21T21:13:41.000000Z"
    assert _gmt({"t": "0000-00-00T00:00:00"}, "t") == "0000-00-00T00:00:00"  # WordPress's zero date: for the validator
