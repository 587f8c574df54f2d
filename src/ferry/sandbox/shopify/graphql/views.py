"""GraphQL views of the REST records: the same dicts the REST API serves, read through Shopify's GraphQL names.

Nothing is copied: each view wraps a stored record, so a REST write shows in the next GraphQL read and a
GraphQL mutation (which writes through the same ``writes`` functions) shows in REST. graphql-core's default
resolver reads a view's attributes; methods taking ``(info, **args)`` serve fields with arguments.

Wire forms follow Shopify's GraphQL (reference §3): ids are GIDs, ``legacyResourceId`` the REST id as a
string, timestamps UTC with ``Z``, enums upper case, ``tags`` a list, ``UnsignedInt64`` a string, and money
``MoneyBag { shopMoney presentmentMoney }`` of ``MoneyV2 { amount currencyCode }`` with ``Decimal`` amounts
written as GraphQL writes them (``"10.0"``, ``"41.94"``; REST writes ``"10.00"``).
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from functools import lru_cache
from typing import Any

from graphql import GraphQLResolveInfo

from ferry.sandbox.shopify.graphql.connections import Connection, list_connection
from ferry.sandbox.shopify.graphql.context import LOCATION_ID, Context
from ferry.sandbox.shopify.ids import gid
from ferry.sandbox.shopify.store import Record
from ferry.sandbox.shopify.subscriptions import ENUM_OF_TOPIC
from ferry.sandbox.shopify.tables import Table
from ferry.sandbox.shopify.times import parse_or_none

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_FULFILLMENT = {None: "UNFULFILLED", "fulfilled": "FULFILLED", "partial": "PARTIALLY_FULFILLED",
                "restocked": "RESTOCKED"}
LOCATION = {"id": gid("Location", LOCATION_ID), "legacyResourceId": str(LOCATION_ID), "name": "Shop location",
            "isActive": True}


# ---------------------------------------------------------------------- scalars
@lru_cache(maxsize=200_000)
def utc(value: str | None) -> str | None:
    """A REST timestamp (any offset) as GraphQL's DateTime: the same instant in UTC, ``Z``."""
    epoch = parse_or_none(value)
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@lru_cache(maxsize=100_000)
def decimal_text(amount: str | None) -> str | None:
    """GraphQL's Decimal form of a REST amount: trailing zeros dropped, one decimal kept (``"10.00"`` -> ``"10.0"``)."""
    if amount is None:
        return None
    d = Decimal(str(amount))
    text = format(d.normalize(), "f")
    return text if "." in text else f"{text}.0"


def money(amount: Any, currency: str) -> dict[str, Any]:
    return {"amount": decimal_text(str(amount)), "currencyCode": currency}


def bag(rest_set: Record | None) -> dict[str, Any] | None:
    """A REST ``*_set`` ({shop_money, presentment_money}) as a MoneyBag."""
    if not rest_set:
        return None
    shop, pres = rest_set["shop_money"], rest_set["presentment_money"]
    return {"shopMoney": money(shop["amount"], shop["currency_code"]),
            "presentmentMoney": money(pres["amount"], pres["currency_code"])}


def scaled_bag(order: Record, shop_amount: Decimal) -> dict[str, Any]:
    """A MoneyBag for an amount the REST record holds only in shop money: the presentment side at the order's rate."""
    total = order["total_price_set"]
    shop_total = Decimal(total["shop_money"]["amount"])
    pres_total = Decimal(total["presentment_money"]["amount"])
    rate = pres_total / shop_total if shop_total else Decimal(1)
    digits = len(total["presentment_money"]["amount"].partition(".")[2])
    pres = (shop_amount * rate).quantize(Decimal(1).scaleb(-digits)) if digits else (shop_amount * rate).quantize(1)
    return {"shopMoney": money(shop_amount, total["shop_money"]["currency_code"]),
            "presentmentMoney": money(pres, total["presentment_money"]["currency_code"])}


def multiplied_bag(rest_set: Record, qty: int) -> dict[str, Any]:
    shop, pres = rest_set["shop_money"], rest_set["presentment_money"]
    return {"shopMoney": money(Decimal(shop["amount"]) * qty, shop["currency_code"]),
            "presentmentMoney": money(Decimal(pres["amount"]) * qty, pres["currency_code"])}


def tag_list(tags: Any) -> list[str]:
    if isinstance(tags, list):
        return [str(t) for t in tags]
    return [t.strip() for t in str(tags or "").split(",") if t.strip()]


