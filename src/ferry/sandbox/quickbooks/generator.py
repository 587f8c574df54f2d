"""A seeded QuickBooks company: a chart of accounts, items, customers, invoices (some paid, some partly),
sales receipts and a few credit memos, written through the same rules as API writes, and dated over the
90 days before now (so ``MetaData.LastUpdatedTime`` filters and CDC have history to work on).

Like a real company it is a little messy: customers without an email, inactive customers and items, names
differing only in case or spacing from another (QuickBooks refuses exact duplicates only, ignoring case).
"""

from __future__ import annotations

import random
import time
from typing import Any

from ferry.sandbox.quickbooks.company import Company, Record
from ferry.sandbox.quickbooks.times import fmt, fmt_date
from ferry.sandbox.quickbooks.writes import Writer

# (Name, AccountType, AccountSubType): a US sandbox company's usual accounts.
CHART = (
    ("Services", "Income", "ServiceFeeIncome"),
    ("Sales of Product Income", "Income", "SalesOfProductIncome"),
    ("Discounts given", "Income", "DiscountsRefundsGiven"),
    ("Undeposited Funds", "Other Current Asset", "UndepositedFunds"),
    ("Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable"),
    ("Checking", "Bank", "Checking"),
    ("Savings", "Bank", "Savings"),
    ("Inventory Asset", "Other Current Asset", "Inventory"),
    ("Cost of Goods Sold", "Cost of Goods Sold", "SuppliesMaterialsCogs"),
    ("Accounts Payable (A/P)", "Accounts Payable", "AccountsPayable"),
    ("Sales Tax Payable", "Other Current Liability", "SalesTaxPayable"),
    ("Opening Balance Equity", "Equity", "OpeningBalanceEquity"),
    ("Advertising", "Expense", "AdvertisingPromotional"),
    ("Shipping and delivery expense", "Expense", "ShippingFreightDelivery"),
    ("Shipping Income", "Income", "OtherPrimaryIncome"),
)
GIVEN = ("Amy", "Bill", "Carla", "Dylan", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi", "Lena",
         "Mateo", "Nina", "Oskar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vera", "Wen", "Yusuf")
FAMILY = ("Anders", "Brook", "Cortez", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
          "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Schmidt", "Tanaka", "Weber")
COMPANY_WORDS = ("Bakery", "Books", "Cycles", "Design", "Garden", "Hardware", "Kitchen", "Labs", "Outfitters",
                 "Pottery", "Studio", "Supply", "Tools", "Travel", "Yoga")
PRODUCTS = ("Mug", "Poster", "T-Shirt", "Notebook", "Candle", "Tote Bag", "Planter", "Lamp", "Scarf", "Cap",
            "Water Bottle", "Sticker Pack", "Puzzle", "Socks", "Apron", "Blanket")
ADJECTIVES = ("Blue", "Classic", "Deluxe", "Eco", "Large", "Mini", "Organic", "Retro", "Small", "Vintage")
CITIES = (("Mountain View", "CA", "94043"), ("Austin", "TX", "78701"), ("Portland", "OR", "97205"),
          ("Denver", "CO", "80202"), ("Boston", "MA", "02110"), ("Seattle", "WA", "98101"))
HISTORY_DAYS = 90


def generate_company(realm_id: str, *, seed: int = 7, customers: int = 60, products: int = 20,
                     orders: int = 120) -> Company:
    rng = random.Random(seed)
    company = Company(realm_id)
    writer = Writer(company)
    now = int(time.time())
    start = now - HISTORY_DAYS * 86400
    for name, kind, sub in CHART:
        _dated(writer.create("Account", {"Name": name, "AccountType": kind, "AccountSubType": sub}), start)
    income = {a["Name"]: a["Id"] for a in company.all("Account")}
    _dated(writer.create("Item", {"Name": "Services", "Type": "Service",
                                  "IncomeAccountRef": {"value": income["Services"]}}), start)
    _dated(writer.create("Item", {"Name": "Hours", "Type": "Service", "UnitPrice": 85,
                                  "IncomeAccountRef": {"value": income["Services"]}}), start)
    items = [_item(writer, rng, income, i, start) for i in range(products)]
    people = [_customer(writer, rng, i, start, now) for i in range(customers)]
    active_items = [i for i in items if i.get("Active", True)] or [company.get("Item", "2") or {}]
    active_people = [p for p in people if p.get("Active", True)]
    for n in range(orders if active_people else 0):
        when = start + int((now - start) * (n + 1) / (orders + 1))
        _order(writer, rng, rng.choice(active_people), active_items, income, when)
    return company


