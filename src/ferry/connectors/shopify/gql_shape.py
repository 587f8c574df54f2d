"""GraphQL Admin nodes in the raw shape the REST normalizer takes, and the node selections that carry it.

A record read over GraphQL is stored and normalized exactly as one read over REST: ``normalize.py`` is the
one place a Shopify record becomes canonical, and staging, dead letters and replay see one raw shape
whichever API read it. The conversion is the REST field names and forms: snake_case, numeric ids (from
the gids), lowercase enums, ``tags`` joined, money as two-decimal text, timestamps in the shop's offset.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ADDRESS = "firstName lastName company address1 address2 city province provinceCode country countryCodeV2 zip phone"
BAG = "shopMoney { amount currencyCode } presentmentMoney { amount currencyCode }"

CUSTOMER = f"""id firstName lastName email phone note tags state createdAt updatedAt amountSpent {{ currencyCode }}
emailMarketingConsent {{ marketingState }} defaultAddress {{ {ADDRESS} }}"""

PRODUCT = """id title vendor productType status handle descriptionHtml tags createdAt updatedAt
options(first: 3) { name position }"""
VARIANT = """id title sku barcode price compareAtPrice inventoryQuantity position createdAt updatedAt
selectedOptions { name value }"""

_ORDER_FIELDS = f"""id name number email phone customerAcceptsMarketing createdAt updatedAt processedAt closedAt
cancelledAt cancelReason test displayFinancialStatus displayFulfillmentStatus currencyCode presentmentCurrencyCode
totalPriceSet {{ {BAG} }} subtotalPriceSet {{ {BAG} }} totalTaxSet {{ {BAG} }} totalDiscountsSet {{ {BAG} }}
customer {{ id }} billingAddress {{ {ADDRESS} }} shippingAddress {{ {ADDRESS} }} tags note sourceName"""
# An order with its refunds (their line items are read after, ``REFUND_LINES``): what REST's order carries.
ORDER = f"""{_ORDER_FIELDS}
refunds {{ id createdAt updatedAt note totalRefundedSet {{ shopMoney {{ amount currencyCode }} }} }}"""
# An order for a pipeline that maps no refund: the refunds' sum alone, the order's own total (no refund read).
ORDER_WITHOUT_REFUNDS = f"""{_ORDER_FIELDS}
totalRefundedSet {{ shopMoney {{ amount currencyCode }} }}"""
LINE = f"""id name title variantTitle sku vendor quantity currentQuantity isGiftCard originalUnitPriceSet {{ {BAG} }}
totalDiscountSet {{ {BAG} }} variant {{ id }} product {{ id }}"""

# A refund's line items are a connection inside the order's refunds list, which a bulk query cannot hold
# (reference §4.2): they are read after, a refund at a time as an aliased ``node`` asking for as many as
# the order has lines (a refund line is one of them), many refunds a query up to the cost cap.
REFUND_LINES = "pageInfo { hasNextPage } nodes { lineItem { id } restockType }"


def refund_lines_bound(lines: list[dict[str, Any]]) -> int:
    """How many line items one refund of an order with these lines can hold, to size ``refundLineItems(first:)``:
    the lines whose current quantity fell below the ordered one (a refunded item is removed from the order),
    at least one. Only the size of the query rests on it: a refund with more is read again alone."""
    if not lines or any(not isinstance(li.get("currentQuantity"), int) for li in lines):
        return max(1, len(lines))
    return max(1, sum(1 for li in lines if li["currentQuantity"] < (li.get("quantity") or 0)))


def refund_lines_cost(first: int) -> int:
    """Requested cost of ``node(id:) { ... on Refund { refundLineItems(first:) {…} } }`` by the linear rule:
    the node 1, the connection 2 + first x (node 1 + lineItem 1)."""
    return 3 + 2 * first


_FULFILLMENT = {"FULFILLED": "fulfilled", "PARTIALLY_FULFILLED": "partial", "RESTOCKED": "restocked"}


def legacy_id(gid: Any) -> int | str | None:
    """``gid://shopify/Order/123`` -> 123 (REST's numeric id)."""
    if not isinstance(gid, str):
        return None
    tail = gid.rsplit("/", 1)[-1].split("?", 1)[0]
    return int(tail) if tail.isdigit() else tail