def upper(value: Any) -> str | None:
    return None if value is None else str(value).upper()


def address(rec: Record | None, fallback_id: str) -> dict[str, Any] | None:
    if not rec:
        return None
    aid = f"{gid('MailingAddress', rec['id'])}?model_name=CustomerAddress" if rec.get("id") else fallback_id
    area = ", ".join(p for p in (rec.get("city"), rec.get("province_code"), rec.get("country")) if p)
    return {
        "id": aid, "firstName": rec.get("first_name"), "lastName": rec.get("last_name"), "name": rec.get("name"),
        "company": rec.get("company"), "address1": rec.get("address1"), "address2": rec.get("address2"),
        "city": rec.get("city"), "province": rec.get("province"), "provinceCode": rec.get("province_code"),
        "country": rec.get("country"), "countryCodeV2": rec.get("country_code"), "countryCode": rec.get("country_code"),
        "zip": rec.get("zip"), "phone": rec.get("phone"), "latitude": rec.get("latitude"),
        "longitude": rec.get("longitude"), "formattedArea": area or None, "coordinatesValidated": False,
    }


def tax_lines(lines: list[Record] | None) -> list[dict[str, Any]]:
    return [{"title": t["title"], "rate": t.get("rate"),
             "ratePercentage": None if t.get("rate") is None else round(t["rate"] * 100, 4),
             "priceSet": bag(t["price_set"]), "channelLiable": t.get("channel_liable")} for t in lines or ()]


def attributes(pairs: list[Record] | None) -> list[dict[str, Any]]:
    return [{"key": str(p.get("name")), "value": None if p.get("value") is None else str(p["value"])}
            for p in pairs or ()]


class View:
    typename = ""

    def __init__(self, rec: Record, ctx: Context) -> None:
        self.rec = rec
        self.ctx = ctx

    @property
    def legacyResourceId(self) -> str:
        return str(self.rec["id"])


class Deferred:
    """A view of a record another one names by id (an order's ``customer``, a line item's ``product`` and
    ``variant``), whose record is looked up only when a field beyond its id is read. The reads ask
    ``customer { id }``, ``product { id }`` and ``variant { id }``; in the compact store a lookup decodes the
    whole record (zlib + JSON): two thirds of the records a bulk orders page decoded were only named. Mixed in
    before the record's own view class."""

    typename: str  # the view class's own (an annotation only: a value here would shadow it)
    _LOADED: tuple[str, ...] = ("rec",)  # the attributes ``_load`` sets

    def __init__(self, rid: int, table: Table, ctx: Context) -> None:
        self._rid, self._table, self.ctx = rid, table, ctx

    @property
    def id(self) -> str:
        return gid(self.typename, self._rid)

    @property
    def legacyResourceId(self) -> str:
        return str(self._rid)

    def __getattr__(self, name: str) -> Any:
        if name not in self._LOADED:
            return super().__getattr__(name)  # type: ignore[misc]  # the view class mixed in after this one
        self._load()
        return self.__dict__[name]

    def _load(self) -> None:
        # Made after an existence check in the same synchronous page run, so the record is still there.
        rec = self._table.peek(self._rid)
        if rec is None:
            raise LookupError(f"{self._table.resource} {self._rid} vanished during a page")
        self.rec: Record = rec


