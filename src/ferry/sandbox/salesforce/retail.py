"""A seeded retail org: accounts with contacts, products with standard prices, orders with items.

``generate_retail_org(seed, accounts=, products=, orders=)`` is pure data, byte-identical for the same
arguments; ``seed_retail_org(url, client_id, client_secret, ca_file, org)`` creates it through the org's own
REST API (OAuth client credentials, then sObject Collections, 200 records a call), as a CRM's users and
integrations would: every record passes the org's rules (a product on an order needs a standard price, an
order item's price book entry must be in the order's price book) and gets its auto numbers (OrderNumber).
Orders are created as Draft with their items, then most are activated, as sales does in Salesforce.

Like a real org it is a little messy, each kind at a small rate and at least once when the sizes allow
(``RetailOrg.messy`` lists which records got which):

* ``colon_name``: an account or product named "Barnett: Wholesale" (QuickBooks refuses ':' in names, 2040);
* ``long_name``: an account name of 200+ characters (QuickBooks DisplayName: 500 at most);
* ``padded_name``: leading and trailing blanks;
* ``no_contact``: an account with no contact (no email, no person's name);
* ``no_price``: a product without a standard price (it is never on an order);
* ``inactive``: a retired product (IsActive false), still on old orders;
* ``fractional_qty``: an order line of 2.5 units; ``free_line``: a line at 0.00;
* ``draft``: an order never activated (not a sale yet).
"""

from __future__ import annotations

import random
import ssl
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

COLLECTION_RECORDS = 200
MESSY_RATE = 0.04
# A colon in a name costs the books the record and, for an account or a product, every order naming it.
RATES = {"colon_name": 0.01}
_COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Hooli", "Vandelay", "Tyrell",
              "Cyberdyne", "Soylent", "Massive Dynamic", "Oscorp", "Gringotts", "Monarch", "Pied Piper", "Dunder")
