"""The example pipeline end to end, proved record by record.

Both sandboxes run in-process over HTTPS; the example pipeline (with a lowered Bulk threshold, so
both write strategies are used) syncs a seeded messy store into an empty org. The test then
re-derives, from the raw Shopify JSON alone and without ferry's normalizer or mapping code, where
every source record must end up (in Salesforce once, or in the dead-letter queue with the right
reason) and what the written fields must hold. A second run must change nothing; an edit made
through the Shopify API must update exactly the records it feeds.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import re
import ssl
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import demo_env
from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.engine.runner import Runner
from ferry.engine.stats import RunStats
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.store import DeadLetter, LetterFilter, Store

REPO = Path(__file__).resolve().parents[2]
PIPELINE_FILE = REPO / "examples" / "shopify-to-salesforce.yml"
SHOPIFY_API = "2025-07"
OBJECTS = ("Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem")
EXTERNAL_ID = {
    "Account": "Shopify_Customer_Id__c",
    "Contact": "Shopify_Customer_Id__c",
    "Product2": "Shopify_Product_Id__c",
    "PricebookEntry": "Shopify_Variant_Id__c",
    "Order": "Shopify_Order_Id__c",
    "OrderItem": "Shopify_Line_Item_Id__c",
}
# Parent objects a record of each object points at (for PARENT_DEAD_LETTERED).
PARENTS = {
    "Contact": ("Account",),
    "PricebookEntry": ("Product2",),
    "Order": ("Account",),
    "OrderItem": ("Order", "PricebookEntry"),
}
# Text lengths of the fields the example pipeline writes from free-form source text (Salesforce's lengths).
LIMITS = {
    "Account": {
        "Name": 255,
        "Phone": 40,
        "BillingStreet": 255,
        "BillingCity": 40,
        "BillingState": 80,
        "BillingPostalCode": 20,
        "BillingCountry": 80,
    },
    "Contact": {
        "FirstName": 40,
        "LastName": 80,
        "Email": 80,
        "Phone": 40,
        "MailingCity": 40,
        "MailingCountry": 80,
    },
    "Product2": {"Name": 255, "ProductCode": 255},
    "Order": {
        "Name": 80,
        "BillingStreet": 255,
        "BillingCity": 40,
        "BillingPostalCode": 20,
        "BillingCountry": 80,
        "Shopify_Financial_Status__c": 40,
        "Shopify_Presentment_Currency__c": 3,
    },
}
WRITE_METHODS = ("PATCH ", "POST ", "PUT ")
COMPOSITE = "POST /services/data/vXX.X/composite"
NEW_FIRST_NAME = "Zoë-Updated"


# ----------------------------------------------------------------------------- independent rules


def _t(value: Any) -> str | None:
    """Source text as ferry treats it: stripped, blank is absent, non-strings as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip() or None


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


_EMAIL_FORBIDDEN = set(" \t\r\n\"'<>()[],;:\\")


def _email_ok(s: str) -> bool:
    """RFC-ish: one @, local part 1..64, no '..', a dotted domain ending in a 2+ letter label, no odd chars."""
    if s.count("@") != 1 or ".." in s or _EMAIL_FORBIDDEN & set(s):
        return False
    local, domain = s.split("@")
    labels = domain.split(".")
    return (
        0 < len(local) <= 64
        and len(labels) >= 2
        and all(labels)
        and re.fullmatch(r"[A-Za-z]{2,}", labels[-1]) is not None
    )


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