# ---------------------------------------------------------------------- customers
class CustomerView(View):
    typename = "Customer"

    @property
    def id(self) -> str:
        return gid("Customer", self.rec["id"])

    def __getattr__(self, name: str) -> Any:
        simple = _CUSTOMER_SIMPLE.get(name)
        if simple is None:
            raise AttributeError(name)
        return simple(self.rec)

    @property
    def displayName(self) -> str:
        r = self.rec
        name = " ".join(p for p in (r.get("first_name"), r.get("last_name")) if p)
        return name or r.get("email") or r.get("phone") or ""

    @property
    def lastOrder(self) -> OrderView | None:
        oid = self.rec.get("last_order_id")
        order = self.ctx.state.table("orders").peek(oid) if isinstance(oid, int) else None
        return None if order is None else OrderView(order, self.ctx)

    def addresses(self, info: GraphQLResolveInfo, first: int | None = None) -> list[dict[str, Any]]:
        out = [address(a, "") for a in self.rec.get("addresses") or ()]
        return [a for a in out if a is not None][: first if first is not None else None]

    @property
    def defaultEmailAddress(self) -> dict[str, Any] | None:
        email = self.rec.get("email")
        if not email:
            return None
        consent = self.rec.get("email_marketing_consent") or {}
        return {"emailAddress": email, "marketingState": upper(consent.get("state")) or "NOT_SUBSCRIBED",
                "marketingOptInLevel": upper(consent.get("opt_in_level")),
                "marketingUpdatedAt": utc(consent.get("consent_updated_at")),
                "validFormat": bool(_EMAIL.match(email))}

    @property
    def defaultPhoneNumber(self) -> dict[str, Any] | None:
        phone = self.rec.get("phone")
        if not phone:
            return None
        consent = self.rec.get("sms_marketing_consent") or {}
        return {"phoneNumber": phone, "marketingState": upper(consent.get("state")) or "NOT_SUBSCRIBED"}

    @property
    def emailMarketingConsent(self) -> dict[str, Any] | None:
        c = self.rec.get("email_marketing_consent")
        return None if not c else {"marketingState": upper(c.get("state")),
                                   "marketingOptInLevel": upper(c.get("opt_in_level")),
                                   "consentUpdatedAt": utc(c.get("consent_updated_at"))}

    @property
    def smsMarketingConsent(self) -> dict[str, Any] | None:
        c = self.rec.get("sms_marketing_consent")
        return None if not c else {"marketingState": upper(c.get("state")),
                                   "marketingOptInLevel": upper(c.get("opt_in_level")) or "UNKNOWN",
                                   "consentUpdatedAt": utc(c.get("consent_updated_at")),
                                   "consentCollectedFrom": upper(c.get("consent_collected_from"))}


_CUSTOMER_SIMPLE: dict[str, Any] = {
    "firstName": lambda r: r.get("first_name"), "lastName": lambda r: r.get("last_name"),
    "email": lambda r: r.get("email"), "phone": lambda r: r.get("phone"), "note": lambda r: r.get("note"),
    "tags": lambda r: tag_list(r.get("tags")), "state": lambda r: upper(r.get("state")) or "DISABLED",
    "verifiedEmail": lambda r: bool(r.get("verified_email")),
    "validEmailAddress": lambda r: bool(r.get("email") and _EMAIL.match(r["email"])),
    "taxExempt": lambda r: bool(r.get("tax_exempt")), "taxExemptions": lambda r: list(r.get("tax_exemptions") or []),
    "locale": lambda r: "en", "createdAt": lambda r: utc(r.get("created_at")),
    "updatedAt": lambda r: utc(r.get("updated_at")), "numberOfOrders": lambda r: str(r.get("orders_count") or 0),
    "amountSpent": lambda r: money(r.get("total_spent") or "0", r.get("currency") or "USD"),
    "defaultAddress": lambda r: address(r.get("default_address"), ""),
}


class DeferredCustomerView(Deferred, CustomerView):
    """An order's customer, its record read only for a field beyond its id."""


# ---------------------------------------------------------------------- products
class ProductView(View):
    typename = "Product"

    @property
    def id(self) -> str:
        return gid("Product", self.rec["id"])

    def __getattr__(self, name: str) -> Any:
        simple = _PRODUCT_SIMPLE.get(name)
        if simple is None:
            raise AttributeError(name)
        return simple(self.rec)

    def options(self, info: GraphQLResolveInfo, first: int | None = None) -> list[dict[str, Any]]:
        return [{"id": gid("ProductOption", o["id"]), "name": o["name"], "position": o["position"],
                 "values": list(o.get("values") or [])} for o in self.rec.get("options") or ()][:first]

    def variants(self, info: GraphQLResolveInfo, **args: Any) -> Connection:
        variants = list(self.rec.get("variants") or ())
        if args.get("sortKey") == "ID":
            variants.sort(key=lambda v: v["id"])
        views = [VariantView(v, self.rec, self.ctx) for v in variants]
        return list_connection(info, args, views, lambda v: v.rec["id"], bulk=self.ctx.in_bulk)

    @property
    def variantsCount(self) -> dict[str, Any]:
        return {"count": len(self.rec.get("variants") or ()), "precision": "EXACT"}

    @property
    def totalInventory(self) -> int:
        return sum(int(v.get("inventory_quantity") or 0) for v in self.rec.get("variants") or ())

    @property
    def tracksInventory(self) -> bool:
        return any(v.get("inventory_management") == "shopify" for v in self.rec.get("variants") or ())

    @property
    def hasOnlyDefaultVariant(self) -> bool:
        variants = list(self.rec.get("variants") or ())
        return len(variants) == 1 and variants[0].get("title") == "Default Title"