_SUFFIXES = ("Corp", "Inc.", "LLC", "GmbH", "& Sons", "Trading", "Outfitters", "Supply", "Retail", "Holdings")
_FIRST = ("Ana", "Ben", "Chloé", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kenji", "Lena", "Mo", "Noor")
_LAST = ("Smith", "O'Brien", "Müller", "García", "Nguyen", "Kowalski", "Okafor", "Rossi", "Dubois", "Larsen")
_CITIES = (("Austin", "TX", "78701"), ("Denver", "CO", "80202"), ("Boston", "MA", "02108"), ("Portland", "OR", "97201"))
_PRODUCTS = ("Trail Shoe", "Rain Jacket", "Wool Sock", "Day Pack", "Headlamp", "Water Bottle", "Fleece", "Tent",
             "Sleeping Bag", "Camp Stove", "Trekking Pole", "Sun Hat")
_SIZES = ("S", "M", "L", "XL", "Blue", "Red", "Green", "2-Pack")


@dataclass
class RetailOrg:
    """Records to create, with references by position: a contact's ``_account``, an order's ``_account`` and
    its ``_items`` ([product index, quantity, unit price]), a product's ``_price`` (None: no price)."""

    accounts: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    messy: dict[str, list[str]] = field(default_factory=dict)  # kind -> "Account 3", "Order 17", ...


def generate_retail_org(seed: int, *, accounts: int, products: int, orders: int) -> RetailOrg:
    rnd = random.Random(seed)
    org = RetailOrg()
    messy_accounts = _pick(rnd, accounts, ("colon_name", "long_name", "padded_name", "no_contact"))
    for i in range(accounts):
        kind = messy_accounts.get(i)
        name = f"{rnd.choice(_COMPANIES)} {rnd.choice(_SUFFIXES)} {i + 1}"
        if kind == "colon_name":
            name = f"{rnd.choice(_LAST)}: Wholesale {i + 1}"
        elif kind == "long_name":
            name = f"{name} " + " ".join(rnd.choice(_COMPANIES) for _ in range(30))
            name = name[:240]
        elif kind == "padded_name":
            name = f"  {name}  "
        city, state, zip_code = rnd.choice(_CITIES)
        org.accounts.append({
            "Name": name, "Type": "Customer - Direct", "Phone": f"+1 512 555 {rnd.randrange(10_000):04d}",
            "BillingStreet": f"{rnd.randrange(1, 999)} Main St", "BillingCity": city, "BillingState": state,
            "BillingPostalCode": zip_code, "BillingCountry": "US", "Industry": "Retail",
        })
        if kind:
            org.messy.setdefault(kind, []).append(f"Account {i}")
        if kind != "no_contact":
            first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
            email = f"{_ascii(first)}.{_ascii(last)}{i}@example.com"
            org.contacts.append({"_account": i, "FirstName": first, "LastName": last, "Email": email})
    messy_products = _pick(rnd, products, ("colon_name", "no_price", "inactive"))
    for i in range(products):
        kind = messy_products.get(i)
        base = f"{rnd.choice(_PRODUCTS)} {rnd.choice(_SIZES)}"
        name = f"{base}: Limited {i + 1}" if kind == "colon_name" else f"{base} {i + 1}"
        price = None if kind == "no_price" else round(rnd.uniform(4, 400), 2)
        org.products.append({
            "Name": name, "ProductCode": f"SKU-{i + 1:05d}", "StockKeepingUnit": f"SKU-{i + 1:05d}",
            "IsActive": kind != "inactive", "Description": f"{base}, season {2020 + i % 6}", "_price": price,
        })
        if kind:
            org.messy.setdefault(kind, []).append(f"Product2 {i}")
    sellable = [i for i, p in enumerate(org.products) if p["_price"] is not None]
    messy_orders = _pick(rnd, orders, ("fractional_qty", "free_line", "draft"))
    start = date(2026, 1, 1)
    for i in range(orders):
        kind = messy_orders.get(i)
        if not sellable or not accounts:
            break
        items = []
        for product in rnd.sample(sellable, k=min(len(sellable), rnd.choice((1, 1, 2, 2, 3, 4)))):
            items.append([product, rnd.choice((1, 1, 1, 2, 3, 5)), org.products[product]["_price"]])
        if kind == "fractional_qty":
            items[0][1] = 2.5
        elif kind == "free_line":
            items[0][2] = 0.0
        org.orders.append({
            "_account": rnd.randrange(accounts), "_items": items, "_activate": kind != "draft",
            "EffectiveDate": (start + timedelta(days=rnd.randrange(330))).isoformat(),
            "Description": f"PO from the web shop #{1000 + i}",
        })
        if kind:
            org.messy.setdefault(kind, []).append(f"Order {i}")
    return org


def _ascii(name: str) -> str:
    """A name as an email's local part: Salesforce refuses non-ASCII addresses (INVALID_EMAIL_ADDRESS)."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum())


def _pick(rnd: random.Random, n: int, kinds: tuple[str, ...]) -> dict[int, str]:
    """Disjoint record indices per messy kind: its rate of them (``RATES``, else ``MESSY_RATE``), at least one
    each while n allows."""
    order = list(range(n))
    rnd.shuffle(order)
    out: dict[int, str] = {}
    start = 0
    for kind in kinds:
        each = max(1, round(n * RATES.get(kind, MESSY_RATE)))
        for index in order[start : start + each]:
            out[index] = kind
        start += each
    return out


def seed_retail_org(
    url: str, client_id: str, client_secret: str, ca_file: Path | str | None, org: RetailOrg,
    *, api_version: str = "62.0",
) -> dict[str, list[str]]:
    """Create ``org`` in the Salesforce sandbox at ``url``; the Ids created, by sObject, in ``org`` order."""
    verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    with httpx.Client(base_url=url, verify=verify, timeout=120) as http:
        token = http.post("/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret})
        token.raise_for_status()
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        api = _Api(http, f"/services/data/v{api_version}")
        book = api.query("SELECT Id FROM Pricebook2 WHERE IsStandard = true")[0]["Id"]
        accounts = api.create("Account", [_fields(a) for a in org.accounts])
        api.create("Contact", [{**_fields(c), "AccountId": accounts[c["_account"]]} for c in org.contacts])
        products = api.create("Product2", [_fields(p) for p in org.products])
        priced = [(i, p["_price"]) for i, p in enumerate(org.products) if p["_price"] is not None]
        entries = dict(zip([i for i, _ in priced], api.create("PricebookEntry", [
            {"Pricebook2Id": book, "Product2Id": products[i], "UnitPrice": price, "IsActive": True}
            for i, price in priced
        ]), strict=True))
        orders = api.create("Order", [
            {**_fields(o), "AccountId": accounts[o["_account"]], "Pricebook2Id": book, "Status": "Draft"}
            for o in org.orders
        ])
        api.create("OrderItem", [
            {"OrderId": orders[n], "PricebookEntryId": entries[product], "Quantity": qty, "UnitPrice": price}
            for n, o in enumerate(org.orders) for product, qty, price in o["_items"]
        ])
        api.update("Order", [{"id": orders[n], "Status": "Activated"} for n, o in enumerate(org.orders)
                             if o["_activate"]])
        return {"Account": accounts, "Product2": products, "Order": orders}


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


class _Api:
    def __init__(self, http: httpx.Client, base: str) -> None:
        self.http, self.base = http, base

    def query(self, soql: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.base}/query", params={"q": soql})
        response.raise_for_status()
        return list(response.json()["records"])

    def create(self, sobject: str, records: list[dict[str, Any]]) -> list[str]:
        return self._send("POST", sobject, records)

    def update(self, sobject: str, records: list[dict[str, Any]]) -> list[str]:
        return self._send("PATCH", sobject, records)

    def _send(self, method: str, sobject: str, records: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(records), COLLECTION_RECORDS):
            chunk = [{"attributes": {"type": sobject}, **r} for r in records[start : start + COLLECTION_RECORDS]]
            response = self.http.request(method, f"{self.base}/composite/sobjects",
                                         json={"allOrNone": True, "records": chunk})
            response.raise_for_status()
            for answer in response.json():
                if not answer.get("success"):
                    raise RuntimeError(f"seeding {sobject} failed: {answer.get('errors')}")
                ids.append(str(answer["id"]))
        return ids