@dataclass
class Person:
    """What the pipeline should make of one customer (registered or guest)."""

    key: str
    version: dt.datetime
    first: str | None
    last: str | None
    email: str | None
    phone: str | None
    addr: dict[str, Any] | None
    tags: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str | None:
        return " ".join(p for p in (self.first, self.last) if p) or None

    def account_name(self) -> str:
        return self.full_name or _a(self.addr, "company") or self.email or f"Shopify customer {self.key}"

    def account_fields(self) -> dict[str, Any]:
        a = self.addr
        province = _a(a, "province") or _a(a, "province_code")
        return {
            "Name": self.account_name(),
            "Phone": self.phone,
            "BillingStreet": _street(a),
            "BillingCity": _a(a, "city"),
            "BillingState": province,
            "BillingPostalCode": _a(a, "zip"),
            "BillingCountry": _country(a),
        }

    def contact_fields(self) -> dict[str, Any]:
        return {
            "FirstName": self.first,
            "LastName": self.last or self.first,
            "Email": self.email,
            "Phone": self.phone,
            "MailingCity": _a(self.addr, "city"),
            "MailingCountry": _country(self.addr),
        }


def _registered(raw: dict[str, Any], tags: list[str]) -> Person:
    addr = _default_address(raw)
    return Person(
        key=str(raw["id"]),
        version=_utc(raw["updated_at"]),
        first=_t(raw.get("first_name")),
        last=_t(raw.get("last_name")),
        email=_t(raw.get("email")),
        phone=_t(raw.get("phone")) or _a(addr, "phone"),
        addr=addr,
        tags=tags,
    )


def _guest_key(order: dict[str, Any]) -> str:
    email = _t(order.get("email")) or _t(order.get("contact_email"))
    return f"guest:{email.lower()}" if email else f"guest:order:{order['id']}"


def _guest(order: dict[str, Any]) -> Person:
    addr = order.get("billing_address") or order.get("shipping_address") or None
    return Person(
        key=_guest_key(order),
        version=_utc(order["updated_at"]),
        first=_a(addr, "first_name"),
        last=_a(addr, "last_name"),
        email=_t(order.get("email")) or _t(order.get("contact_email")),
        phone=_t(order.get("phone")) or _a(addr, "phone"),
        addr=addr,
    )


def _customer_key(order: dict[str, Any]) -> str:
    cust = order.get("customer")
    if isinstance(cust, dict) and cust.get("id") is not None:
        return str(cust["id"])
    return _guest_key(order)


def _variant_name(product: dict[str, Any], variant: dict[str, Any]) -> str | None:
    title, vtitle = _t(product.get("title")), _t(variant.get("title"))
    if not vtitle or vtitle == "Default Title":
        return title or vtitle
    return f"{title} - {vtitle}" if title else vtitle


def _length_errors(obj: str, values: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        ("STRING_TOO_LONG", name)
        for name, limit in LIMITS[obj].items()
        if isinstance(values.get(name), str) and _utf16_len(values[name]) > limit
    }


@dataclass
class Expected:
    """Per object: source keys, the errors each invalid record must carry, the values valid ones must hold."""

    keys: dict[str, set[str]] = field(default_factory=lambda: {o: set() for o in OBJECTS})
    # object -> key -> set of (code, field); PARENT_DEAD_LETTERED entries are computed from parents.
    errors: dict[str, dict[str, set[tuple[str, str]]]] = field(default_factory=lambda: {o: {} for o in OBJECTS})
    people: dict[str, Person] = field(default_factory=dict)
    variants: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    parent_keys: dict[str, dict[str, dict[str, str | None]]] = field(default_factory=lambda: {o: {} for o in OBJECTS})

    def dead(self, obj: str) -> set[str]:
        return set(self.errors[obj])