_PRODUCT_SIMPLE: dict[str, Any] = {
    "title": lambda r: r.get("title") or "", "handle": lambda r: r.get("handle") or "",
    "status": lambda r: upper(r.get("status")) or "ACTIVE", "vendor": lambda r: r.get("vendor") or "",
    "productType": lambda r: r.get("product_type") or "", "tags": lambda r: tag_list(r.get("tags")),
    "descriptionHtml": lambda r: r.get("body_html") or "", "createdAt": lambda r: utc(r.get("created_at")),
    "updatedAt": lambda r: utc(r.get("updated_at")), "publishedAt": lambda r: utc(r.get("published_at")),
    "templateSuffix": lambda r: r.get("template_suffix"), "isGiftCard": lambda r: False,
    "onlineStoreUrl": lambda r: None,
}


class DeferredProductView(Deferred, ProductView):
    """A line item's product, its record read only for a field beyond its id."""


class VariantView(View):
    typename = "ProductVariant"

    def __init__(self, rec: Record, product: Record, ctx: Context) -> None:
        super().__init__(rec, ctx)
        self.product_rec = product

    @property
    def id(self) -> str:
        return gid("ProductVariant", self.rec["id"])

    def __getattr__(self, name: str) -> Any:
        simple = _VARIANT_SIMPLE.get(name)
        if simple is None:
            raise AttributeError(name)
        return simple(self.rec)

    @property
    def displayName(self) -> str:
        return f"{self.product_rec.get('title')} - {self.rec.get('title')}"

    @property
    def availableForSale(self) -> bool:
        in_stock = int(self.rec.get("inventory_quantity") or 0) > 0 or self.rec.get("inventory_policy") == "continue"
        return self.product_rec.get("status") == "active" and in_stock

    @property
    def selectedOptions(self) -> list[dict[str, str]]:
        out = []
        for n, option in enumerate(self.product_rec.get("options") or (), start=1):
            value = self.rec.get(f"option{n}")
            if value is not None:
                out.append({"name": option["name"], "value": value})
        return out

    @property
    def product(self) -> ProductView:
        return ProductView(self.product_rec, self.ctx)

    @property
    def inventoryItem(self) -> InventoryItemView:
        return InventoryItemView(self.rec, self.product_rec, self.ctx)


class DeferredVariantView(Deferred, VariantView):
    """A line item's variant, its product's record read only for a field beyond its id."""

    _LOADED = ("rec", "product_rec")

    def __init__(self, vid: int, pid: int, products: Table, ctx: Context) -> None:
        super().__init__(vid, products, ctx)
        self._pid = pid

    def _load(self) -> None:
        product = self._table.peek(self._pid)
        variant = next((v for v in (product or {}).get("variants") or () if v["id"] == self._rid), None)
        if product is None or variant is None:
            raise LookupError(f"variant {self._rid} vanished during a page")
        self.rec, self.product_rec = variant, product


_VARIANT_SIMPLE: dict[str, Any] = {
    "title": lambda r: r.get("title") or "", "sku": lambda r: r.get("sku"), "barcode": lambda r: r.get("barcode"),
    "price": lambda r: r.get("price") or "0.00", "compareAtPrice": lambda r: r.get("compare_at_price"),
    "position": lambda r: r.get("position") or 1, "inventoryQuantity": lambda r: r.get("inventory_quantity"),
    "inventoryPolicy": lambda r: upper(r.get("inventory_policy")) or "DENY",
    "taxable": lambda r: bool(r.get("taxable", True)), "createdAt": lambda r: utc(r.get("created_at")),
    "updatedAt": lambda r: utc(r.get("updated_at")),
}