class Shaper:
    """Converts nodes of one shop (its time zone gives REST's local timestamps)."""

    def __init__(self, timezone: str | None) -> None:
        try:
            self.zone: dt.tzinfo = ZoneInfo(timezone) if timezone else dt.UTC
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = dt.UTC

    def time(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return moment.astimezone(self.zone).isoformat()

    def customer(self, node: dict[str, Any]) -> dict[str, Any]:
        consent = node.get("emailMarketingConsent")
        return {
            "id": legacy_id(node.get("id")),
            "email": node.get("email"),
            "first_name": node.get("firstName"),
            "last_name": node.get("lastName"),
            "phone": node.get("phone"),
            "note": node.get("note"),
            "tags": _tags(node.get("tags")),
            "state": _lower(node.get("state")),
            "currency": (node.get("amountSpent") or {}).get("currencyCode"),
            "email_marketing_consent": {"state": _lower(consent.get("marketingState"))} if consent else None,
            "default_address": _address(node.get("defaultAddress")),
            "created_at": self.time(node.get("createdAt")),
            "updated_at": self.time(node.get("updatedAt")),
        }

    def product(self, node: dict[str, Any], variants: list[dict[str, Any]]) -> dict[str, Any]:
        pid = legacy_id(node.get("id"))
        positions = {o.get("name"): o.get("position") for o in node.get("options") or ()}
        return {
            "id": pid,
            "title": node.get("title"),
            "vendor": node.get("vendor"),
            "product_type": node.get("productType"),
            "status": _lower(node.get("status")),
            "handle": node.get("handle"),
            "body_html": node.get("descriptionHtml"),
            "tags": _tags(node.get("tags")),
            "variants": [self.variant(v, pid, positions) for v in variants],
            "created_at": self.time(node.get("createdAt")),
            "updated_at": self.time(node.get("updatedAt")),
        }

    def variant(self, node: dict[str, Any], product_id: Any, positions: dict[Any, Any]) -> dict[str, Any]:
        out = {
            "id": legacy_id(node.get("id")),
            "product_id": product_id,
            "title": node.get("title"),
            "sku": node.get("sku"),
            "barcode": node.get("barcode"),
            "price": _money(node.get("price")),
            "compare_at_price": _money(node.get("compareAtPrice")),
            "inventory_quantity": node.get("inventoryQuantity"),
            "position": node.get("position"),
            "created_at": self.time(node.get("createdAt")),
            "updated_at": self.time(node.get("updatedAt")),
        }
        for option in node.get("selectedOptions") or ():
            position = positions.get(option.get("name"))
            if isinstance(position, int) and 1 <= position <= 3:
                out[f"option{position}"] = option.get("value")
        return out

    def order(
        self, node: dict[str, Any], lines: list[dict[str, Any]], refunds: dict[Any, dict[str, Any]]
    ) -> dict[str, Any]:
        """``refunds``: each refund's details (``refund_details``) by its gid."""
        oid = legacy_id(node.get("id"))
        customer = node.get("customer")
        total = _bag(node.get("totalPriceSet"))
        return {
            "id": oid,
            "name": node.get("name"),
            "order_number": node.get("number"),
            "customer": {"id": legacy_id(customer.get("id"))} if isinstance(customer, dict) else None,
            "email": node.get("email"),
            "phone": node.get("phone"),
            "buyer_accepts_marketing": node.get("customerAcceptsMarketing"),
            "currency": node.get("currencyCode"),
            "presentment_currency": node.get("presentmentCurrencyCode"),
            "financial_status": _lower(node.get("displayFinancialStatus")),
            "fulfillment_status": _FULFILLMENT.get(str(node.get("displayFulfillmentStatus"))),
            "cancelled_at": self.time(node.get("cancelledAt")),
            "cancel_reason": _lower(node.get("cancelReason")),
            "closed_at": self.time(node.get("closedAt")),
            "processed_at": self.time(node.get("processedAt")),
            "created_at": self.time(node.get("createdAt")),
            "updated_at": self.time(node.get("updatedAt")),
            "note": node.get("note"),
            "tags": _tags(node.get("tags")),
            "source_name": node.get("sourceName"),
            "test": node.get("test"),
            "total_price": _shop(total),
            "total_price_set": total,
            "subtotal_price_set": _bag(node.get("subtotalPriceSet")),
            "total_tax_set": _bag(node.get("totalTaxSet")),
            "total_discounts_set": _bag(node.get("totalDiscountsSet")),
            "billing_address": _address(node.get("billingAddress")),
            "shipping_address": _address(node.get("shippingAddress")),
            "line_items": [self.line(li) for li in lines],
        } | self._refunds(node, refunds)

    def _refunds(self, node: dict[str, Any], details: dict[Any, dict[str, Any]]) -> dict[str, Any]:
        """REST's ``refunds`` when the node carries them; else (``ORDER_WITHOUT_REFUNDS``: no refund read) no
        ``refunds`` at all, and their sum as ``total_refunded_set``, shop side, for ``total_refunded``."""
        if "refunds" in node or "totalRefundedSet" not in node:
            return {"refunds": [self.refund(r, details.get(r.get("id")) or {}) for r in node.get("refunds") or ()]}
        return {"total_refunded_set": {"shop_money": _money_v2((node.get("totalRefundedSet") or {}).get("shopMoney"))}}

    def line(self, node: dict[str, Any]) -> dict[str, Any]:
        price = _bag(node.get("originalUnitPriceSet"))
        discount = _bag(node.get("totalDiscountSet"))
        return {
            "id": legacy_id(node.get("id")),
            "variant_id": legacy_id((node.get("variant") or {}).get("id")),
            "product_id": legacy_id((node.get("product") or {}).get("id")),
            "sku": node.get("sku"),
            "title": node.get("title"),
            "variant_title": node.get("variantTitle"),
            "name": node.get("name"),
            "vendor": node.get("vendor"),
            "quantity": node.get("quantity"),
            "price": _shop(price),
            "price_set": price,
            "total_discount": _shop(discount),
            "total_discount_set": discount,
            "gift_card": node.get("isGiftCard"),
        }

    def refund(self, node: dict[str, Any], detail: dict[str, Any]) -> dict[str, Any]:
        lines = _nodes(detail.get("refundLineItems"))
        restock = [li.get("restockType") for li in lines]
        total = _money_v2((node.get("totalRefundedSet") or {}).get("shopMoney"))
        return {
            "id": legacy_id(node.get("id")),
            "created_at": self.time(node.get("createdAt")),
            "processed_at": self.time(node.get("updatedAt")),
            "note": node.get("note"),
            "restock": any(r not in (None, "NO_RESTOCK") for r in restock) if restock else None,
            "refund_line_items": [{"line_item_id": legacy_id((li.get("lineItem") or {}).get("id"))} for li in lines],
            # The refund's total over its successful transactions, as the one refund transaction REST's
            # normalizer sums (Refund.transactions is a connection a bulk query cannot reach either).
            "transactions": []
            if total is None
            else [{"kind": "refund", "status": "success", "amount_set": {"shop_money": total}}],
        }


def refund_ids(order_node: dict[str, Any]) -> list[str]:
    return [r["id"] for r in order_node.get("refunds") or () if isinstance(r, dict) and isinstance(r.get("id"), str)]


def _nodes(connection: Any) -> list[dict[str, Any]]:
    if not isinstance(connection, dict):
        return []
    items = connection.get("nodes")
    if items is None:
        items = [e.get("node") for e in connection.get("edges") or () if isinstance(e, dict)]
    return [n for n in items or () if isinstance(n, dict)]


def nodes(connection: Any) -> list[dict[str, Any]]:
    return _nodes(connection)


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _tags(value: Any) -> str:
    return ", ".join(str(t) for t in value) if isinstance(value, list) else (value or "")


# Currencies without a minor unit: REST writes their amounts with one decimal ("5613.0"), as GraphQL does.
_NO_MINOR_UNIT = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD", "UGX", "XAF", "XOF"})


def _money(value: Any, currency: Any = None) -> str | None:
    """GraphQL's Decimal (``"10.0"``) as REST's text: two decimals (``"10.00"``), more places kept; one for a
    currency without a minor unit."""
    if value is None or currency in _NO_MINOR_UNIT:
        return None if value is None else str(value)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return str(amount)


def _bag(bag: Any) -> dict[str, Any] | None:
    if not isinstance(bag, dict):
        return None
    return {
        side: _money_v2(bag.get(key))
        for side, key in (("shop_money", "shopMoney"), ("presentment_money", "presentmentMoney"))
    }


def _money_v2(money: Any) -> dict[str, Any] | None:
    if not isinstance(money, dict):
        return None
    return {
        "amount": _money(money.get("amount"), money.get("currencyCode")),
        "currency_code": money.get("currencyCode"),
    }


def _shop(bag: dict[str, Any] | None) -> str | None:
    shop = (bag or {}).get("shop_money")
    return shop.get("amount") if isinstance(shop, dict) else None


def _address(node: Any) -> dict[str, Any] | None:
    if not isinstance(node, dict):
        return None
    return {
        "first_name": node.get("firstName"),
        "last_name": node.get("lastName"),
        "company": node.get("company"),
        "address1": node.get("address1"),
        "address2": node.get("address2"),
        "city": node.get("city"),
        "province": node.get("province"),
        "province_code": node.get("provinceCode"),
        "country": node.get("country"),
        "country_code": node.get("countryCodeV2"),
        "zip": node.get("zip"),
        "phone": node.get("phone"),
    }
