"""Shopify REST JSON -> canonical records, on fixtures shaped like the 2025-07 API (incl. the messy cases)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ferry.connectors.shopify.normalize import normalize, record_key, record_version
from ferry.model.canonical import Customer, Order, OrderLine, Product, ProductVariant, Refund
from ferry.model.values import MIN_VERSION, MISSING_KEY_PREFIX

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def records(stream: str, name: str) -> list[tuple[str, Any]]:
    return list(normalize(stream, load(name)))


# -- customers ---------------------------------------------------------------------


def test_customer_full() -> None:
    [(entity, c)] = records("customers", "customer_full.json")
    assert entity == "customer"
    assert isinstance(c, Customer)
    assert c.key == "207119551" and c.source_id == "207119551"
    assert c.version == "2026-03-04T15:11:12.000000Z"
    assert c.updated_at == c.version
    assert c.created_at == "2026-01-10T14:00:00.000000Z"
    assert c.email == "Bob.Norman@mail.example.com"  # case kept; only the guest key lowercases
    assert c.full_name == "Bob Norman"
    assert c.company == "Norman & Söhne GmbH"
    assert c.tags == ("vip", "wholesale")
    assert c.accepts_marketing is True  # consent object wins over the legacy flag
    assert c.is_guest is False
    assert c.address is not None
    assert c.address.street == "Chestnut Street 92, Apt 4"
    assert (c.address.city, c.address.province, c.address.zip) == ("Louisville", "Kentucky", "40202")
    assert (c.address.country, c.address.country_code) == ("United States", "US")


def test_customer_messy_values_are_kept_for_validation_not_raised_on() -> None:
    [(_, c)] = records("customers", "customer_messy.json")
    assert c.key == "9000000000000000001"
    assert c.email == "bob@@example.com"  # stripped, otherwise as is: the validator judges it
    assert c.first_name is None  # blank -> None
    assert c.last_name == "Åsa Ölander 🐟"
    assert c.full_name == "Åsa Ölander 🐟"
    assert c.accepts_marketing is None  # "yes" is not a bool and there is no consent object
    assert c.tags == ()
    assert c.created_at == "not a date"
    assert c.version == MIN_VERSION  # no usable timestamp: lowest version, still > "" (never seen)
    assert c.address is not None  # first dict address when none is default; the garbage entry is skipped
    assert c.address.city == "Zürich"
    assert c.address.country == "CH"  # code when the name is missing
    assert c.address.zip == "8001"


def test_customer_with_nothing_but_an_id() -> None:
    [(_, c)] = list(normalize("customers", {"id": 5}))
    assert c.key == "5"
    assert c.address is None and c.full_name is None and c.email is None


def test_customer_legacy_accepts_marketing_flag() -> None:
    [(_, c)] = list(normalize("customers", {"id": 6, "accepts_marketing": True}))
    assert c.accepts_marketing is True


def test_record_without_id_gets_a_stable_missing_key() -> None:
    raw = {"email": "x@example.com"}
    [(_, c)] = list(normalize("customers", raw))
    assert c.key.startswith(MISSING_KEY_PREFIX)
    assert c.key == record_key("customers", raw) == record_key("customers", dict(raw))


def test_unknown_stream_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown Shopify stream"):
        list(normalize("widgets", {}))


# -- products ----------------------------------------------------------------------


def test_product_and_one_variant_record_per_variant() -> None:
    out = records("products", "product_multi_variant.json")
    assert [e for e, _ in out] == ["product", "product_variant", "product_variant", "product_variant"]
    product = out[0][1]
    assert isinstance(product, Product)
    assert product.key == "632910392"
    assert product.variant_keys == ("808950810", "49148385", "39072856")
    assert product.status == "active"
    assert product.description is not None
    assert "<" not in product.description and "alert" not in product.description
    assert product.description.startswith("It's the small iPod with one very big idea: Video. Now the world's")
    assert "& more." in product.description
    assert "Second paragraph\nnew line" in product.description


def test_variant_fields() -> None:
    variants = [r for e, r in records("products", "product_multi_variant.json") if e == "product_variant"]
    pink, red, green = variants
    assert isinstance(pink, ProductVariant)
    assert pink.key == "808950810" and pink.product_key == "632910392"
    assert pink.display_name == "IPod Nano - 8GB - Pink"
    assert pink.sku == "IPOD2008PINK" and pink.barcode == "1234_pink"
    assert pink.price == "199.00"
    assert pink.status == "active"
    assert pink.description == variants[1].description  # the product's
    assert pink.inventory_quantity == 10
    # The variant changed after the product (2026-03-01T07:00Z > 2026-02-01T17:00Z): its version.
    assert pink.version == "2026-03-01T07:00:00.000000Z"
    # The product changed after this variant: the product's version, since display_name etc. come from it.
    assert red.version == "2026-02-01T17:00:00.000000Z"
    assert red.compare_at_price == "249.00"
    assert green.price == "199"  # a number tolerated, as text
    assert green.sku is None and green.inventory_quantity is None


def test_default_title_variant_is_named_after_the_product() -> None:
    out = records("products", "product_default_title.json")
    variant = out[1][1]
    assert variant.display_name == "Gift Card 🎁"
    assert variant.status == "draft"
    assert variant.description is None


def test_product_without_variants() -> None:
    out = list(normalize("products", {"id": 1, "title": "Lonely", "variants": None}))
    assert [e for e, _ in out] == ["product"]


# -- orders ------------------------------------------------------------------------


def test_order_with_customer_multi_currency_and_refunds() -> None:
    out = records("orders", "order_customer_multicurrency.json")
    assert [e for e, _ in out] == ["order", "order_line", "order_line", "refund", "refund"]
    order = out[0][1]
    assert isinstance(order, Order)
    assert order.key == "450789469" and order.name == "#1001" and order.number == 1001
    assert order.customer_key == "207119551" and order.is_guest is False
    assert order.currency == "USD" and order.presentment_currency == "EUR"
    assert order.total_price == "647.55" and order.presentment_total_price == "598.12"
    assert order.processed_at == "2026-03-05T01:30:00.000000Z"  # UTC
    assert order.processed_on == "2026-03-04"  # the shop's own day
    assert order.version == "2026-03-06T14:15:00.000000Z"
    # 199.64 USD (shop side of an EUR refund) + 5.5 USD; the failed and the void transactions do not count.
    assert order.total_refunded == "205.14"
    assert order.billing_address is not None and order.billing_address.street == "Chestnut Street 92"
    assert order.tags == ("imported", "priority")


def test_order_lines_and_refunds_carry_the_order() -> None:
    out = records("orders", "order_customer_multicurrency.json")
    order = out[0][1]
    lines = [r for e, r in out if e == "order_line"]
    refunds = [r for e, r in out if e == "refund"]
    first = lines[0]
    assert isinstance(first, OrderLine)
    assert first.key == "466157049" and first.order_key == "450789469"
    assert first.variant_key == "39072856" and first.product_key == "632910392"
    assert first.unit_price == "199.00" and first.presentment_unit_price == "183.80"
    assert first.quantity == 1 and first.is_custom is False
    assert all(x.version == order.version and x.updated_at == order.updated_at for x in lines)
    refund = refunds[0]
    assert isinstance(refund, Refund)
    assert refund.key == "509562969" and refund.order_key == "450789469"
    assert refund.amount == "199.64" and refund.currency == "USD"
    assert refund.line_keys == ("518995019",)
    assert refund.created_at == "2026-03-05T19:00:00.000000Z"
    assert refund.version == order.version
    assert refunds[1].amount == "5.50"


def test_guest_checkout_yields_a_guest_customer_first() -> None:
    out = records("orders", "order_guest_custom_item.json")
    assert [e for e, _ in out] == ["customer", "order", "order_line", "order_line"]
    guest, order = out[0][1], out[1][1]
    assert isinstance(guest, Customer)
    assert guest.key == "guest:guest.shopper@example.com"
    assert order.customer_key == guest.key and order.is_guest
    assert guest.is_guest and guest.source_id is None
    assert guest.version == order.version
    assert guest.email == "Guest.Shopper@Example.COM"
    assert (guest.first_name, guest.last_name, guest.full_name) == ("花子", "山田", "花子 山田")
    assert guest.company == "山田商店"
    assert guest.accepts_marketing is True
    assert guest.address is not None and guest.address.street == "1-1 Chiyoda, Room 101"
    assert guest.phone == "+81 3-1234-5678"


def test_offsets_east_of_utc_cross_midnight_backwards() -> None:
    order = records("orders", "order_guest_custom_item.json")[1][1]
    assert order.processed_at == "2026-03-07T14:59:59.000000Z"
    assert order.processed_on == "2026-03-07"
    assert order.version == "2026-03-07T15:10:00.000000Z"
    assert order.cancelled_at == "2026-03-07T15:10:00.000000Z"
    assert order.total_refunded == "0.00"


def test_custom_line_item_has_no_variant() -> None:
    lines = [r for e, r in records("orders", "order_guest_custom_item.json") if e == "order_line"]
    custom, gift = lines
    assert custom.variant_key is None and custom.product_key is None and custom.is_custom
    assert custom.title == "Gift wrapping (custom)"
    assert gift.quantity == 2  # "2" from a messy source becomes an int
    assert gift.is_gift_card


def test_guest_without_email_is_keyed_by_order() -> None:
    out = records("orders", "order_guest_no_email.json")
    guest, order = out[0][1], out[1][1]
    assert guest.key == "guest:order:1073459972" == order.customer_key
    assert guest.email is None
    assert guest.first_name == "Pat" and guest.full_name == "Pat"
    assert guest.address is not None and guest.address.city == "Springfield"  # shipping when no billing


def test_messy_order_values_pass_through() -> None:
    out = records("orders", "order_guest_no_email.json")
    order = out[1][1]
    line = out[2][1]
    assert line.quantity is None and line.unit_price == "abc"
    # The refund was in EUR with no shop-currency amount: unknown, not a wrong number.
    refund = out[3][1]
    assert refund.amount is None and order.total_refunded is None


def test_order_with_nothing() -> None:
    out = list(normalize("orders", {"id": 9}))
    assert [e for e, _ in out] == ["customer", "order"]
    assert out[0][1].key == "guest:order:9"
    assert out[1][1].lines == () and out[1][1].total_refunded == "0.00"


# -- keys and versions for the engine ----------------------------------------------


@pytest.mark.parametrize(
    ("stream", "name", "key", "version"),
    [
        ("customers", "customer_full.json", "207119551", "2026-03-04T15:11:12.000000Z"),
        ("products", "product_multi_variant.json", "632910392", "2026-02-01T17:00:00.000000Z"),
        ("orders", "order_customer_multicurrency.json", "450789469", "2026-03-06T14:15:00.000000Z"),
    ],
)
def test_record_key_and_version(stream: str, name: str, key: str, version: str) -> None:
    raw = load(name)
    assert record_key(stream, raw) == key
    assert record_version(stream, raw) == version


def test_versions_compare_as_strings_across_offsets() -> None:
    earlier = record_version("orders", {"updated_at": "2026-03-04T23:00:00-05:00"})  # 04:00Z on the 5th
    later = record_version("orders", {"updated_at": "2026-03-05T05:00:00+00:00"})
    assert earlier < later
    assert record_version("orders", {"updated_at": "2026-03-05T05:00:00.5Z"}) > later