def _dated(record: Record, when: int, updated: int | None = None) -> Record:
    record["MetaData"] = {"CreateTime": fmt(when), "LastUpdatedTime": fmt(updated or when)}
    return record


def _item(writer: Writer, rng: random.Random, income: dict[str, str], i: int, start: int) -> Record:
    name = f"{rng.choice(ADJECTIVES)} {PRODUCTS[i % len(PRODUCTS)]}"
    if any(r["Name"].lower() == name.lower() for r in writer.company.records["Item"].values()):
        name = f"{name} {i + 1}"
    body: dict[str, Any] = {"Name": name, "Type": "NonInventory", "Sku": f"SKU-{1000 + i}",
                            "UnitPrice": round(rng.uniform(4, 120), 2), "Description": f"{name}, seed item",
                            "IncomeAccountRef": {"value": income["Sales of Product Income"]}}
    item = _dated(writer.create("Item", body), start + i * 60)
    if rng.random() < 0.08:
        item["Active"] = False
    return item


def _customer(writer: Writer, rng: random.Random, i: int, start: int, now: int) -> Record:
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    body: dict[str, Any] = {"GivenName": given, "FamilyName": family}
    if rng.random() < 0.3:
        body["CompanyName"] = f"{family} {rng.choice(COMPANY_WORDS)}"
    display = body.get("CompanyName") or f"{given} {family}"
    taken = {str(r["DisplayName"]).lower() for r in writer.company.records["Customer"].values()}
    if display.lower() in taken:
        # A second customer of the same name: real books disambiguate by hand ("Amy Lopez 2", "amy  lopez").
        display = f"{display} {i + 1}" if rng.random() < 0.7 else f"{display.lower()}  "
        if display.strip().lower() in taken:
            display = f"{display.strip()} ({i + 1})"
    body["DisplayName"] = display
    if rng.random() > 0.15:
        body["PrimaryEmailAddr"] = {"Address": f"{given}.{family}{i}@example.com".lower()}
    if rng.random() > 0.4:
        city, state, postal = rng.choice(CITIES)
        body["BillAddr"] = {"Line1": f"{rng.randint(1, 999)} Main St", "City": city,
                            "CountrySubDivisionCode": state, "PostalCode": postal, "Country": "USA"}
    created = start + i * 300
    customer = _dated(writer.create("Customer", body), created, min(now, created + rng.randint(0, 40) * 86400))
    if rng.random() < 0.05:
        customer["Active"] = False
        customer["DisplayName"] = f"{customer['DisplayName']} (deleted)"
        customer["FullyQualifiedName"] = customer["DisplayName"]
    return customer


def _order(writer: Writer, rng: random.Random, customer: Record, items: list[Record], income: dict[str, str],
           when: int) -> None:
    lines = []
    for item in rng.sample(items, k=min(len(items), rng.randint(1, 4))):
        qty = rng.randint(1, 5)
        price = float(item.get("UnitPrice") or 10)
        lines.append({"DetailType": "SalesItemLineDetail", "Amount": round(qty * price, 2),
                      "Description": item["Name"],
                      "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": qty, "UnitPrice": price}})
    body: dict[str, Any] = {"CustomerRef": {"value": customer["Id"]}, "Line": lines, "TxnDate": fmt_date(when)}
    if customer.get("PrimaryEmailAddr"):
        body["BillEmail"] = customer["PrimaryEmailAddr"]
    roll = rng.random()
    if roll < 0.25:
        _dated(writer.create("SalesReceipt", body), when)
        return
    if roll < 0.28:
        _dated(writer.create("CreditMemo", body), when)
        return
    invoice = _dated(writer.create("Invoice", body), when)
    if rng.random() < 0.5:
        share = 1.0 if rng.random() < 0.7 else 0.5
        amount = round(float(invoice["TotalAmt"]) * share, 2)
        payment = writer.create("Payment", {
            "CustomerRef": {"value": customer["Id"]}, "TotalAmt": amount, "TxnDate": invoice["TxnDate"],
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]})
        paid_at = when + rng.randint(1, 10) * 3600
        _dated(payment, paid_at)
        _dated(invoice, when, paid_at)
