"""`ferry run examples/shopify-to-quickbooks.yml` as a user runs it, against both sandboxes over HTTPS.

The real CLI in a child process reads a seeded messy Shopify store and writes a QuickBooks Online company
that holds nothing but its chart of accounts. From the store's raw JSON alone (not ferry's normalizer),
the test derives every Customer, Item and Invoice the company must hold, and checks each is there once or
in the dead-letter queue with a reason, never both, never missing; that invoices name the right customer
and items with the store's quantities and prices; that a second run writes nothing; and that a run whose
answers are lost after QuickBooks committed them (``commit_then_reset``) makes no duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from ferry.cli.demo import FLOWS
from ferry.connectors.quickbooks.names import clean_name
from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "examples/shopify-to-quickbooks.yml"
OBJECTS = ("Customer", "Item", "Invoice")


def _t(value: Any) -> str | None:
    return None if value is None else str(value).strip() or None


def _guest_key(order: dict[str, Any]) -> str:
    email = _t(order.get("email")) or _t(order.get("contact_email"))
    return f"guest:{email.lower()}" if email else f"guest:order:{order['id']}"


def _customer_key(order: dict[str, Any]) -> str:
    cust = order.get("customer")
    return str(cust["id"]) if isinstance(cust, dict) and cust.get("id") is not None else _guest_key(order)


def _shop_day(world: World, stamp: str) -> str:
    """The day of a timestamp in the shop's time zone: what the pipeline's GraphQL read (the default) gives as an
    order's date. GraphQL's DateTime is UTC; the messy store writes a few orders' REST timestamps in an offset
    other than the shop's, whose own day can differ (docs/connectors/shopify.md)."""
    try:
        return dt.datetime.fromisoformat(stamp).astimezone(world.shop_zone()).date().isoformat()
    except ValueError:
        return stamp[:10]