def derive(source: Any) -> Expected:
    """Where each raw Shopify record must land, from the raw JSON alone."""
    exp = Expected()
    anomalies: dict[str, list[str]] = source.anomalies

    # Customers: registered ones by id; guests by lowercased email (else order id), newest order wins.
    for raw in source.customers:
        p = _registered(raw, anomalies.get(f"customer:{raw['id']}", []))
        exp.people[p.key] = p
    for order in source.orders:
        if _customer_key(order).startswith("guest:"):
            g = _guest(order)
            held = exp.people.get(g.key)
            if held is None or g.version > held.version:
                exp.people[g.key] = g
    for key, p in exp.people.items():
        exp.keys["Account"].add(key)
        exp.keys["Contact"].add(key)
        account = _length_errors("Account", p.account_fields())
        contact = _length_errors("Contact", p.contact_fields())
        if p.email is not None and not _email_ok(p.email):
            contact = {e for e in contact if e[1] != "Email"} | {("INVALID_EMAIL_ADDRESS", "Email")}
        if not (p.last or p.first):
            contact.add(("REQUIRED_FIELD_MISSING", "LastName"))
        if account:
            exp.errors["Account"][key] = account
        if contact:
            exp.errors["Contact"][key] = contact
        exp.parent_keys["Contact"][key] = {"Account": key}

    # Variants: one Product2 and one PricebookEntry each, keyed by variant id.
    for product in source.products:
        for variant in product.get("variants") or []:
            key = str(variant["id"])
            exp.variants[key] = (product, variant)
            exp.keys["Product2"].add(key)
            exp.keys["PricebookEntry"].add(key)
            errs = _length_errors(
                "Product2", {"Name": _variant_name(product, variant), "ProductCode": _t(variant.get("sku"))}
            )
            if errs:
                exp.errors["Product2"][key] = errs
            exp.parent_keys["PricebookEntry"][key] = {"Product2": key}

    # Orders and their line items.
    for order in source.orders:
        key = str(order["id"])
        exp.orders[key] = order
        exp.keys["Order"].add(key)
        bill = order.get("billing_address")
        errs = _length_errors(
            "Order",
            {
                "Name": _t(order.get("name")),
                "BillingStreet": _street(bill),
                "BillingCity": _a(bill, "city"),
                "BillingPostalCode": _a(bill, "zip"),
                "BillingCountry": _country(bill),
                "Shopify_Financial_Status__c": _t(order.get("financial_status")),
                "Shopify_Presentment_Currency__c": _t(order.get("presentment_currency")) or _t(order.get("currency")),
            },
        )
        if errs:
            exp.errors["Order"][key] = errs
        exp.parent_keys["Order"][key] = {"Account": _customer_key(order)}
        for line in order.get("line_items") or []:
            lkey = str(line["id"])
            exp.lines[lkey] = (line, key)
            exp.keys["OrderItem"].add(lkey)
            variant = None if line.get("variant_id") is None else str(line["variant_id"])
            if variant is None:
                exp.errors["OrderItem"][lkey] = {("REQUIRED_FIELD_MISSING", "PricebookEntryId")}
            exp.parent_keys["OrderItem"][lkey] = {"Order": key, "PricebookEntry": variant}

    # A valid record whose parent is dead-lettered is dead-lettered too (parents first, so this cascades).
    parent_field = {"Account": "AccountId", "Product2": "Product2Id", "Order": "OrderId"}
    parent_field_of = {("OrderItem", "PricebookEntry"): "PricebookEntryId"}
    for obj in OBJECTS:
        for key, parents in exp.parent_keys[obj].items():
            if key in exp.errors[obj]:
                continue
            orphan = {
                ("PARENT_DEAD_LETTERED", parent_field_of.get((obj, parent), parent_field.get(parent, "")))
                for parent, pkey in parents.items()
                if pkey is not None and pkey in exp.errors[parent]
            }
            if orphan:
                exp.errors[obj][key] = orphan
    return exp


# ----------------------------------------------------------------------------- the world


@dataclass
class Snapshot:
    stats: RunStats
    records: dict[str, list[dict[str, Any]]]
    by_endpoint: dict[str, int]
    dlq: list[DeadLetter]