class InventoryItemView(VariantView):
    """An inventory item is one variant's stock: the REST variant's ``inventory_item_id`` and quantity."""

    typename = "InventoryItem"

    @property
    def id(self) -> str:
        return gid("InventoryItem", self.rec["inventory_item_id"])

    @property
    def legacyResourceId(self) -> str:
        return str(self.rec["inventory_item_id"])

    @property
    def tracked(self) -> bool:
        return self.rec.get("inventory_management") == "shopify"

    @property
    def requiresShipping(self) -> bool:
        return bool(self.rec.get("requires_shipping", True))

    @property
    def measurement(self) -> dict[str, Any]:
        grams = self.rec.get("grams")
        weight = None if grams is None else {"unit": "GRAMS", "value": float(grams)}
        return {"id": gid("InventoryItemMeasurement", self.rec["inventory_item_id"]), "weight": weight}

    @property
    def variant(self) -> VariantView:
        return VariantView(self.rec, self.product_rec, self.ctx)

    def inventoryLevel(self, info: GraphQLResolveInfo, locationId: str) -> InventoryLevelView | None:
        return InventoryLevelView(self.rec, self.product_rec, self.ctx) if locationId == LOCATION["id"] else None

    def inventoryLevels(self, info: GraphQLResolveInfo, **args: Any) -> Connection:
        level = InventoryLevelView(self.rec, self.product_rec, self.ctx)
        return list_connection(info, args, [level], lambda _: LOCATION_ID, bulk=self.ctx.in_bulk)


class InventoryLevelView(VariantView):
    typename = "InventoryLevel"

    @property
    def id(self) -> str:
        return f"{gid('InventoryLevel', LOCATION_ID)}?inventory_item_id={self.rec['inventory_item_id']}"

    @property
    def item(self) -> InventoryItemView:
        return InventoryItemView(self.rec, self.product_rec, self.ctx)

    @property
    def location(self) -> dict[str, Any]:
        return LOCATION

    def quantities(self, info: GraphQLResolveInfo, names: list[str]) -> list[dict[str, Any]]:
        # The store keeps one number per variant: available = on_hand, nothing committed, incoming or reserved.
        qty = int(self.rec.get("inventory_quantity") or 0)
        return [{"id": f"gid://shopify/InventoryQuantity/{LOCATION_ID}?inventory_item_id="
                       f"{self.rec['inventory_item_id']}&name={name}",
                 "name": name, "quantity": qty if name in ("available", "on_hand") else 0,
                 "updatedAt": utc(self.rec.get("updated_at"))} for name in names]


# ---------------------------------------------------------------------- orders
class OrderView(View):
    typename = "Order"

    @property
    def id(self) -> str:
        return gid("Order", self.rec["id"])

    def __getattr__(self, name: str) -> Any:
        simple = _ORDER_SIMPLE.get(name)
        if simple is None:
            raise AttributeError(name)
        return simple(self.rec)

    @property
    def customer(self) -> CustomerView | None:
        embedded = self.rec.get("customer")
        customers = self.ctx.state.table("customers")
        if not embedded or not customers.has(embedded["id"]):
            return None
        return DeferredCustomerView(embedded["id"], customers, self.ctx)

    @property
    def totalRefundedSet(self) -> dict[str, Any]:
        amount = sum((Decimal(t["amount"]) for r in self.rec.get("refunds") or () for t in r.get("transactions") or ()
                      if t.get("kind") == "refund" and t.get("status") == "success"), Decimal(0))
        return scaled_bag(self.rec, amount)

    @property
    def totalOutstandingSet(self) -> dict[str, Any]:
        return scaled_bag(self.rec, Decimal(self.rec.get("total_outstanding") or "0"))

    def lineItems(self, info: GraphQLResolveInfo, **args: Any) -> Connection:
        views = [LineItemView(li, self.rec, self.ctx) for li in self.rec.get("line_items") or ()]
        return list_connection(info, args, views, lambda v: v.rec["id"], bulk=self.ctx.in_bulk)

    def shippingLines(self, info: GraphQLResolveInfo, **args: Any) -> Connection:
        lines = [s for s in self.rec.get("shipping_lines") or ()
                 if args.get("includeRemovals") or not s.get("is_removed")]
        views = [{"id": gid("ShippingLine", s["id"]), "title": s.get("title") or "", "code": s.get("code"),
                  "source": s.get("source"), "isRemoved": bool(s.get("is_removed")),
                  "originalPriceSet": bag(s.get("price_set")), "discountedPriceSet": bag(s.get("discounted_price_set")),
                  "taxLines": tax_lines(s.get("tax_lines")), "_id": s["id"]} for s in lines]
        return list_connection(info, args, views, lambda v: v["_id"], bulk=self.ctx.in_bulk)

    def refunds(self, info: GraphQLResolveInfo, first: int | None = None) -> list[RefundView]:
        return [RefundView(r, self.rec, self.ctx) for r in self.rec.get("refunds") or ()][:first]

    def transactions(self, info: GraphQLResolveInfo, first: int | None = None, **_: Any) -> list[TransactionView]:
        payment = payment_transaction(self.rec)
        out = [TransactionView(payment, self.rec, self.ctx)]
        for refund in self.rec.get("refunds") or ():
            out += [TransactionView(t, self.rec, self.ctx) for t in refund.get("transactions") or ()]
        return out[:first]