@dataclass
class World:
    shop: ShopifySandbox
    books_run: RunningSandbox
    env: dict[str, str]
    tmp: Path
    _zone: ZoneInfo | None = None

    def ferry(self, *args: str, env: dict[str, str] | None = None) -> Any:
        proc = subprocess.run([sys.executable, "-m", "ferry", *args, "--json"], env=env or self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.stdout.strip(), proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def shop_zone(self) -> ZoneInfo:
        """The shop's IANA time zone, as the store answers ``shop { ianaTimezone }``."""
        if self._zone is None:
            response = httpx.post(
                f"{self.env['SHOPIFY_URL']}/admin/api/2026-10/graphql.json",
                json={"query": "{ shop { ianaTimezone } }"},
                headers={"X-Shopify-Access-Token": self.env["SHOPIFY_ACCESS_TOKEN"]},
                verify=ssl.create_default_context(cafile=self.env["SHOPIFY_CA_FILE"]), timeout=30,
            )
            response.raise_for_status()
            self._zone = ZoneInfo(response.json()["data"]["shop"]["ianaTimezone"])
        return self._zone

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        verify = ssl.create_default_context(cafile=str(self.books_run.ca_file))
        response = httpx.request(method, f"{self.books_run.url}/__sandbox/{path}", verify=verify, timeout=30,
                                 **kwargs)
        response.raise_for_status()
        return response.json()

    def records(self, entity: str) -> list[dict[str, Any]]:
        return list(self.admin("GET", f"records/{entity}"))

    def dead_letters(self, pipeline: str, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {obj: {} for obj in OBJECTS}
        for letter in self.ferry("dlq", "list", "--pipeline", pipeline, "--limit", "100000", env=env):
            out[letter["object"]][letter["record_key"]] = letter
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("qbo-e2e")
    shop = ShopifySandbox(tmp, seed=9, customers=60, products=25, orders=200)
    # An empty company (its chart of accounts only), Intuit's throttles on: the sink paces itself under them.
    books = QuickBooksSandbox(tmp / "books", seed=9, customers=0, products=0, orders=0)
    shop_run = start_in_thread(shop.app, tmp)
    books_run = books.start()
    try:
        shop_info = {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)}
        books_info = {**books.credentials(books_run.url), "ca_file": str(books_run.ca_file),
                      "token_file": str(tmp / "qbo.token")}
        env = {**os.environ, **FLOWS["shopify-to-quickbooks"].env(shop_info, books_info),
               "FERRY_HOME": str(tmp / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
        yield World(shop, books_run, env, tmp)
    finally:
        books_run.stop()
        shop_run.stop()


@pytest.fixture(scope="module")
def expected(world: World) -> dict[str, set[str]]:
    """The source key of every record each object must account for, from the raw store."""
    store = world.shop.store
    people = {str(c["id"]) for c in store.customers}
    people |= {_customer_key(o) for o in store.orders}
    variants = {str(v["id"]) for p in store.products for v in p.get("variants") or []}
    return {"Customer": people, "Item": variants, "Invoice": {str(o["id"]) for o in store.orders}}


@pytest.fixture(scope="module")
def first(world: World) -> dict[str, Any]:
    stats = world.ferry("run", PIPELINE)
    assert stats["status"] == "succeeded", stats.get("error")
    return stats


def _written_keys(world: World) -> dict[str, dict[str, dict[str, Any]]]:
    """Source key -> QuickBooks record, read from the keys the example pipeline puts in the lookup fields."""
    orders = {str(o["name"]): str(o["id"]) for o in world.shop.store.orders}
    # QuickBooks refuses ':' in a DisplayName: the sink writes a guest's "guest:<email>" key as "guest-<email>".
    people = {str(c["id"]) for c in world.shop.store.customers} | {_customer_key(o) for o in world.shop.store.orders}
    source_key = {clean_name(k): k for k in people}
    customers = {source_key.get(k, k): r for r in world.records("Customer")
                 if (k := r["DisplayName"].rsplit("(", 1)[-1].rstrip(")"))}
    items = {r["Name"].split(" ", 1)[0]: r for r in world.records("Item") if r["Name"][0].isdigit()}
    invoices = {orders[r["DocNumber"]]: r for r in world.records("Invoice")}
    return {"Customer": customers, "Item": items, "Invoice": invoices}


def test_every_record_is_in_the_books_once_or_dead_lettered_never_both_never_lost(
    world: World, expected: dict[str, set[str]], first: dict[str, Any]
) -> None:
    letters = world.dead_letters("shopify-to-quickbooks")
    written = _written_keys(world)
    for obj, keys in expected.items():
        assert keys, obj
        held, dead = set(written[obj]), set(letters[obj])
        assert not held & dead, f"{obj}: both written and dead-lettered: {sorted(held & dead)[:5]}"
        missing, extra = sorted(keys - held - dead)[:5], sorted((held | dead) - keys)[:5]
        assert held | dead == keys, f"{obj}: missing {missing}, extra {extra}"
        assert len(held) > len(keys) / 2, f"{obj}: most records should be writable ({len(held)}/{len(keys)})"
        for key, letter in letters[obj].items():
            assert letter["error_code"] and letter["message"], (obj, key)
        assert first["objects"][obj]["written"] == len(held), obj
    for entity, field in (("Customer", "DisplayName"), ("Item", "Name"), ("Invoice", "DocNumber")):
        counts = Counter(str(r[field]).lower() for r in world.records(entity))
        assert max(counts.values()) == 1, entity


def test_invoices_name_their_customer_and_items_with_the_stores_quantities_and_prices(
    world: World, first: dict[str, Any]
) -> None:
    written = _written_keys(world)
    customer_of = {r["Id"]: key for key, r in written["Customer"].items()}
    item_of = {r["Id"]: key for key, r in written["Item"].items()}
    orders = {str(o["id"]): o for o in world.shop.store.orders}
    checked = 0
    for key, invoice in written["Invoice"].items():
        raw = orders[key]
        assert customer_of[invoice["CustomerRef"]["value"]] == _customer_key(raw), key
        lines = [ln for ln in invoice["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
        assert len(lines) == len(raw["line_items"]), key
        total = Decimal(0)
        for line, item in zip(lines, raw["line_items"], strict=True):
            detail = line["SalesItemLineDetail"]
            assert Decimal(str(detail["Qty"])) == Decimal(str(item["quantity"])), key
            assert Decimal(str(detail["UnitPrice"])) == Decimal(str(item["price"])), key
            if item.get("variant_id") is not None:
                assert item_of[detail["ItemRef"]["value"]] == str(item["variant_id"]), key
            total += Decimal(str(item["quantity"])) * Decimal(str(item["price"]))
        assert Decimal(str(invoice["TotalAmt"])) == total, key
        assert invoice["TxnDate"] == _shop_day(world, str(raw["processed_at"] or raw["created_at"])), key
        checked += 1
    assert checked > 50


def test_a_second_run_writes_nothing(world: World, first: dict[str, Any]) -> None:
    before = {e: len(world.records(e)) for e in OBJECTS}
    again = world.ferry("run", PIPELINE)
    assert again["status"] == "succeeded"
    for obj in OBJECTS:
        assert again["objects"][obj]["written"] == 0, obj
    assert {e: len(world.records(e)) for e in OBJECTS} == before


def test_lost_answers_after_commit_make_no_duplicate(world: World, expected: dict[str, set[str]],
                                                     first: dict[str, Any]) -> None:
    """The same store into a second company while a third of the write calls commit and lose their answer."""
    books = QuickBooksSandbox(world.tmp / "books2", seed=9, customers=0, products=0, orders=0,
                              faults={"seed": 3, "rules": [{"kind": "commit_then_reset", "rate": 0.33,
                                                            "method": "POST"}]})
    run = books.start()
    try:
        info = {**books.credentials(run.url), "ca_file": str(run.ca_file), "token_file": str(world.tmp / "qbo2.token")}
        env = {**world.env, **FLOWS["shopify-to-quickbooks"].target_env(info),
               "FERRY_HOME": str(world.tmp / "home2")}
        stats = world.ferry("run", PIPELINE, env=env)
        assert stats["status"] == "succeeded", stats.get("error")
        lost = books.faults.injected.get("commit_then_reset", 0)
        assert lost > 3
        verify = ssl.create_default_context(cafile=str(run.ca_file))
        for entity, field in (("Customer", "DisplayName"), ("Item", "Name"), ("Invoice", "DocNumber")):
            rows = httpx.get(f"{run.url}/__sandbox/records/{entity}", verify=verify, timeout=30).json()
            counts = Counter(str(r[field]).lower() for r in rows)
            assert max(counts.values()) == 1, entity
            # Same outcome as without faults: as many written as the clean run wrote.
            assert stats["objects"][entity]["written"] == first["objects"][entity]["written"], entity
    finally:
        run.stop()