@dataclass
class World:
    shop: ShopifySandbox
    shop_run: RunningSandbox
    org_run: RunningSandbox
    spec: PipelineSpec
    store: Store
    expected: Expected
    source: Any  # a deep copy of the generated store, as it was before any API edit
    client: httpx.Client

    def snapshot(self, stats: RunStats) -> Snapshot:
        base = self.org_run.url
        records = {}
        for obj in OBJECTS:
            resp = self.client.get(f"{base}/__sandbox/records/{obj}")
            resp.raise_for_status()
            records[obj] = resp.json()
        resp = self.client.get(f"{base}/__sandbox/stats")
        resp.raise_for_status()
        dlq = self.store.find_dead_letters(LetterFilter(pipeline=self.spec.name), 100000)
        body = resp.json()
        # A Composite is a container: what it read or wrote is in its subrequests, counted on their own.
        calls = {k: v for k, v in body["by_endpoint"].items() if k != COMPOSITE}
        for k, v in body["composite_subrequests"].items():
            calls[f"{k} (in composite)"] = v
        return Snapshot(stats, records, calls, dlq)

    def run(self) -> Snapshot:
        stats = asyncio.run(Runner(self.spec, self.store).run())
        assert stats.status == "succeeded", stats.error
        return self.snapshot(stats)


def _tls(running: RunningSandbox) -> ssl.SSLContext:
    # Explicit: REQUESTS_CA_BUNDLE may be set on the machine, and httpx deprecates verify=<path>.
    return ssl.create_default_context(cafile=str(running.ca_file))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fidelity")
    shop = ShopifySandbox(tmp, seed=11, customers=120, products=40, orders=600)
    org = SalesforceSandbox(tmp)
    shop_run = start_in_thread(shop.app, tmp)
    try:
        org_run = start_in_thread(org.app, tmp)
    except BaseException:
        shop_run.stop()
        raise
    try:
        shop_info = {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)}
        org_info = {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)}
        spec = load_pipeline(PIPELINE_FILE, demo_env(shop_info, org_info))
        spec = spec.model_copy(update={"target": spec.target.model_copy(update={"bulk_threshold": 500})})
        source = copy.deepcopy(shop.store)
        with httpx.Client(verify=_tls(org_run), timeout=30) as client:
            yield World(shop, shop_run, org_run, spec, Store(tmp / "ferry.db"), derive(source), source, client)
    finally:
        org_run.stop()
        shop_run.stop()


@pytest.fixture(scope="module")
def first(world: World) -> Snapshot:
    return world.run()


@pytest.fixture(scope="module")
def second(world: World, first: Snapshot) -> Snapshot:
    return world.run()


@dataclass
class Edit:
    key: str
    before: Snapshot
    after: Snapshot


@pytest.fixture(scope="module")
def edited(world: World, second: Snapshot) -> Edit:
    key = _edit_target(world, second)
    resp = httpx.put(
        f"{world.shop_run.url}/admin/api/{SHOPIFY_API}/customers/{key}.json",
        json={"customer": {"id": int(key), "first_name": NEW_FIRST_NAME}},
        headers={"X-Shopify-Access-Token": world.shop.access_token},
        verify=_tls(world.shop_run),
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["customer"]["first_name"] == NEW_FIRST_NAME
    return Edit(key, second, world.run())


def _edit_target(world: World, snap: Snapshot) -> str:
    """The first registered customer (by id) with a last name whose Account and Contact are both in Salesforce."""
    in_sf = {o: {r[EXTERNAL_ID[o]] for r in snap.records[o]} for o in ("Account", "Contact")}
    for key in sorted((k for k in world.expected.people if not k.startswith("guest:")), key=int):
        p = world.expected.people[key]
        if p.last and key in in_sf["Account"] and key in in_sf["Contact"]:
            return key
    raise AssertionError("no registered customer with a last name made it to Salesforce")


# ----------------------------------------------------------------------------- helpers


def _first10(items: Iterable[Any]) -> list[Any]:
    return sorted(items, key=str)[:10]


def _by_key(snap: Snapshot, obj: str) -> dict[str, dict[str, Any]]:
    return {r[EXTERNAL_ID[obj]]: r for r in snap.records[obj]}


def _dlq_by_key(snap: Snapshot, obj: str) -> dict[str, DeadLetter]:
    return {d.record_key: d for d in snap.dlq if d.object == obj}


def _mismatches(
    rows: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]
) -> list[tuple[str, str, Any, Any]]:
    """(key, field, expected, actual) for every field of every record that differs."""
    out = []
    for key, want in expected.items():
        got = rows[key]
        for name, value in want.items():
            if got.get(name) != value:
                out.append((key, name, value, got.get(name)))
    return sorted(out, key=str)