def payment_transaction(order: Record) -> Record:
    """The order's payment, which the REST store does not hold as a record: derived from the order.

    Its id is the ``parent_id`` of the order's refund transactions when there are any (so refunds point at it),
    else the order id x 10 + 1 (outside the range of stored transaction ids)."""
    refunds = [t for r in order.get("refunds") or () for t in r.get("transactions") or ()]
    tid = refunds[0]["parent_id"] if refunds and refunds[0].get("parent_id") else order["id"] * 10 + 1
    financial = order.get("financial_status")
    kind = "authorization" if financial in ("authorized", "voided") else "sale"
    return {"id": tid, "kind": kind, "status": "pending" if financial == "pending" else "success",
            "amount": order.get("total_price") or "0.00", "gateway": (order.get("payment_gateway_names") or [None])[0],
            "created_at": order.get("processed_at") or order.get("created_at"),
            "processed_at": order.get("processed_at"), "test": bool(order.get("test")), "error_code": None,
            "authorization": None, "payment_id": f"{order.get('name')}.1", "parent_id": None}


_ORDER_SIMPLE: dict[str, Any] = {
    "name": lambda r: r.get("name") or "", "email": lambda r: r.get("email"), "phone": lambda r: r.get("phone"),
    "number": lambda r: r.get("order_number") or r.get("number") or 0,
    "customerAcceptsMarketing": lambda r: bool(r.get("buyer_accepts_marketing")),
    "createdAt": lambda r: utc(r.get("created_at")), "updatedAt": lambda r: utc(r.get("updated_at")),
    "processedAt": lambda r: utc(r.get("processed_at") or r.get("created_at")),
    "closedAt": lambda r: utc(r.get("closed_at")), "cancelledAt": lambda r: utc(r.get("cancelled_at")),
    "cancelReason": lambda r: upper(r.get("cancel_reason")), "closed": lambda r: r.get("closed_at") is not None,
    "confirmed": lambda r: bool(r.get("confirmed", True)), "test": lambda r: bool(r.get("test")),
    "taxesIncluded": lambda r: bool(r.get("taxes_included")),
    "fullyPaid": lambda r: r.get("financial_status") in ("paid", "partially_refunded", "refunded"),
    "unpaid": lambda r: r.get("financial_status") in ("pending", "authorized", "voided"),
    "displayFinancialStatus": lambda r: upper(r.get("financial_status")),
    "displayFulfillmentStatus": lambda r: _FULFILLMENT.get(r.get("fulfillment_status"), "UNFULFILLED"),
    "currencyCode": lambda r: r.get("currency") or "USD",
    "presentmentCurrencyCode": lambda r: r.get("presentment_currency") or r.get("currency") or "USD",
    "totalPriceSet": lambda r: bag(r.get("total_price_set")),
    "currentTotalPriceSet": lambda r: bag(r.get("current_total_price_set")),
    "subtotalPriceSet": lambda r: bag(r.get("subtotal_price_set")),
    "currentSubtotalPriceSet": lambda r: bag(r.get("current_subtotal_price_set")),
    "totalDiscountsSet": lambda r: bag(r.get("total_discounts_set")),
    "totalTaxSet": lambda r: bag(r.get("total_tax_set")),
    "currentTotalTaxSet": lambda r: bag(r.get("current_total_tax_set")),
    "totalShippingPriceSet": lambda r: bag(r.get("total_shipping_price_set")),
    "billingAddress": lambda r: address(r.get("billing_address"), f"{gid('MailingAddress', r['id'] * 10 + 1)}"
                                        "?model_name=Address"),
    "shippingAddress": lambda r: address(r.get("shipping_address"), f"{gid('MailingAddress', r['id'] * 10 + 2)}"
                                         "?model_name=Address"),
    "tags": lambda r: tag_list(r.get("tags")), "note": lambda r: r.get("note"),
    "poNumber": lambda r: r.get("po_number"),
    "customAttributes": lambda r: attributes(r.get("note_attributes")),
    "discountCodes": lambda r: [d["code"] for d in r.get("discount_codes") or ()],
    "sourceName": lambda r: r.get("source_name"),
    "paymentGatewayNames": lambda r: list(r.get("payment_gateway_names") or []),
    "taxLines": lambda r: tax_lines(r.get("tax_lines")),
}


