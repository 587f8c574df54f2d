"""Is a contender's result in Salesforce complete and correct? Target records checked against the source store.

The expected outcome is derived from the raw Shopify JSON alone (no ferry normalizer or mapping code),
with the same rules as tests/e2e/test_sync_fidelity.py: every valid source record must be in Salesforce
exactly once under its external id, holding the right values; an invalid one (too long, bad email, no
last name, no variant, or a child of an invalid parent) must not be. A fast wrong answer does not count.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

OBJECTS = ("Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem")
EXTERNAL_ID = {
    "Account": "Shopify_Customer_Id__c",
    "Contact": "Shopify_Customer_Id__c",
    "Product2": "Shopify_Product_Id__c",
    "PricebookEntry": "Shopify_Variant_Id__c",
    "Order": "Shopify_Order_Id__c",
    "OrderItem": "Shopify_Line_Item_Id__c",
}
# Salesforce's lengths of the fields the example pipeline fills from free-form text.
LIMITS = {
    "Account": {"Name": 255, "Phone": 40, "BillingStreet": 255, "BillingCity": 40, "BillingState": 80,
                "BillingPostalCode": 20, "BillingCountry": 80},
    "Contact": {"FirstName": 40, "LastName": 80, "Email": 80, "Phone": 40, "MailingCity": 40, "MailingCountry": 80},
    "Product2": {"Name": 255, "ProductCode": 255},
    "Order": {"Name": 80, "BillingStreet": 255, "BillingCity": 40, "BillingPostalCode": 20, "BillingCountry": 80,
              "Shopify_Financial_Status__c": 40, "Shopify_Presentment_Currency__c": 3},
}
_EMAIL_FORBIDDEN = set(" \t\r\n\"'<>()[],;:\\")


def _t(value: Any) -> str | None:
    """Source text as a sync must treat it: stripped, blank is absent, non-strings as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip() or None


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def email_ok(s: str) -> bool:
    """One @, local part 1..64, no '..', a dotted domain ending in a 2+ letter label, no odd characters."""
    if s.count("@") != 1 or ".." in s or _EMAIL_FORBIDDEN & set(s):
        return False
    local, domain = s.split("@")
    labels = domain.split(".")
    return 0 < len(local) <= 64 and len(labels) >= 2 and all(labels) and \
        re.fullmatch(r"[A-Za-z]{2,}", labels[-1]) is not None


