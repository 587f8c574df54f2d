"""What a competent user's Shopify -> Salesforce script shares: connect, page Shopify, map to Salesforce.

Written the way such scripts are written: ShopifyAPI to page the store (every record in memory),
plain functions mapping Shopify JSON to the same Salesforce objects, external ids and fields as
ferry's example pipeline, and simple-salesforce to write. It does not validate: Salesforce rejects
what it rejects, and the script counts and reports those failures.

Configuration: the same environment variables as examples/shopify-to-salesforce.yml.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import requests
import shopify
from pyactiveresource.connection import ClientError
from simple_salesforce import Salesforce

API_VERSION = "2025-07"
SF_VERSION = "62.0"
Record = dict[str, Any]


# -- connections -----------------------------------------------------------------------


def connect_shopify() -> None:
    # urllib (under pyactiveresource) trusts the CA file named by SSL_CERT_FILE.
    if os.environ.get("SHOPIFY_CA_FILE"):
        os.environ["SSL_CERT_FILE"] = os.environ["SHOPIFY_CA_FILE"]
    shopify.ShopifyResource.set_site(f"{os.environ['SHOPIFY_URL']}/admin/api/{API_VERSION}")
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": os.environ["SHOPIFY_ACCESS_TOKEN"]})


def connect_salesforce() -> Salesforce:
    """JWT bearer login, then a simple-salesforce client on the returned instance."""
    login = os.environ["SALESFORCE_LOGIN_URL"]
    session = requests.Session()
    session.trust_env = False
    session.verify = os.environ.get("SALESFORCE_CA_FILE") or True
    claims = {"iss": os.environ["SALESFORCE_CLIENT_ID"], "sub": os.environ["SALESFORCE_USERNAME"], "aud": login,
              "exp": int(time.time()) + 180}
    assertion = jwt.encode(claims, Path(os.environ["SALESFORCE_PRIVATE_KEY_FILE"]).read_text(), algorithm="RS256")
    resp = session.post(f"{login}/services/oauth2/token",
                        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
    resp.raise_for_status()
    body = resp.json()
    return Salesforce(instance_url=body["instance_url"], session_id=body["access_token"], version=SF_VERSION,
                      session=session)


def standard_pricebook(sf: Salesforce) -> str:
    return str(sf.query("SELECT Id FROM Pricebook2 WHERE IsStandard = true")["records"][0]["Id"])


# -- reading Shopify -------------------------------------------------------------------


def _throttled(call: Callable[[], Any]) -> Any:
    """Shopify answers 429 when the leaky bucket is full: wait as long as it says, then try again."""
    for _ in range(100):
        try:
            return call()
        except ClientError as exc:
            if exc.code != 429:
                raise
            time.sleep(float(exc.response.headers.get("Retry-After", "1")))
    raise RuntimeError("still throttled after 100 tries")


def read_all(resource: type[shopify.ShopifyResource], **params: Any) -> Iterator[Record]:
    page = _throttled(lambda: resource.find(limit=250, **params))
    while True:
        for item in page:
            yield item.to_dict()
        if not page.has_next_page():
            return
        page = _throttled(page.next_page)


def read_store() -> tuple[list[Record], list[Record], list[Record]]:
    customers = list(read_all(shopify.Customer))
    products = list(read_all(shopify.Product))
    orders = list(read_all(shopify.Order, status="any"))
    return customers, products, orders


# -- mapping ---------------------------------------------------------------------------


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip() or None


def _cut(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else value


def _street(a: Record | None) -> str | None:
    return ", ".join(p for p in (_s(a.get("address1")), _s(a.get("address2"))) if p) or None if a else None


def _country(a: Record | None) -> str | None:
    return (_s(a.get("country")) or _s(a.get("country_code"))) if a else None


def _get(a: Record | None, name: str) -> str | None:
    return _s(a.get(name)) if a else None


def guest_key(order: Record) -> str:
    email = _s(order.get("email"))
    return f"guest:{email.lower()}" if email else f"guest:order:{order['id']}"


def customer_key(order: Record) -> str:
    customer = order.get("customer")
    return str(customer["id"]) if customer and customer.get("id") else guest_key(order)


def people(customers: list[Record], orders: list[Record]) -> list[dict[str, Any]]:
    """One person per customer, plus one per guest checkout (its newest order's details)."""
    out: dict[str, dict[str, Any]] = {}
    for c in customers:
        addr = c.get("default_address") or (c.get("addresses") or [None])[0]
        consent = (c.get("email_marketing_consent") or {}).get("state")
        out[str(c["id"])] = {"key": str(c["id"]), "first": _s(c.get("first_name")), "last": _s(c.get("last_name")),
                             "email": _s(c.get("email")), "phone": _s(c.get("phone")) or _get(addr, "phone"),
                             "addr": addr, "note": _s(c.get("note")), "subscribed": consent == "subscribed"}
    newest: dict[str, str] = {}
    for o in orders:
        if o.get("customer"):
            continue
        key = guest_key(o)
        if key in newest and newest[key] >= _utc_text(o["updated_at"]):
            continue
        newest[key] = _utc_text(o["updated_at"])
        addr = o.get("billing_address") or o.get("shipping_address")
        out[key] = {"key": key, "first": _get(addr, "first_name"), "last": _get(addr, "last_name"),
                    "email": _s(o.get("email")), "phone": _s(o.get("phone")) or _get(addr, "phone"), "addr": addr,
                    "note": None, "subscribed": bool(o.get("buyer_accepts_marketing"))}
    return list(out.values())


def _utc_text(ts: str) -> str:
    from datetime import UTC, datetime

    return datetime.fromisoformat(ts).astimezone(UTC).isoformat()


def account(p: dict[str, Any]) -> Record:
    a = p["addr"]
    name = " ".join(x for x in (p["first"], p["last"]) if x) or _get(a, "company") or p["email"] \
        or f"Shopify customer {p['key']}"
    return {"Shopify_Customer_Id__c": p["key"], "Name": name, "Phone": p["phone"], "BillingStreet": _street(a),
            "BillingCity": _get(a, "city"), "BillingState": _get(a, "province") or _get(a, "province_code"),
            "BillingPostalCode": _get(a, "zip"), "BillingCountry": _country(a),
            "Description": _cut(p["note"], 32000)}


def contact(p: dict[str, Any]) -> Record:
    a = p["addr"]
    return {"Shopify_Customer_Id__c": p["key"], "Account": {"Shopify_Customer_Id__c": p["key"]},
            "FirstName": p["first"], "LastName": p["last"] or p["first"], "Email": p["email"], "Phone": p["phone"],
            "MailingCity": _get(a, "city"), "MailingCountry": _country(a), "HasOptedOutOfEmail": not p["subscribed"]}


_TAG = re.compile(r"<[^>]+>")


def variants(products: list[Record]) -> Iterator[tuple[Record, Record]]:
    for product in products:
        for v in product.get("variants") or []:
            yield product, v


def product2(product: Record, v: Record) -> Record:
    title, vtitle = _s(product.get("title")), _s(v.get("title"))
    name = title if not vtitle or vtitle == "Default Title" else f"{title} - {vtitle}"
    body = _s(_TAG.sub("", product.get("body_html") or "").replace("&amp;", "&"))
    return {"Shopify_Product_Id__c": str(v["id"]), "Name": name, "ProductCode": _s(v.get("sku")),
            "Description": _cut(body, 4000), "IsActive": product.get("status") == "active"}


def pricebook_entry(v: Record, pricebook_id: str) -> Record:
    return {"Shopify_Variant_Id__c": str(v["id"]), "Product2": {"Shopify_Product_Id__c": str(v["id"])},
            "Pricebook2Id": pricebook_id, "UnitPrice": float(v["price"]), "IsActive": True}


def order(o: Record, pricebook_id: str) -> Record:
    bill = o.get("billing_address")
    refunded = sum(float(t["amount"]) for r in o.get("refunds") or [] for t in r.get("transactions") or []
                   if t.get("kind") == "refund" and t.get("status") == "success")
    from datetime import UTC, datetime

    processed = datetime.fromisoformat(o.get("processed_at") or o["created_at"]).astimezone(UTC)
    return {"Shopify_Order_Id__c": str(o["id"]), "Account": {"Shopify_Customer_Id__c": customer_key(o)},
            "Pricebook2Id": pricebook_id, "Name": _s(o.get("name")), "EffectiveDate": processed.date().isoformat(),
            "Status": "Draft", "Description": _cut(_s(o.get("note")), 32000), "BillingStreet": _street(bill),
            "BillingCity": _get(bill, "city"), "BillingPostalCode": _get(bill, "zip"),
            "BillingCountry": _country(bill), "Shopify_Financial_Status__c": _s(o.get("financial_status")),
            "Shopify_Presentment_Currency__c": _s(o.get("presentment_currency")),
            "Shopify_Total_Price__c": float(o["total_price"]), "Shopify_Total_Refunded__c": round(refunded, 2),
            "Shopify_Cancelled_At__c": o.get("cancelled_at")}


def order_item(o: Record, line: Record) -> Record:
    return {"Shopify_Line_Item_Id__c": str(line["id"]), "Order": {"Shopify_Order_Id__c": str(o["id"])},
            "PricebookEntry": {"Shopify_Variant_Id__c": str(line.get("variant_id"))},
            "Quantity": float(line["quantity"]), "UnitPrice": float(line["price"]),
            "Description": _cut(_s(line.get("title")), 255)}


def order_lines(orders: list[Record]) -> Iterator[tuple[Record, Record]]:
    for o in orders:
        for line in o.get("line_items") or []:
            yield o, line


def report(written: dict[str, int], failed: dict[str, int], started: float) -> None:
    total = sum(written.values())
    print(f"wrote {total} records in {time.monotonic() - started:.1f} s; written {written}; failed {failed}")
