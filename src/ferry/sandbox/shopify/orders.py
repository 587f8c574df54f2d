"""Building Shopify order JSON: line items, totals, money bags, fulfillments and refunds.

Used by the generator (100,000s of orders, so this is written for speed: integer cents,
dict literals, shared sub-objects) and by ``POST orders.json`` in the sandbox.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ferry.sandbox.shopify import pools
from ferry.sandbox.shopify.ids import IdSequence, gid
from ferry.sandbox.shopify.money import Presentment, dec
from ferry.sandbox.shopify.times import fmt_local as fmt

Record = dict[str, Any]

SHOP_DOMAIN_SUFFIX = ".myshopify.com"


@dataclass(slots=True)
class LineSpec:
    """One line to put on an order. ``kind``: catalog, variant_deleted, product_deleted or custom."""

    kind: str
    title: str
    price_cents: int
    quantity: int
    product: Record | None = None
    variant: Record | None = None
    grams: int = 0


@dataclass(slots=True)
class Lifecycle:
    """What happened to an order after checkout, with epoch times; ``None`` = did not happen."""

    financial_status: str = "paid"
    fulfilled_at: int | None = None
    partially_fulfilled: bool = False
    closed_at: int | None = None
    cancelled_at: int | None = None
    cancel_reason: str | None = None
    refund_at: int | None = None
    refund_full: bool = False


@dataclass(slots=True)
class OrderInput:
    id: int
    number: int
    created: int
    offset: int
    email: str | None
    phone: str | None
    customer: Record | None
    billing: Record | None
    shipping: Record | None
    lines: list[LineSpec]
    presentment: Presentment
    tax_bp: int
    lifecycle: Lifecycle
    note: str | None = None
    tags: str = ""
    discount_code: str | None = None
    gateway: str = "shopify_payments"
    token: str = ""


def _subscribed(customer: Record | None) -> bool:
    consent = customer.get("email_marketing_consent") if customer else None
    return bool(consent and consent.get("state") == "subscribed")


class OrderBuilder:
    """Turns an ``OrderInput`` into the REST JSON of an order, drawing child ids from shared sequences."""

    def __init__(self, rnd: random.Random, ids: dict[str, IdSequence], shop: str) -> None:
        self._rnd = rnd
        self._ids = ids
        self._shop = shop

    def build(self, o: OrderInput) -> tuple[Record, int]:
        """Return ``(order, updated_epoch_floor)``: the latest event time the order's updated_at must cover."""
        pres = o.presentment
        lines = [self._line_item(spec, pres, o.tax_bp) for spec in o.lines]
        line_total = sum(spec.price_cents * spec.quantity for spec in o.lines)
        line_tax = sum((s.price_cents * s.quantity * o.tax_bp + 5000) // 10000 for s in o.lines)
        discount = line_total // 10 if o.discount_code else 0
        subtotal = line_total - discount
        shipping = 0 if subtotal >= 7500 or not lines else 599
        total = subtotal + line_tax + shipping
        grams = sum(spec.grams * spec.quantity for spec in o.lines)
        life = o.lifecycle
        latest = o.created
        created_at = fmt(o.created, o.offset)

        fulfillments: list[Record] = []
        if life.fulfilled_at is not None:
            fulfillments.append(self._fulfillment(o, lines, life.fulfilled_at))
            latest = max(latest, life.fulfilled_at)
            status = "partial" if life.partially_fulfilled else "fulfilled"
            for li in lines if not life.partially_fulfilled else lines[:1]:
                li["fulfillment_status"] = "fulfilled"
                li["fulfillable_quantity"] = 0
        else:
            status = None

        refunds: list[Record] = []
        refunded = refunded_tax = 0
        if life.refund_at is not None:
            refund, refunded, refunded_tax = self._refund(o, lines, life.refund_at, full=life.refund_full, total=total)
            refunds.append(refund)
            latest = max(latest, life.refund_at)
            if life.refund_full and life.cancelled_at is not None:
                status = "restocked" if status is None else status
        for t in (life.cancelled_at, life.closed_at):
            if t is not None:
                latest = max(latest, t)

        voided = life.financial_status == "voided"
        cur_total = 0 if voided else total - refunded
        cur_tax = 0 if voided else line_tax - refunded_tax
        cur_subtotal = 0 if voided else max(0, subtotal - (refunded - refunded_tax))
        outstanding = total if life.financial_status in ("pending", "authorized") else 0
        total_set = pres.money_set(total)
        order: Record = {
            "id": o.id,
            "admin_graphql_api_id": gid("Order", o.id),
            "app_id": 580111,
            "browser_ip": None,
            "buyer_accepts_marketing": _subscribed(o.customer),
            "cancel_reason": life.cancel_reason,
            "cancelled_at": None if life.cancelled_at is None else fmt(life.cancelled_at, o.offset),
            "cart_token": None,
            "checkout_id": o.id + 17_000_000_000_000,
            "checkout_token": o.token[::-1],
            "closed_at": None if life.closed_at is None else fmt(life.closed_at, o.offset),
            "confirmation_number": o.token[:9].upper(),
            "confirmed": True,
            "contact_email": o.email,
            "created_at": created_at,
            "currency": "USD",
            "current_subtotal_price": dec(cur_subtotal),
            "current_subtotal_price_set": pres.money_set(cur_subtotal),
            "current_total_discounts": dec(discount),
            "current_total_discounts_set": pres.money_set(discount),
            "current_total_duties_set": None,
            "current_total_price": dec(cur_total),
            "current_total_price_set": pres.money_set(cur_total),
            "current_total_tax": dec(cur_tax),
            "current_total_tax_set": pres.money_set(cur_tax),
            "customer_locale": "en",
            "discount_codes": [] if not o.discount_code else
            [{"code": o.discount_code, "amount": dec(discount), "type": "percentage"}],
            "email": o.email,
            "estimated_taxes": False,
            "financial_status": life.financial_status,
            "fulfillment_status": status,
            "landing_site": None,
            "location_id": None,
            "name": f"#{o.number}",
            "note": o.note,
            "note_attributes": [],
            "number": o.number - 1000,
            "order_number": o.number,
            "order_status_url": f"https://{self._shop}{SHOP_DOMAIN_SUFFIX}/{o.id}/orders/{o.token}/authenticate",
            "original_total_duties_set": None,
            "payment_gateway_names": [o.gateway],
            "phone": o.phone,
            "po_number": None,
            "presentment_currency": pres.code,
            "processed_at": created_at,
            "reference": None,
            "referring_site": None,
            "source_identifier": None,
            "source_name": "web",
            "subtotal_price": dec(subtotal),
            "subtotal_price_set": pres.money_set(subtotal),
            "tags": o.tags,
            "tax_exempt": False,
            "tax_lines": self._tax_lines(line_tax, o.tax_bp, pres),
            "taxes_included": False,
            "test": False,
            "token": o.token,
            "total_discounts": dec(discount),
            "total_discounts_set": pres.money_set(discount),
            "total_line_items_price": dec(line_total),
            "total_line_items_price_set": pres.money_set(line_total),
            "total_outstanding": dec(outstanding),
            "total_price": dec(total),
            "total_price_set": total_set,
            "total_shipping_price_set": pres.money_set(shipping),
            "total_tax": dec(line_tax),
            "total_tax_set": pres.money_set(line_tax),
            "total_tip_received": "0.00",
            "total_weight": grams,
            "updated_at": created_at,
            "user_id": None,
            "billing_address": o.billing,
            "customer": o.customer,
            "discount_applications": [] if not o.discount_code else [{
                "target_type": "line_item", "type": "discount_code", "value": "10.0", "value_type": "percentage",
                "allocation_method": "across", "target_selection": "all", "code": o.discount_code}],
            "fulfillments": fulfillments,
            "line_items": lines,
            "payment_terms": None,
            "refunds": refunds,
            "shipping_address": o.shipping,
            "shipping_lines": [] if not lines else [self._shipping_line(shipping, pres)],
        }
        return order, latest

    def _line_item(self, spec: LineSpec, pres: Presentment, tax_bp: int) -> Record:
        lid = self._ids["line_item"].next()
        variant = spec.variant
        product = spec.product
        catalog = spec.kind == "catalog"
        variant_title = variant["title"] if variant is not None and variant["title"] != "Default Title" else None
        tax = (spec.price_cents * spec.quantity * tax_bp + 5000) // 10000
        return {
            "id": lid,
            "admin_graphql_api_id": gid("LineItem", lid),
            "attributed_staffs": [],
            "current_quantity": spec.quantity,
            "fulfillable_quantity": spec.quantity,
            "fulfillment_service": "manual",
            "fulfillment_status": None,
            "gift_card": False,
            "grams": spec.grams,
            "name": spec.title if variant_title is None else f"{spec.title} - {variant_title}",
            "price": dec(spec.price_cents),
            "price_set": pres.money_set(spec.price_cents),
            "product_exists": spec.kind in ("catalog", "variant_deleted"),
            # Shopify nulls the references when the variant (or its product) is deleted later.
            "product_id": product["id"] if product is not None and spec.kind != "product_deleted" else None,
            "properties": [],
            "quantity": spec.quantity,
            "requires_shipping": spec.kind != "custom",
            "sku": variant.get("sku") if variant is not None else None,
            "taxable": True,
            "title": spec.title,
            "total_discount": "0.00",
            "total_discount_set": pres.money_set(0),
            "variant_id": variant["id"] if catalog and variant is not None else None,
            "variant_inventory_management": "shopify" if catalog else None,
            "variant_title": variant_title,
            "vendor": product["vendor"] if product is not None else None,
            "tax_lines": self._tax_lines(tax, tax_bp, pres),
            "duties": [],
            "discount_allocations": [],
        }

    @staticmethod
    def _tax_lines(cents: int, tax_bp: int, pres: Presentment) -> list[Record]:
        if tax_bp == 0:
            return []
        return [{"channel_liable": False, "price": dec(cents), "price_set": pres.money_set(cents),
                 "rate": tax_bp / 10000, "title": "Sales Tax" if tax_bp < 1500 else "VAT"}]

    def _shipping_line(self, cents: int, pres: Presentment) -> Record:
        sid = self._ids["shipping_line"].next()
        title = "Free Shipping" if cents == 0 else "Standard"
        return {"id": sid, "carrier_identifier": None, "code": title, "discounted_price": dec(cents),
                "discounted_price_set": pres.money_set(cents), "is_removed": False, "phone": None,
                "price": dec(cents), "price_set": pres.money_set(cents), "requested_fulfillment_service_id": None,
                "source": "shopify", "title": title, "tax_lines": [], "discount_allocations": []}

    def _fulfillment(self, o: OrderInput, lines: list[Record], at: int) -> Record:
        fid = self._ids["fulfillment"].next()
        carrier, url = pools.CARRIERS[int(self._rnd.random() * len(pools.CARRIERS))]
        number = f"1Z{fid % 10**12:012d}"
        ts = fmt(at, o.offset)
        return {"id": fid, "admin_graphql_api_id": gid("Fulfillment", fid), "created_at": ts,
                "location_id": 65_540_000_001,
                "name": f"#{o.number}.1", "order_id": o.id, "origin_address": None, "receipt": {},
                "service": "manual", "shipment_status": "delivered", "status": "success",
                "tracking_company": carrier, "tracking_number": number, "tracking_numbers": [number],
                "tracking_url": url + number, "tracking_urls": [url + number], "updated_at": ts,
                # Shopify repeats the fulfilled line items here; sharing the dicts costs nothing to build.
                "line_items": lines if not o.lifecycle.partially_fulfilled else lines[:1]}

    def _refund(
        self, o: OrderInput, lines: list[Record], at: int, *, full: bool, total: int
    ) -> tuple[Record, int, int]:
        """Return the refund JSON, the refunded amount (cents, incl. tax) and the refunded tax."""
        rid = self._ids["refund"].next()
        pres = o.presentment
        picked = list(zip(o.lines, lines, strict=True)) if full else [(o.lines[-1], lines[-1])]
        items: list[Record] = []
        refunded = refunded_tax = 0
        for spec, li in picked:
            qty = spec.quantity if full else max(1, spec.quantity // 2)
            sub = spec.price_cents * qty
            tax = (sub * o.tax_bp + 5000) // 10000
            refunded += sub + tax
            refunded_tax += tax
            li["current_quantity"] = spec.quantity - qty
            rli = self._ids["refund_line_item"].next()
            items.append({"id": rli, "line_item_id": li["id"], "location_id": 65_540_000_001, "quantity": qty,
                          "restock_type": "cancel" if o.lifecycle.cancelled_at is not None else "return",
                          "subtotal": sub / 100, "subtotal_set": pres.money_set(sub), "total_tax": tax / 100,
                          "total_tax_set": pres.money_set(tax), "line_item": li})
        if full:
            refunded = total  # a full refund also returns shipping and rounding leftovers
        tid = self._ids["transaction"].next()
        ts = fmt(at, o.offset)
        transaction = {"id": tid, "admin_graphql_api_id": gid("OrderTransaction", tid), "amount": dec(refunded),
                       "authorization": None, "created_at": ts, "currency": "USD", "device_id": None,
                       "error_code": None, "gateway": o.gateway, "kind": "refund", "location_id": None,
                       "message": "Refunded", "order_id": o.id, "parent_id": tid - 1 - int(self._rnd.random() * 999),
                       "payment_id": f"#{o.number}.2", "processed_at": ts, "receipt": {}, "source_name": "web",
                       "status": "success", "test": False, "user_id": None}
        refund = {"id": rid, "admin_graphql_api_id": gid("Refund", rid), "created_at": ts,
                  "note": "Customer returned item" if not full else "Full refund", "order_id": o.id,
                  "processed_at": ts, "restock": True, "total_duties_set": pres.money_set(0), "user_id": None,
                  "order_adjustments": [], "transactions": [transaction], "refund_line_items": items,
                  "duties": [], "additional_fees": [], "refund_shipping_lines": []}
        return refund, refunded, refunded_tax