def _utc(ts: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _default_address(raw: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(raw.get("default_address"), dict) and raw["default_address"]:
        return raw["default_address"]
    addresses = [a for a in raw.get("addresses") or [] if isinstance(a, dict)]
    for a in addresses:
        if a.get("default"):
            return a
    return addresses[0] if addresses else None


def _street(addr: dict[str, Any] | None) -> str | None:
    if not addr:
        return None
    return ", ".join(p for p in (_t(addr.get("address1")), _t(addr.get("address2"))) if p) or None


def _country(addr: dict[str, Any] | None) -> str | None:
    if not addr:
        return None
    return _t(addr.get("country")) or _t(addr.get("country_name")) or _t(addr.get("country_code"))


def _a(addr: dict[str, Any] | None, name: str) -> str | None:
    return _t(addr.get(name)) if addr else None


@dataclass(slots=True)
class Person:
    key: str
    version: dt.datetime
    first: str | None
    last: str | None
    email: str | None
    phone: str | None
    addr: dict[str, Any] | None

    def account_fields(self) -> dict[str, Any]:
        a = self.addr
        full = " ".join(p for p in (self.first, self.last) if p) or None
        return {
            "Name": full or _a(a, "company") or self.email or f"Shopify customer {self.key}",
            "Phone": self.phone, "BillingStreet": _street(a), "BillingCity": _a(a, "city"),
            "BillingState": _a(a, "province") or _a(a, "province_code"), "BillingPostalCode": _a(a, "zip"),
            "BillingCountry": _country(a),
        }

    def contact_fields(self) -> dict[str, Any]:
        return {"FirstName": self.first, "LastName": self.last or self.first, "Email": self.email,
                "Phone": self.phone, "MailingCity": _a(self.addr, "city"), "MailingCountry": _country(self.addr)}


def _registered(raw: dict[str, Any]) -> Person:
    addr = _default_address(raw)
    return Person(str(raw["id"]), _utc(raw["updated_at"]), _t(raw.get("first_name")), _t(raw.get("last_name")),
                  _t(raw.get("email")), _t(raw.get("phone")) or _a(addr, "phone"), addr)


def guest_key(order: dict[str, Any]) -> str:
    email = _t(order.get("email")) or _t(order.get("contact_email"))
    return f"guest:{email.lower()}" if email else f"guest:order:{order['id']}"


def _guest(order: dict[str, Any]) -> Person:
    addr = order.get("billing_address") or order.get("shipping_address") or None
    return Person(guest_key(order), _utc(order["updated_at"]), _a(addr, "first_name"), _a(addr, "last_name"),
                  _t(order.get("email")) or _t(order.get("contact_email")),
                  _t(order.get("phone")) or _a(addr, "phone"), addr)


def customer_key(order: dict[str, Any]) -> str:
    cust = order.get("customer")
    if isinstance(cust, dict) and cust.get("id") is not None:
        return str(cust["id"])
    return guest_key(order)


def variant_name(product: dict[str, Any], variant: dict[str, Any]) -> str | None:
    title, vtitle = _t(product.get("title")), _t(variant.get("title"))
    if not vtitle or vtitle == "Default Title":
        return title or vtitle
    return f"{title} - {vtitle}" if title else vtitle


def _too_long(obj: str, values: dict[str, Any]) -> bool:
    return any(isinstance(values.get(n), str) and _utf16_len(values[n]) > lim for n, lim in LIMITS[obj].items())


@dataclass
class Expected:
    """Per object: source keys, which are invalid, and what the valid ones must hold (values, parent keys)."""

    keys: dict[str, set[str]] = field(default_factory=lambda: {o: set() for o in OBJECTS})
    invalid: dict[str, set[str]] = field(default_factory=lambda: {o: set() for o in OBJECTS})
    values: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {o: {} for o in OBJECTS})
    # object -> key -> {reference field: (parent object, parent key)}
    parents: dict[str, dict[str, dict[str, tuple[str, str | None]]]] = field(
        default_factory=lambda: {o: {} for o in OBJECTS})

    def valid(self, obj: str) -> set[str]:
        return self.keys[obj] - self.invalid[obj]


def derive(customers: list[dict[str, Any]], products: list[dict[str, Any]],
           orders: list[dict[str, Any]]) -> Expected:
    """Where each raw Shopify record must land, from the raw JSON alone."""
    exp = Expected()
    people: dict[str, Person] = {}
    for raw in customers:
        p = _registered(raw)
        people[p.key] = p
    for order in orders:
        if customer_key(order).startswith("guest:"):
            g = _guest(order)
            held = people.get(g.key)
            if held is None or g.version > held.version:
                people[g.key] = g
    for key, p in people.items():
        account, contact = p.account_fields(), p.contact_fields()
        for obj, vals in (("Account", account), ("Contact", contact)):
            exp.keys[obj].add(key)
            exp.values[obj][key] = vals
        if _too_long("Account", account):
            exp.invalid["Account"].add(key)
        bad_email = p.email is not None and not email_ok(p.email)
        if _too_long("Contact", contact) or bad_email or not (p.last or p.first):
            exp.invalid["Contact"].add(key)
        exp.parents["Contact"][key] = {"AccountId": ("Account", key)}
    for product in products:
        for variant in product.get("variants") or []:
            key = str(variant["id"])
            name, sku = variant_name(product, variant), _t(variant.get("sku"))
            exp.keys["Product2"].add(key)
            exp.keys["PricebookEntry"].add(key)
            exp.values["Product2"][key] = {"Name": name, "ProductCode": sku,
                                           "IsActive": str(product.get("status") or "").lower() == "active"}
            exp.values["PricebookEntry"][key] = {"UnitPrice": float(variant["price"]), "IsActive": True}
            if _too_long("Product2", {"Name": name, "ProductCode": sku}):
                exp.invalid["Product2"].add(key)
            exp.parents["PricebookEntry"][key] = {"Product2Id": ("Product2", key)}
    for order in orders:
        key = str(order["id"])
        bill = order.get("billing_address")
        exp.keys["Order"].add(key)
        checked = {
            "Name": _t(order.get("name")), "BillingStreet": _street(bill), "BillingCity": _a(bill, "city"),
            "BillingPostalCode": _a(bill, "zip"), "BillingCountry": _country(bill),
            "Shopify_Financial_Status__c": _t(order.get("financial_status")),
            "Shopify_Presentment_Currency__c": _t(order.get("presentment_currency")) or _t(order.get("currency")),
        }
        if _too_long("Order", checked):
            exp.invalid["Order"].add(key)
        exp.values["Order"][key] = {
            "Name": checked["Name"], "BillingCity": checked["BillingCity"],
            "Shopify_Financial_Status__c": checked["Shopify_Financial_Status__c"],
            "EffectiveDate": _utc(order.get("processed_at") or order["created_at"]).date().isoformat(),
            "Shopify_Total_Price__c": float(order["total_price"]),
        }
        exp.parents["Order"][key] = {"AccountId": ("Account", customer_key(order))}
        for line in order.get("line_items") or []:
            lkey = str(line["id"])
            variant = None if line.get("variant_id") is None else str(line["variant_id"])
            exp.keys["OrderItem"].add(lkey)
            exp.values["OrderItem"][lkey] = {"Quantity": float(line["quantity"]), "UnitPrice": float(line["price"])}
            if variant is None:
                exp.invalid["OrderItem"].add(lkey)
            exp.parents["OrderItem"][lkey] = {"OrderId": ("Order", key),
                                              "PricebookEntryId": ("PricebookEntry", variant)}
    # A valid record whose parent is invalid cannot be written either (parents first, so this cascades).
    for obj in OBJECTS:
        for key, refs in exp.parents[obj].items():
            if any(pkey is not None and pkey in exp.invalid[pobj] for pobj, pkey in refs.values()):
                exp.invalid[obj].add(key)
    return exp


@dataclass
class ObjectCheck:
    expected: int = 0  # valid source records
    present: int = 0  # valid source records found in Salesforce
    missing: int = 0
    duplicated: int = 0  # external ids held by more than one record
    wrong: int = 0  # valid records present with a wrong value or parent
    unexpected: int = 0  # records Salesforce holds that the source says are invalid or does not have
    examples: list[str] = field(default_factory=list)


@dataclass
class Reconciliation:
    objects: dict[str, ObjectCheck]

    @property
    def correct(self) -> bool:
        return all(not (c.missing or c.duplicated or c.wrong or c.unexpected) for c in self.objects.values())

    @property
    def valid_records(self) -> int:
        return sum(c.expected for c in self.objects.values())

    def summary(self) -> str:
        if self.correct:
            return "ok"
        bad = []
        for name, c in self.objects.items():
            parts = [f"{n} {v}" for n, v in (("missing", c.missing), ("dup", c.duplicated), ("wrong", c.wrong),
                                               ("extra", c.unexpected)) if v]
            if parts:
                bad.append(f"{name}: {', '.join(parts)}")
        return "WRONG (" + "; ".join(bad) + ")"


def _same(want: Any, got: Any) -> bool:
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        return abs(want - got) < 1e-9
    return bool(want == got)


def reconcile(exp: Expected, records: dict[str, list[dict[str, Any]]]) -> Reconciliation:
    """Compare what the org holds (``/__sandbox/records/{object}``) with what the source says it must hold."""
    ids: dict[str, dict[str, str]] = {}  # object -> external id -> Salesforce Id
    checks: dict[str, ObjectCheck] = {}
    for obj in OBJECTS:
        ext = EXTERNAL_ID[obj]
        rows = records.get(obj, [])
        counts = Counter(r.get(ext) for r in rows)
        ids[obj] = {r[ext]: r["Id"] for r in rows if r.get(ext) is not None}
        valid = exp.valid(obj)
        c = checks[obj] = ObjectCheck(expected=len(valid))
        c.duplicated = sum(1 for k, n in counts.items() if n > 1)
        held = {k for k in counts if k is not None}
        c.present = len(held & valid)
        c.missing = len(valid - held)
        c.unexpected = len(held - valid) + counts.get(None, 0)
        c.examples += [f"missing {k}" for k in sorted(valid - held)[:3]]
        c.examples += [f"extra {k}" for k in sorted(held - valid, key=str)[:3]]
    for obj in OBJECTS:
        ext, c = EXTERNAL_ID[obj], checks[obj]
        valid = exp.valid(obj)
        for row in records.get(obj, []):
            key = row.get(ext)
            if key not in valid:
                continue
            bad = [n for n, want in exp.values[obj][key].items() if not _same(want, row.get(n))]
            for ref, (pobj, pkey) in exp.parents[obj].get(key, {}).items():
                if row.get(ref) != ids[pobj].get(pkey or "", "<none>"):
                    bad.append(ref)
            if bad:
                c.wrong += 1
                if len(c.examples) < 6:
                    c.examples.append(f"{key}: {', '.join(bad)}")
    return Reconciliation(checks)


# ---------------------------------------------------------------------------------------------------------------
# Streamed: a store too large to hold (1,000,000 orders: ~4.6 million target records)


def add(total: Reconciliation | None, part: Reconciliation) -> Reconciliation:
    """Sum two reconciliations object by object (examples: the first few of each)."""
    if total is None:
        return part
    for obj, c in part.objects.items():
        t = total.objects[obj]
        for name in ("expected", "present", "missing", "duplicated", "wrong", "unexpected"):
            setattr(t, name, getattr(t, name) + getattr(c, name))
        t.examples = (t.examples + c.examples)[:6]
    return total


class TargetDump:
    """The org's records of the six objects, streamed once into SQLite on disk, then read back shard by shard.

    Memory stays bounded whatever the run's size: the rows live in the file, and a shard's check reads only
    the rows whose external ids belong to that shard's source records.
    """

    def __init__(self, path: Any) -> None:
        import sqlite3

        self.db = sqlite3.connect(path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE sf(obj TEXT, ext TEXT, row BLOB);"
            "CREATE TABLE seen(obj TEXT, ext TEXT, PRIMARY KEY(obj, ext)) WITHOUT ROWID;"
            "CREATE TEMP TABLE want(ext TEXT PRIMARY KEY) WITHOUT ROWID;")

    def load(self, obj: str, lines: Any) -> int:
        """Insert the NDJSON lines of one object; returns how many rows."""
        import orjson

        ext, n, batch = EXTERNAL_ID[obj], 0, []
        for line in lines:
            if not line:
                continue
            row = orjson.loads(line)
            batch.append((obj, row.get(ext), line if isinstance(line, bytes) else line.encode()))
            if len(batch) >= 10_000:
                self.db.executemany("INSERT INTO sf VALUES (?, ?, ?)", batch)
                n, batch = n + len(batch), []
        self.db.executemany("INSERT INTO sf VALUES (?, ?, ?)", batch)
        self.db.commit()
        return n + len(batch)

    def index(self) -> None:
        self.db.execute("CREATE INDEX sf_key ON sf(obj, ext)")
        self.db.commit()

    def rows_for(self, exp: Expected) -> dict[str, list[dict[str, Any]]]:
        """The org's rows whose external id is one of this shard's source keys (valid or not); marks them seen."""
        import orjson

        out: dict[str, list[dict[str, Any]]] = {}
        for obj in OBJECTS:
            keys = [(k,) for k in exp.keys[obj]]
            self.db.execute("DELETE FROM want")
            self.db.executemany("INSERT OR IGNORE INTO want VALUES (?)", keys)
            self.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", [(obj, k) for (k,) in keys])
            out[obj] = [orjson.loads(r) for (r,) in self.db.execute(
                "SELECT sf.row FROM sf JOIN want ON sf.ext = want.ext WHERE sf.obj = ?", (obj,))]
        self.db.commit()
        return out

    def unclaimed(self) -> dict[str, int]:
        """Rows no shard's source records account for (unknown or null external id), per object."""
        return dict(self.db.execute(
            "SELECT sf.obj, count(*) FROM sf LEFT JOIN seen ON seen.obj = sf.obj AND seen.ext = sf.ext "
            "WHERE seen.ext IS NULL GROUP BY sf.obj").fetchall())


def reconcile_shards(dump: TargetDump, shards: Any) -> Reconciliation:
    """Reconcile shard by shard; ``shards`` yields (customers, products, orders) raw lists of one shard each.

    Exact only when no source record of one shard refers to another shard's (``generate_shards`` guarantees
    it: orders reference their own shard's customers and products, and guest emails are unique store-wide).
    """
    total: Reconciliation | None = None
    for customers, products, orders in shards:
        exp = derive(customers, products, orders)
        del customers, products, orders
        total = add(total, reconcile(exp, dump.rows_for(exp)))
    assert total is not None
    for obj, n in dump.unclaimed().items():
        total.objects[obj].unexpected += n
        total.objects[obj].examples.append(f"{n} rows with no source record")
    return total