class LineItemView(View):
    typename = "LineItem"

    def __init__(self, rec: Record, order: Record, ctx: Context) -> None:
        super().__init__(rec, ctx)
        self.order = order

    @property
    def id(self) -> str:
        return gid("LineItem", self.rec["id"])

    def __getattr__(self, name: str) -> Any:
        simple = _LINE_SIMPLE.get(name)
        if simple is None:
            raise AttributeError(name)
        return simple(self.rec)

    def taxLines(self, info: GraphQLResolveInfo, first: int | None = None) -> list[dict[str, Any]]:
        return tax_lines(self.rec.get("tax_lines"))[:first]

    @property
    def variant(self) -> VariantView | None:
        vid = self.rec.get("variant_id")
        pid = self.ctx.bulk.variant_products().get(vid) if isinstance(vid, int) else None
        if not isinstance(vid, int) or pid is None:
            return None
        return DeferredVariantView(vid, pid, self.ctx.state.table("products"), self.ctx)

    @property
    def product(self) -> ProductView | None:
        pid = self.rec.get("product_id")
        products = self.ctx.state.table("products")
        if not isinstance(pid, int) or not products.has(pid):
            return None
        return DeferredProductView(pid, products, self.ctx)


_LINE_SIMPLE: dict[str, Any] = {
    "name": lambda r: r.get("name") or "", "title": lambda r: r.get("title") or "",
    "variantTitle": lambda r: r.get("variant_title"), "sku": lambda r: r.get("sku"),
    "vendor": lambda r: r.get("vendor"),
    "quantity": lambda r: r.get("quantity") or 0, "currentQuantity": lambda r: r.get("current_quantity") or 0,
    "refundableQuantity": lambda r: r.get("current_quantity") or 0,
    "unfulfilledQuantity": lambda r: r.get("fulfillable_quantity") or 0,
    "nonFulfillableQuantity": lambda r: (r.get("quantity") or 0) - (r.get("current_quantity") or 0),
    "requiresShipping": lambda r: bool(r.get("requires_shipping")), "taxable": lambda r: bool(r.get("taxable")),
    "isGiftCard": lambda r: bool(r.get("gift_card")), "originalUnitPriceSet": lambda r: bag(r.get("price_set")),
    "discountedUnitPriceSet": lambda r: bag(r.get("price_set")),
    "originalTotalSet": lambda r: multiplied_bag(r["price_set"], r.get("quantity") or 0),
    "totalDiscountSet": lambda r: bag(r.get("total_discount_set")),
    "customAttributes": lambda r: attributes(r.get("properties")),
}


class RefundView(View):
    typename = "Refund"

    def __init__(self, rec: Record, order: Record, ctx: Context) -> None:
        super().__init__(rec, ctx)
        self.order_rec = order

    @property
    def id(self) -> str:
        return gid("Refund", self.rec["id"])

    @property
    def note(self) -> str | None:
        return self.rec.get("note")

    @property
    def createdAt(self) -> str | None:
        return utc(self.rec.get("created_at"))

    @property
    def updatedAt(self) -> str | None:
        return utc(self.rec.get("processed_at") or self.rec.get("created_at"))

    @property
    def order(self) -> OrderView:
        return OrderView(self.order_rec, self.ctx)

    @property
    def totalRefundedSet(self) -> dict[str, Any]:
        amount = sum((Decimal(t["amount"]) for t in self.rec.get("transactions") or () if t.get("status") == "success"),
                     Decimal(0))
        return scaled_bag(self.order_rec, amount)

    def refundLineItems(self, info: GraphQLResolveInfo, **args: Any) -> Connection:
        views = [RefundLineItemView(r, self.order_rec, self.ctx) for r in self.rec.get("refund_line_items") or ()]
        return list_connection(info, args, views, lambda v: v.rec["id"], bulk=self.ctx.in_bulk)

    def transactions(self, info: GraphQLResolveInfo, **args: Any) -> Connection:
        views = [TransactionView(t, self.order_rec, self.ctx) for t in self.rec.get("transactions") or ()]
        return list_connection(info, args, views, lambda v: v.rec["id"], bulk=self.ctx.in_bulk)


