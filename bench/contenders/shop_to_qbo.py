"""Shopify -> QuickBooks Online as python-quickbooks' README shows it: one object, one ``save()`` call.

The script a competent user writes from the library's docs: intuit-oauth's ``AuthClient`` refreshes the
access token (and the rotating refresh token, kept in the token file), python-quickbooks' object classes
are filled from the Shopify JSON (read with ShopifyAPI, as bench/contenders/shop_to_sf.py does) and saved
one by one: Customers, then Items (one per variant), then Invoices whose lines point at them. It maps the
same fields as examples/shopify-to-quickbooks.yml (DisplayName "<name> (<key>)", Item Name "<variant id>
<title>", DocNumber the order name) and, as such scripts do, waits and retries when QuickBooks answers 429
(Intuit's 500 requests a minute); other faults are counted as failed records and the script moves on.

Configuration: the environment of examples/shopify-to-quickbooks.yml (QUICKBOOKS_* and SHOPIFY_*).
Usage: python bench/contenders/shop_to_qbo.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from intuitlib.client import AuthClient
from quickbooks import QuickBooks
from quickbooks.exceptions import QuickbooksException
from quickbooks.objects.base import Address, EmailAddress, PhoneNumber
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shop_to_sf import _get, _s, connect_shopify, customer_key, people, read_store, variants

MINOR_VERSION = 75


def connect_quickbooks() -> QuickBooks:
    """intuit-oauth pointed at the discovery document, python-quickbooks at the API (as in their docs)."""
    if os.environ.get("QUICKBOOKS_CA_FILE"):
        os.environ["REQUESTS_CA_BUNDLE"] = os.environ["QUICKBOOKS_CA_FILE"]
    api = os.environ["QUICKBOOKS_API_URL"]
    token_file = Path(os.environ["QUICKBOOKS_TOKEN_FILE"])
    refresh = token_file.read_text().strip() if token_file.is_file() else os.environ["QUICKBOOKS_REFRESH_TOKEN"]
    auth = AuthClient(os.environ["QUICKBOOKS_CLIENT_ID"], os.environ["QUICKBOOKS_CLIENT_SECRET"],
                      "https://127.0.0.1/callback", f"{api}/.well-known/openid_configuration",
                      refresh_token=refresh, realm_id=os.environ["QUICKBOOKS_REALM_ID"])
    auth.refresh()
    token_file.write_text(auth.refresh_token)  # it may have rotated
    qb = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token,
                    company_id=os.environ["QUICKBOOKS_REALM_ID"], minorversion=MINOR_VERSION)
    qb.api_url_v3 = f"{api}/v3"
    return qb


def save(obj: Any, qb: QuickBooks) -> Any:
    """``obj.save(qb=qb)``, waiting out a 429 (ThrottleExceeded, code 3001) as the docs' users learn to."""
    for _ in range(60):
        try:
            return obj.save(qb=qb)
        except QuickbooksException as exc:
            if "3001" not in str(exc.error_code) and "Throttle" not in str(exc.message):
                raise
            time.sleep(2)
    raise RuntimeError("still throttled after 60 tries")


def _name(value: str, limit: int) -> str:
    return value.replace(":", "-").replace("\t", " ").replace("\n", " ")[:limit]


def customer(p: dict[str, Any]) -> Customer:
    a = p["addr"]
    full = " ".join(x for x in (p["first"], p["last"]) if x) or _get(a, "company") or p["email"] or "Customer"
    c = Customer()
    c.DisplayName = _name(f"{full} ({p['key']})", 500)
    c.GivenName, c.FamilyName = (p["first"] or "")[:100] or None, (p["last"] or "")[:100] or None
    c.CompanyName = (_get(a, "company") or "")[:100] or None
    if p["email"]:
        c.PrimaryEmailAddr = EmailAddress()
        c.PrimaryEmailAddr.Address = p["email"]
    if p["phone"]:
        c.PrimaryPhone = PhoneNumber()
        c.PrimaryPhone.FreeFormNumber = p["phone"][:30]
    if a:
        c.BillAddr = Address()
        c.BillAddr.Line1, c.BillAddr.City = _get(a, "address1"), _get(a, "city")
        c.BillAddr.PostalCode, c.BillAddr.Country = _get(a, "zip"), _get(a, "country")
    c.Notes = (p["note"] or "")[:2000] or None
    return c


def item(product: dict[str, Any], v: dict[str, Any], income: Any) -> Item:
    title, vtitle = _s(product.get("title")) or "", _s(v.get("title"))
    it = Item()
    it.Name = _name(f"{v['id']} {title if not vtitle or vtitle == 'Default Title' else f'{title} - {vtitle}'}", 100)
    it.Sku, it.Type, it.UnitPrice = _s(v.get("sku")), "NonInventory", float(v["price"])
    it.IncomeAccountRef = income
    return it


def invoice(o: dict[str, Any], customer_ref: Any, item_refs: dict[str, Any]) -> Invoice:
    inv = Invoice()
    inv.DocNumber, inv.CustomerRef = _s(o.get("name")), customer_ref
    inv.TxnDate = str(o.get("processed_at") or o["created_at"])[:10]
    inv.PrivateNote = f"Shopify order {o.get('name')} ({o['id']}), {o.get('financial_status')}"
    for li in o.get("line_items") or []:
        line = SalesItemLine()
        line.Description = _s(li.get("title"))
        line.SalesItemLineDetail = SalesItemLineDetail()
        line.SalesItemLineDetail.ItemRef = item_refs.get(str(li.get("variant_id")))
        line.SalesItemLineDetail.Qty = li["quantity"]
        line.SalesItemLineDetail.UnitPrice = float(li["price"])
        line.Amount = round(li["quantity"] * float(li["price"]), 2)
        inv.Line.append(line)
    return inv


def main() -> None:
    started = time.monotonic()
    connect_shopify()
    customers, products, orders = read_store()
    qb = connect_quickbooks()
    income = qb.query("SELECT * FROM Account WHERE Name = 'Sales of Product Income'")["QueryResponse"]["Account"][0]
    income_ref = {"value": income["Id"]}
    written: Counter[str] = Counter()
    failed: Counter[str] = Counter()

    def each(kind: str, build: Callable[[], Any]) -> Any:
        try:
            saved = save(build(), qb)
        except (QuickbooksException, KeyError, TypeError, ValueError):
            failed[kind] += 1
            return None
        written[kind] += 1
        return saved

    customer_refs = {p["key"]: saved.to_ref() for p in people(customers, orders)
                     if (saved := each("Customer", lambda p=p: customer(p))) is not None}
    item_refs = {str(v["id"]): saved.to_ref() for product, v in variants(products)
                 if (saved := each("Item", lambda pr=product, v=v: item(pr, v, income_ref))) is not None}
    for o in orders:
        ref = customer_refs.get(customer_key(o))
        if ref is None:
            failed["Invoice"] += 1
            continue
        each("Invoice", lambda o=o, ref=ref: invoice(o, ref, item_refs))
    print(json.dumps({"written": dict(written), "failed": dict(failed),
                      "seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    main()