# ----------------------------------------------------------------------------- tests


def test_the_generated_store_has_the_messiness_this_test_relies_on(world: World) -> None:
    exp = world.expected
    # The independent email check agrees with the generator's own tags.
    malformed = {k for k, p in exp.people.items() if p.email is not None and not _email_ok(p.email)}
    tagged = {k.split(":", 1)[1] for k in world.source.tagged("email_malformed")}
    assert malformed == tagged, f"email check disagrees with the tags: {_first10(malformed ^ tagged)}"
    for obj, code in (
        ("Contact", "INVALID_EMAIL_ADDRESS"),
        ("Contact", "REQUIRED_FIELD_MISSING"),
        ("Contact", "STRING_TOO_LONG"),
        ("Account", "STRING_TOO_LONG"),
        ("Product2", "STRING_TOO_LONG"),
        ("Order", "STRING_TOO_LONG"),
        ("OrderItem", "REQUIRED_FIELD_MISSING"),
        ("OrderItem", "PARENT_DEAD_LETTERED"),
        ("PricebookEntry", "PARENT_DEAD_LETTERED"),
    ):
        assert any(code in {c for c, _ in e} for e in exp.errors[obj].values()), f"no {obj} {code} expected"
    guests = [k for k in exp.people if k.startswith("guest:")]
    assert any(k.startswith("guest:order:") for k in guests) and len(guests) > 5, guests


def test_both_write_strategies_are_used(first: Snapshot) -> None:
    strategies = {name: s.strategy for name, s in first.stats.objects.items()}
    assert strategies["OrderItem"] == "bulk", strategies
    assert "collections" in strategies.values(), strategies
    assert set(OBJECTS) <= set(strategies), strategies


def test_every_source_record_is_in_salesforce_once_or_dead_lettered(world: World, first: Snapshot) -> None:
    exp = world.expected
    for obj in OBJECTS:
        counts = Counter(r[EXTERNAL_ID[obj]] for r in first.records[obj])
        dupes = {k for k, n in counts.items() if n > 1}
        assert not dupes, f"{obj}: external ids held more than once: {_first10(dupes)}"
        assert None not in counts, f"{obj}: {counts[None]} records without an external id"
        dlq_counts = Counter(d.record_key for d in first.dlq if d.object == obj)
        dlq_dupes = {k for k, n in dlq_counts.items() if n > 1}
        assert not dlq_dupes, f"{obj}: dead-lettered more than once: {_first10(dlq_dupes)}"
        in_sf, in_dlq, source = set(counts), set(dlq_counts), exp.keys[obj]
        assert not in_sf & in_dlq, f"{obj}: both in Salesforce and dead-lettered: {_first10(in_sf & in_dlq)}"
        missing = source - in_sf - in_dlq
        assert not missing, f"{obj}: {len(missing)} source records neither in Salesforce nor DLQ: {_first10(missing)}"
        extra_sf = in_sf - source
        assert not extra_sf, f"{obj}: {len(extra_sf)} Salesforce records with no source record: {_first10(extra_sf)}"
        extra_dlq = in_dlq - source
        assert not extra_dlq, f"{obj}: {len(extra_dlq)} dead letters with no source record: {_first10(extra_dlq)}"
        stats = first.stats.objects[obj]
        assert (stats.written, stats.dead_lettered) == (len(in_sf), len(in_dlq)), (obj, stats)
        # A first run creates everything; a Bulk job whose counts proved its successes does not say which.
        if stats.strategy == "bulk":
            assert (stats.created, stats.updated) == (0, 0), (obj, stats)
        elif "bulk" in stats.strategy.split("+"):  # loaded in two parts, one of them a job: only the other says
            assert stats.updated == 0 and 0 < stats.created < len(in_sf), (obj, stats)
        else:
            assert (stats.created, stats.updated) == (len(in_sf), 0), (obj, stats)


