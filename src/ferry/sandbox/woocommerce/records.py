"""Builders of WooCommerce's record shapes (``wc/v3``, WooCommerce 9.x): the defaults every record carries.

Shared by the generator and the write endpoints so a record created through the API has exactly the
fields a generated one has. Field order follows the real responses (the REST docs' examples).
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ferry.sandbox.woocommerce.store import Record
from ferry.sandbox.woocommerce.times import StoreTime

WC_VERSION = "9.8.5"
CENT = Decimal("0.01")
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF", "JPY": "¥", "SEK": "kr", "PLN": "zł"}
ADDRESS_KEYS = ("first_name", "last_name", "company", "address_1", "address_2", "city", "postcode", "country",
                "state")


def money(value: Decimal | int | float | str) -> str:
    """WooCommerce's ``wc_format_decimal($v, dp)``: a string with the store's 2 decimals."""
    return str(Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP))


def dates(st: StoreTime, prefix: str, epoch: int | None) -> Record:
    local, gmt = st.pair(epoch)
    return {prefix: local, f"{prefix}_gmt": gmt}


def billing(**values: str) -> Record:
    return {**{k: values.get(k, "") for k in ADDRESS_KEYS}, "email": values.get("email", ""),
            "phone": values.get("phone", "")}


def shipping(**values: str) -> Record:
    # Shipping has carried a phone since WooCommerce 5.6; never an email.
    return {**{k: values.get(k, "") for k in ADDRESS_KEYS}, "phone": values.get("phone", "")}


def avatar_url(email: str) -> str:
    digest = hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}?s=96&d=mm&r=g"


def _prices(price: str, regular: str, sale: str) -> Record:
    """The price block products and variations share (no scheduled sale)."""
    return {"price": price, "regular_price": regular, "sale_price": sale,
            "date_on_sale_from": None, "date_on_sale_from_gmt": None,
            "date_on_sale_to": None, "date_on_sale_to_gmt": None,
            "on_sale": bool(sale)}


def customer(st: StoreTime, cid: int, created: int, modified: int | None, *, email: str, first_name: str,
             last_name: str, username: str, bill: Record, ship: Record, meta: list[Record]) -> Record:
    return {
        "id": cid,
        **dates(st, "date_created", created),
        **dates(st, "date_modified", modified),
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "role": "customer",
        "username": username,
        "billing": bill,
        "shipping": ship,
        "is_paying_customer": False,
        "avatar_url": avatar_url(email),
        "meta_data": meta,
    }


def product(st: StoreTime, pid: int, created: int, modified: int, *, name: str, slug: str, ptype: str, status: str,
            sku: str, regular: str, sale: str, stock: int | None, categories: list[Record],
            attributes: list[Record], meta: list[Record], base_url: str) -> Record:
    price = sale or regular
    return {
        "id": pid,
        "name": name,
        "slug": slug,
        "permalink": f"{base_url}/product/{slug}/",
        **dates(st, "date_created", created),
        **dates(st, "date_modified", modified),
        "type": ptype,
        "status": status,
        "featured": False,
        "catalog_visibility": "visible",
        "description": f"<p>{name}</p>",
        "short_description": "",
        "sku": sku,
        **_prices(price, regular, sale),
        "purchasable": status == "publish" and bool(price),
        "total_sales": 0,
        "virtual": False,
        "downloadable": False,
        "downloads": [],
        "download_limit": -1,
        "download_expiry": -1,
        "external_url": "",
        "button_text": "",
        "tax_status": "taxable",
        "tax_class": "",
        "manage_stock": stock is not None,
        "stock_quantity": stock,
        "backorders": "no",
        "backorders_allowed": False,
        "backordered": False,
        "low_stock_amount": None,
        "sold_individually": False,
        "weight": "",
        "dimensions": {"length": "", "width": "", "height": ""},
        "shipping_required": True,
        "shipping_taxable": True,
        "shipping_class": "",
        "shipping_class_id": 0,
        "reviews_allowed": True,
        "average_rating": "0",
        "rating_count": 0,
        "upsell_ids": [],
        "cross_sell_ids": [],
        "parent_id": 0,
        "purchase_note": "",
        "categories": categories,
        "brands": [],
        "tags": [],
        "images": [],
        "attributes": attributes,
        "default_attributes": [],
        "variations": [],
        "grouped_products": [],
        "menu_order": 0,
        "price_html": "",
        "related_ids": [],
        "meta_data": meta,
        "stock_status": "instock" if stock is None or stock > 0 else "outofstock",
        "has_options": ptype == "variable",
        "post_password": "",
        "global_unique_id": "",
    }


def variation(st: StoreTime, vid: int, parent: Record, created: int, modified: int, *, sku: str, regular: str,
              sale: str, stock: int | None, attributes: list[Record], menu_order: int) -> Record:
    price = sale or regular
    # wc_get_formatted_variation($v, flat=true, include_names=false): the options alone, ", "-joined.
    label = ", ".join(a["option"] for a in attributes)
    # Keys and order of WC_REST_Product_Variations_Controller::prepare_object_for_response (wc/v3).
    return {
        "id": vid,
        **dates(st, "date_created", created),
        **dates(st, "date_modified", modified),
        "description": "",
        "permalink": f"{parent['permalink']}?" + "&".join(
            f"attribute_{a['name'].lower()}={a['option']}" for a in attributes),
        "sku": sku,
        **_prices(price, regular, sale),
        "status": "publish",
        "purchasable": bool(price),
        "virtual": False,
        "downloadable": False,
        "downloads": [],
        "download_limit": -1,
        "download_expiry": -1,
        "tax_status": "taxable",
        "tax_class": "",
        "manage_stock": stock is not None,
        "stock_quantity": stock,
        "stock_status": "instock" if stock is None or stock > 0 else "outofstock",
        "backorders": "no",
        "backorders_allowed": False,
        "backordered": False,
        "low_stock_amount": None,
        "weight": "",
        "dimensions": {"length": "", "width": "", "height": ""},
        "shipping_class": "",
        "shipping_class_id": 0,
        "image": None,
        "attributes": attributes,
        "menu_order": menu_order,
        "meta_data": [],
        "name": label,
        "parent_id": parent["id"],
    }


def coupon(st: StoreTime, cid: int, created: int, modified: int, *, code: str, amount: str, discount_type: str,
           expires: int | None, usage_count: int, minimum: str, emails: list[str]) -> Record:
    return {
        "id": cid,
        "code": code,
        "amount": amount,
        "status": "publish",
        **dates(st, "date_created", created),
        **dates(st, "date_modified", modified),
        "discount_type": discount_type,
        "description": "",
        **dates(st, "date_expires", expires),
        "usage_count": usage_count,
        "individual_use": False,
        "product_ids": [],
        "excluded_product_ids": [],
        "usage_limit": None,
        "usage_limit_per_user": None,
        "limit_usage_to_x_items": None,
        "free_shipping": False,
        "product_categories": [],
        "excluded_product_categories": [],
        "exclude_sale_items": False,
        "minimum_amount": minimum,
        "maximum_amount": "0.00",
        "email_restrictions": emails,
        "used_by": [],
        "meta_data": [],
    }


def line_item(line_id: int, *, name: str, product_id: int, variation_id: int, quantity: int, unit: Decimal,
              tax_rate: Decimal, tax_rate_id: int, discount: Decimal, sku: str,
              meta: list[Record] | None = None, parent_name: str | None = None) -> Record:
    subtotal = unit * quantity
    total = subtotal - discount
    subtotal_tax = (subtotal * tax_rate).quantize(CENT, rounding=ROUND_HALF_UP)
    total_tax = (total * tax_rate).quantize(CENT, rounding=ROUND_HALF_UP)
    taxes = [{"id": tax_rate_id, "total": str(total_tax), "subtotal": str(subtotal_tax)}] if tax_rate else []
    return {
        "id": line_id,
        "name": name,
        "product_id": product_id,
        "variation_id": variation_id,
        "quantity": quantity,
        "tax_class": "",
        "subtotal": money(subtotal),
        "subtotal_tax": money(subtotal_tax),
        "total": money(total),
        "total_tax": money(total_tax),
        "taxes": taxes,
        "meta_data": meta or [],
        "sku": sku,
        # WooCommerce sends the unit price as a JSON number (total / quantity), not a string.
        "price": float(total / quantity) if quantity else 0.0,
        "image": {"id": "", "src": ""},
        "parent_name": parent_name,
    }


def order_totals(lines: list[Record], shipping_total: Decimal, shipping_tax: Decimal) -> dict[str, str]:
    """The order-level money fields, summed from its lines the way WooCommerce does."""
    subtotal = sum((Decimal(li["subtotal"]) for li in lines), Decimal(0))
    total = sum((Decimal(li["total"]) for li in lines), Decimal(0))
    cart_tax = sum((Decimal(li["total_tax"]) for li in lines), Decimal(0))
    discount = subtotal - total
    discount_tax = sum((Decimal(li["subtotal_tax"]) - Decimal(li["total_tax"]) for li in lines), Decimal(0))
    grand = total + cart_tax + shipping_total + shipping_tax
    return {
        "discount_total": money(discount),
        "discount_tax": money(discount_tax),
        "shipping_total": money(shipping_total),
        "shipping_tax": money(shipping_tax),
        "cart_tax": money(cart_tax),
        "total": money(grand),
        "total_tax": money(cart_tax + shipping_tax),
    }


def links(base: str, path: str, rid: int, extra: dict[str, Any] | None = None) -> Record:
    """``_links`` as WooCommerce adds them to every served record."""
    out: Record = {"self": [{"href": f"{base}/wp-json/wc/v3/{path}/{rid}"}],
                   "collection": [{"href": f"{base}/wp-json/wc/v3/{path}"}]}
    for rel, href in (extra or {}).items():
        out[rel] = [{"href": href}]
    return out