class RefundLineItemView(View):
    typename = "RefundLineItem"

    def __init__(self, rec: Record, order: Record, ctx: Context) -> None:
        super().__init__(rec, ctx)
        self.order_rec = order

    @property
    def id(self) -> str:
        return gid("RefundLineItem", self.rec["id"])

    @property
    def lineItem(self) -> LineItemView:
        li = next((x for x in self.order_rec.get("line_items") or () if x["id"] == self.rec.get("line_item_id")),
                  self.rec.get("line_item") or {})
        return LineItemView(li, self.order_rec, self.ctx)

    @property
    def quantity(self) -> int:
        return int(self.rec.get("quantity") or 0)

    @property
    def restockType(self) -> str:
        return upper(self.rec.get("restock_type")) or "NO_RESTOCK"

    @property
    def restocked(self) -> bool:
        return self.rec.get("restock_type") not in (None, "no_restock")

    @property
    def location(self) -> dict[str, Any] | None:
        return LOCATION if self.rec.get("location_id") == LOCATION_ID else None

    @property
    def subtotalSet(self) -> dict[str, Any] | None:
        return bag(self.rec.get("subtotal_set"))

    @property
    def totalTaxSet(self) -> dict[str, Any] | None:
        return bag(self.rec.get("total_tax_set"))


class TransactionView(View):
    typename = "OrderTransaction"

    def __init__(self, rec: Record, order: Record, ctx: Context) -> None:
        super().__init__(rec, ctx)
        self.order_rec = order

    @property
    def id(self) -> str:
        return gid("OrderTransaction", self.rec["id"])

    def __getattr__(self, name: str) -> Any:
        simple = _TRANSACTION_SIMPLE.get(name)
        if simple is None:
            raise AttributeError(name)
        return simple(self.rec)

    @property
    def amountSet(self) -> dict[str, Any]:
        return scaled_bag(self.order_rec, Decimal(self.rec.get("amount") or "0"))

    @property
    def parentTransaction(self) -> TransactionView | None:
        if self.rec.get("parent_id") is None:
            return None
        payment = payment_transaction(self.order_rec)
        return TransactionView(payment, self.order_rec, self.ctx) if payment["id"] == self.rec["parent_id"] else None


_TRANSACTION_SIMPLE: dict[str, Any] = {
    "kind": lambda r: upper(r.get("kind")), "status": lambda r: upper(r.get("status")) or "UNKNOWN",
    "gateway": lambda r: r.get("gateway"),
    "formattedGateway": lambda r: None if r.get("gateway") is None else r["gateway"].replace("_", " ").title(),
    "amount": lambda r: r.get("amount"), "createdAt": lambda r: utc(r.get("created_at")),
    "processedAt": lambda r: utc(r.get("processed_at")), "test": lambda r: bool(r.get("test")),
    "errorCode": lambda r: r.get("error_code"), "authorizationCode": lambda r: r.get("authorization"),
    "paymentId": lambda r: r.get("payment_id"),
}


# ---------------------------------------------------------------------- webhook subscriptions
class WebhookSubscriptionView(View):
    typename = "WebhookSubscription"

    @property
    def id(self) -> str:
        return gid("WebhookSubscription", self.rec["id"])

    @property
    def topic(self) -> str:
        return ENUM_OF_TOPIC[self.rec["topic"]]

    @property
    def format(self) -> str:
        return str(self.rec.get("format") or "json").upper()

    @property
    def includeFields(self) -> list[str]:
        return list(self.rec.get("fields") or [])

    @property
    def metafieldNamespaces(self) -> list[str]:
        return list(self.rec.get("metafield_namespaces") or [])

    @property
    def filter(self) -> str | None:
        return self.rec.get("filter")

    @property
    def apiVersion(self) -> dict[str, Any]:
        v = self.rec.get("api_version") or ""
        return {"handle": v, "displayName": v, "supported": True}

    @property
    def createdAt(self) -> str | None:
        return utc(self.rec.get("created_at"))

    @property
    def updatedAt(self) -> str | None:
        return utc(self.rec.get("updated_at"))

    @property
    def callbackUrl(self) -> str:
        return str(self.rec["address"])

    @property
    def uri(self) -> str:
        return str(self.rec["address"])

    @property
    def endpoint(self) -> dict[str, Any]:
        return {"__typename": "WebhookHttpEndpoint", "callbackUrl": self.rec["address"]}


def shop_view(ctx: Context) -> dict[str, Any]:
    shop = ctx.state.shop
    return {"__typename": "Shop", "id": gid("Shop", 1), "name": shop, "myshopifyDomain": f"{shop}.myshopify.com",
            "currencyCode": "USD", "ianaTimezone": "America/New_York", "email": f"owner@{shop}.example"}