def test_dead_letters_carry_the_right_reason(world: World, first: Snapshot) -> None:
    exp = world.expected
    for obj in OBJECTS:
        letters = _dlq_by_key(first, obj)
        bad_shape = [
            d.record_key
            for d in letters.values()
            if not d.error_code or d.record_key not in d.message or not d.fields or not d.errors
        ]
        assert not bad_shape, f"{obj}: dead letters without code, key in message, fields or errors: {bad_shape[:10]}"
        wrong_code = [
            (d.record_key, d.error_code, d.fields)
            for d in letters.values()
            if d.error_code not in {c for c, _ in exp.errors[obj].get(d.record_key, set())}
            or not set(d.fields) <= {f for _, f in exp.errors[obj].get(d.record_key, set())}
        ]
        assert not wrong_code, f"{obj}: dead letters whose reason the source does not explain: {wrong_code[:10]}"
        reasons = {
            d.record_key: {(e["code"], f) for e in d.errors for f in e.get("fields") or [""]} for d in letters.values()
        }
        differ = [
            (k, sorted(reasons[k]), sorted(exp.errors[obj][k]))
            for k in sorted(reasons)
            if k in exp.errors[obj] and reasons[k] != exp.errors[obj][k]
        ]
        assert not differ, f"{obj}: (key, reported, expected from source) differ: {differ[:10]}"
        wrongly = set(letters) - set(exp.errors[obj])
        assert not wrongly, f"{obj}: {len(wrongly)} valid records wrongly dead-lettered: {_first10(wrongly)}"
        escaped = set(exp.errors[obj]) - set(letters)
        assert not escaped, f"{obj}: {len(escaped)} invalid records not dead-lettered: {_first10(escaped)}"


def test_people_are_mapped_from_the_source(world: World, first: Snapshot) -> None:
    exp = world.expected
    accounts, contacts = _by_key(first, "Account"), _by_key(first, "Contact")
    want_accounts = {k: exp.people[k].account_fields() for k in accounts}
    assert not _mismatches(accounts, want_accounts), (
        f"Account (key, field, want, got): {_mismatches(accounts, want_accounts)[:10]}"
    )
    want_contacts = {}
    for k in contacts:
        f = exp.people[k].contact_fields()
        want_contacts[k] = {
            "FirstName": f["FirstName"],
            "LastName": f["LastName"],
            "Email": f["Email"],
            "MailingCity": f["MailingCity"],
            "AccountId": accounts[k]["Id"] if k in accounts else "<no account>",
        }
    bad = _mismatches(contacts, want_contacts)
    assert not bad, f"Contact (key, field, want, got): {bad[:10]}"


def test_products_and_prices_are_mapped_from_the_source(world: World, first: Snapshot) -> None:
    exp = world.expected
    products, entries = _by_key(first, "Product2"), _by_key(first, "PricebookEntry")
    want_products = {}
    for k in products:
        product, variant = exp.variants[k]
        want_products[k] = {
            "Name": _variant_name(product, variant),
            "ProductCode": _t(variant.get("sku")),
            "IsActive": str(product.get("status") or "").lower() == "active",
        }
    bad = _mismatches(products, want_products)
    assert not bad, f"Product2 (key, field, want, got): {bad[:10]}"
    assert any(not v["IsActive"] for v in want_products.values()), "no inactive product to tell IsActive apart"
    want_entries = {}
    for k in entries:
        _, variant = exp.variants[k]
        want_entries[k] = {
            "UnitPrice": float(variant["price"]),
            "Product2Id": products[k]["Id"] if k in products else "<no product>",
            "IsActive": True,
        }
    bad = _mismatches(entries, want_entries)
    assert not bad, f"PricebookEntry (key, field, want, got): {bad[:10]}"


def test_orders_and_lines_are_mapped_from_the_source(world: World, first: Snapshot) -> None:
    exp = world.expected
    accounts, entries = _by_key(first, "Account"), _by_key(first, "PricebookEntry")
    orders, items = _by_key(first, "Order"), _by_key(first, "OrderItem")
    want_orders = {}
    for k in orders:
        raw = exp.orders[k]
        customer = _customer_key(raw)
        want_orders[k] = {
            "AccountId": accounts[customer]["Id"] if customer in accounts else "<no account>",
            "Name": _t(raw.get("name")),
            "EffectiveDate": _utc(raw.get("processed_at") or raw["created_at"]).date().isoformat(),
            "Shopify_Total_Price__c": float(raw["total_price"]),
            "Shopify_Financial_Status__c": _t(raw.get("financial_status")),
            "BillingCity": _a(raw.get("billing_address"), "city"),
        }
    bad = _mismatches(orders, want_orders)
    assert not bad, f"Order (key, field, want, got): {bad[:10]}"
    want_items = {}
    for k in items:
        line, order_key = exp.lines[k]
        variant = str(line["variant_id"])
        want_items[k] = {
            "Quantity": float(line["quantity"]),
            "UnitPrice": float(line["price"]),
            "OrderId": orders[order_key]["Id"] if order_key in orders else "<no order>",
            "PricebookEntryId": entries[variant]["Id"] if variant in entries else "<no entry>",
        }
    bad = _mismatches(items, want_items)
    assert not bad, f"OrderItem (key, field, want, got): {bad[:10]}"


def _writes(by_endpoint: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in by_endpoint.items() if k.startswith(WRITE_METHODS)}


def _counts(snap: Snapshot) -> dict[str, int]:
    return {o: len(snap.records[o]) for o in OBJECTS}


def test_a_second_run_changes_nothing(first: Snapshot, second: Snapshot) -> None:
    changed = {
        name: (s.created, s.updated, s.dead_lettered)
        for name, s in second.stats.objects.items()
        if s.created or s.updated or s.dead_lettered
    }
    assert not changed, f"second run wrote or dead-lettered (created, updated, dead_lettered): {changed}"
    assert _writes(second.by_endpoint) == _writes(first.by_endpoint), (
        f"second run called write endpoints: before {_writes(first.by_endpoint)}, after {_writes(second.by_endpoint)}"
    )
    assert _counts(second) == _counts(first)
    assert len(second.dlq) == len(first.dlq)


def test_an_edit_in_shopify_updates_exactly_the_records_it_feeds(world: World, edited: Edit) -> None:
    stats = edited.after.stats.objects
    created = {n: s.created for n, s in stats.items() if s.created}
    assert not created, f"edit run created records: {created}"
    updated = {n: s.updated for n, s in stats.items() if s.updated}
    # The customer feeds its Account (Name is "first last") and its Contact; nothing else.
    assert updated == {"Account": 1, "Contact": 1}, f"edit run updated: {updated}"
    assert _counts(edited.after) == _counts(edited.before)
    assert len(edited.after.dlq) == len(edited.before.dlq)

    person = world.expected.people[edited.key]
    contact = _by_key(edited.after, "Contact")[edited.key]
    assert contact["FirstName"] == NEW_FIRST_NAME, contact
    assert contact["LastName"] == person.last, contact
    account = _by_key(edited.after, "Account")[edited.key]
    assert account["Name"] == f"{NEW_FIRST_NAME} {person.last}", account
    # Every other record is as it was.
    for obj in OBJECTS:
        before, after = _by_key(edited.before, obj), _by_key(edited.after, obj)
        changed = {
            k for k in after if k != edited.key and after[k]["LastModifiedDate"] != before[k]["LastModifiedDate"]
        }
        assert not changed, f"{obj}: records touched by the edit run: {_first10(changed)}"
