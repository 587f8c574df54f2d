"""`ferry run examples/salesforce-to-quickbooks.yml` as a user runs it, against both sandboxes over HTTPS.

A Salesforce org filled with a seeded retail org (through its own API) is read by the real CLI in a child
process and written to a QuickBooks Online company that holds nothing but its chart of accounts. From the
org's raw records alone (not ferry's normalizer), the test derives every Customer, Item and Invoice the
company must hold and checks each is there once or in the dead-letter queue with a reason; that invoices
carry the org's order lines; that each written record's QuickBooks Id is back on its Salesforce record; that
a second run writes nothing (the write-back is not a change to sync); that an edit in Salesforce reaches the
books as an update, and a delete in Salesforce is read but not propagated.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import FLOWS
from ferry.connectors.salesforce import SalesforceReadSource
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.errors import TransientError
from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.retail import generate_retail_org, seed_retail_org
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.store import Store

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "examples/salesforce-to-quickbooks.yml"
OBJECTS = ("Customer", "Item", "Invoice")
LINK = "QuickBooks_Id__c"
CENT = Decimal("0.01")


@dataclass
class World:
    org: SalesforceSandbox
    org_run: RunningSandbox
    books_run: RunningSandbox
    env: dict[str, str]
    books_sandbox: QuickBooksSandbox

    def ferry(self, *args: str) -> Any:
        proc = subprocess.run([sys.executable, "-m", "ferry", *args, "--json"], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.stdout.strip(), proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def books(self, entity: str) -> list[dict[str, Any]]:
        verify = ssl.create_default_context(cafile=str(self.books_run.ca_file))
        response = httpx.get(f"{self.books_run.url}/__sandbox/records/{entity}", verify=verify, timeout=30)
        response.raise_for_status()
        return list(response.json())

    def crm(self, sobject: str) -> dict[str, dict[str, Any]]:
        """The org's live records of ``sobject`` by Id, as stored (the raw source)."""
        return dict(self.org.state.store.table(sobject).rows)

    def salesforce(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the org's REST API as a CRM user's tool makes it (client credentials)."""
        creds = self.org.credentials(self.org_run.url)
        verify = ssl.create_default_context(cafile=str(self.org_run.ca_file))
        with httpx.Client(base_url=self.org_run.url, verify=verify, timeout=30) as http:
            token = http.post("/services/oauth2/token", data={
                "grant_type": "client_credentials", "client_id": creds["client_id"],
                "client_secret": creds["client_secret"]}).json()["access_token"]
            return http.request(method, f"/services/data/v62.0{path}", headers={"Authorization": f"Bearer {token}"},
                                **kwargs)

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {obj: {} for obj in OBJECTS}
        for letter in self.ferry("dlq", "list", "--pipeline", "salesforce-to-quickbooks", "--limit", "100000"):
            out[letter["object"]][letter["record_key"]] = letter
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("sf-qbo-e2e")
    org = SalesforceSandbox(tmp / "org", seed=5)
    books = QuickBooksSandbox(tmp / "books", seed=5, customers=0, products=0, orders=0)
    org_run = start_in_thread(org.app, tmp / "org")
    books_run = books.start()
    try:
        org_info = {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)}
        retail = generate_retail_org(5, accounts=60, products=25, orders=160)
        seed_retail_org(org_info["url"], org_info["client_id"], org_info["client_secret"], org_info["ca_file"], retail)
        books_info = {**books.credentials(books_run.url), "ca_file": str(books_run.ca_file),
                      "token_file": str(tmp / "qbo.token")}
        env = {**os.environ, **FLOWS["salesforce-to-quickbooks"].env(org_info, books_info),
               "FERRY_HOME": str(tmp / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
        yield World(org, org_run, books_run, env, books)
    finally:
        books_run.stop()
        org_run.stop()


@pytest.fixture(scope="module")
def expected(world: World) -> dict[str, set[str]]:
    """The Salesforce Id of every record each object must account for, from the raw org."""
    activated = {i for i, o in world.crm("Order").items() if o["Status"] == "Activated"}
    return {"Customer": set(world.crm("Account")), "Item": set(world.crm("Product2")), "Invoice": activated}


@pytest.fixture(scope="module")
def first(world: World) -> dict[str, Any]:
    stats = world.ferry("run", PIPELINE)
    assert stats["status"] == "succeeded", stats.get("error")
    return stats


def test_plan_counts_what_the_first_run_will_read_before_any_write(
    world: World, expected: dict[str, set[str]]
) -> None:
    """`ferry plan` (run first in this module: nothing written yet) reaches the org and sizes each object."""
    plan = world.ferry("plan", PIPELINE)
    objects = {o["name"]: o for o in plan["objects"]}
    assert plan["load_order"] == list(OBJECTS)
    for obj in OBJECTS:
        assert objects[obj]["to_read"] == len(expected[obj]), obj
        assert objects[obj]["problems"] == [], obj
    assert world.books("Customer") == []


def _written(world: World) -> dict[str, dict[str, dict[str, Any]]]:
    """Salesforce Id -> QuickBooks record, from the Ids the example pipeline puts in names and DocNumbers."""
    numbers = {o["OrderNumber"]: i for i, o in world.crm("Order").items()}
    return {
        "Customer": {r["DisplayName"].rsplit("(", 1)[-1].rstrip(")"): r for r in world.books("Customer")},
        "Item": {r["Name"].split(" ", 1)[0]: r for r in world.books("Item") if r["Name"].startswith("01t")},
        "Invoice": {numbers[r["DocNumber"]]: r for r in world.books("Invoice")},
    }


def test_every_record_is_in_the_books_once_or_dead_lettered_never_both_never_lost(
    world: World, expected: dict[str, set[str]], first: dict[str, Any]
) -> None:
    letters, written = world.dead_letters(), _written(world)
    for obj, keys in expected.items():
        held, dead = set(written[obj]), set(letters[obj])
        assert not held & dead, f"{obj}: both written and dead-lettered: {sorted(held & dead)[:5]}"
        missing, extra = sorted(keys - held - dead)[:5], sorted((held | dead) - keys)[:5]
        assert held | dead == keys, f"{obj}: missing {missing}, extra {extra}"
        assert len(held) > len(keys) * 0.8, obj
        assert all(letter["error_code"] and letter["message"] for letter in letters[obj].values()), obj
        assert first["objects"][obj]["written"] == len(held), obj
    # A colon QuickBooks refuses (2040) is written as '-' by the sink.
    colon = {k for k, a in world.crm("Account").items() if ":" in a["Name"]}
    assert colon and colon <= set(written["Customer"])
    for k in colon:
        name = written["Customer"][k]["DisplayName"]
        assert ":" not in name and "-" in name, k
    for entity, field in (("Customer", "DisplayName"), ("Item", "Name"), ("Invoice", "DocNumber")):
        assert max(Counter(str(r[field]).lower() for r in world.books(entity)).values()) == 1, entity


def test_invoices_carry_the_orders_lines_customer_and_date(world: World, first: dict[str, Any]) -> None:
    written = _written(world)
    customer_of = {r["Id"]: key for key, r in written["Customer"].items()}
    item_of = {r["Id"]: key for key, r in written["Item"].items()}
    orders, items = world.crm("Order"), world.crm("OrderItem")
    checked = 0
    for key, invoice in written["Invoice"].items():
        order = orders[key]
        own = sorted((i for i in items.values() if i["OrderId"] == key), key=lambda i: i["Id"])
        assert customer_of[invoice["CustomerRef"]["value"]] == order["AccountId"], key
        assert invoice["TxnDate"] == order["EffectiveDate"], key
        lines = [ln for ln in invoice["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
        assert len(lines) == len(own), key
        total = Decimal(0)
        for line, item in zip(lines, own, strict=True):
            detail = line["SalesItemLineDetail"]
            assert item_of[detail["ItemRef"]["value"]] == item["Product2Id"], key
            assert Decimal(str(detail["Qty"])) == Decimal(str(item["Quantity"])), key
            assert Decimal(str(detail["UnitPrice"])) == Decimal(str(item["UnitPrice"])), key
            amount = Decimal(str(item["Quantity"])) * Decimal(str(item["UnitPrice"]))
            total += amount.quantize(CENT, ROUND_HALF_UP)  # a line amount in cents, as QuickBooks checks it
        assert Decimal(str(invoice["TotalAmt"])) == total, key
        checked += 1
    assert checked > 100


def test_each_written_records_quickbooks_id_is_back_in_salesforce(world: World, first: dict[str, Any]) -> None:
    written = _written(world)
    for obj, sobject in (("Customer", "Account"), ("Item", "Product2"), ("Invoice", "Order")):
        crm = world.crm(sobject)
        linked = {k: r.get(LINK) for k, r in crm.items() if r.get(LINK)}
        assert linked == {k: r["Id"] for k, r in written[obj].items()}, obj
        assert first["linked_back"][sobject] == len(linked), obj


def test_a_second_run_writes_nothing_and_links_nothing(world: World, first: dict[str, Any]) -> None:
    before = {e: len(world.books(e)) for e in OBJECTS}
    again = world.ferry("run", PIPELINE)
    assert again["status"] == "succeeded", again.get("error")
    for obj in OBJECTS:
        assert again["objects"][obj]["written"] == 0, obj
    assert not any(again["linked_back"].values())
    assert {e: len(world.books(e)) for e in OBJECTS} == before


def test_an_edit_in_salesforce_reaches_the_books_and_a_delete_is_read_not_propagated(
    world: World, first: dict[str, Any]
) -> None:
    written = _written(world)
    account = sorted(written["Customer"])[0]
    edit = world.salesforce("PATCH", f"/sobjects/Account/{account}", json={"Phone": "+1 512 555 0199"})
    assert edit.status_code == 204
    unsold = next(k for k, p in world.crm("Product2").items()
                  if k in written["Item"] and not any(i["Product2Id"] == k for i in world.crm("OrderItem").values()))
    assert world.salesforce("DELETE", f"/sobjects/Product2/{unsold}").status_code == 204
    stats = world.ferry("run", PIPELINE)
    assert stats["status"] == "succeeded", stats.get("error")
    assert stats["objects"]["Customer"]["updated"] == stats["objects"]["Customer"]["written"] == 1
    assert stats["objects"]["Item"]["written"] == stats["objects"]["Invoice"]["written"] == 0
    assert stats["source_reads"]["Product2"]["deleted"] == 1
    books = {r["Id"]: r for r in world.books("Customer")}
    assert books[written["Customer"][account]["Id"]]["PrimaryPhone"]["FreeFormNumber"] == "+1 512 555 0199"
    assert any(r["Id"] == written["Item"][unsold]["Id"] for r in world.books("Item"))  # kept: not propagated


def test_a_name_the_books_already_use_is_a_dead_letter_until_renamed_in_salesforce_then_replayed(
    world: World, first: dict[str, Any]
) -> None:
    """QuickBooks keeps DisplayName unique across customers, vendors and employees (6240): a new account whose
    name a vendor already has is refused with QuickBooks' reason, its order follows it, and renaming the
    account in Salesforce then replaying puts both in the books."""
    created = world.salesforce("POST", "/sobjects/Account", json={"Name": "Harbor Freight Lines"})
    assert created.status_code == 201, created.text
    account = created.json()["id"]
    from ferry.sandbox.quickbooks.writes import Writer
    Writer(world.books_sandbox.company).create("Vendor", {"DisplayName": f"Harbor Freight Lines ({account})"})
    stats = world.ferry("run", PIPELINE)
    assert stats["objects"]["Customer"]["dead_lettered"] == 1, stats["objects"]["Customer"]
    letter = world.dead_letters()["Customer"][account]
    assert letter["error_code"] == "QBO_6240", letter
    renamed = world.salesforce("PATCH", f"/sobjects/Account/{account}", json={"Name": "Harbor Freight Retail"})
    assert renamed.status_code == 204
    report = world.ferry("dlq", "replay", PIPELINE, "--object", "Customer")
    assert report["counts"] == {"replayed": 1}, report["counts"]
    names = {r["DisplayName"] for r in world.books("Customer")}
    assert f"Harbor Freight Retail ({account})" in names
    again = world.ferry("run", PIPELINE)
    assert all(again["objects"][obj]["written"] == 0 for obj in OBJECTS)


@contextmanager
def _small_pair(tmp: Path, seed: int) -> Iterator[tuple[SalesforceSandbox, QuickBooksSandbox, Any, Store]]:
    """A small seeded org and an empty company, the example pipeline pointed at them, a fresh ferry store."""
    org = SalesforceSandbox(tmp / "org", seed=seed)
    books = QuickBooksSandbox(tmp / "books", seed=seed, customers=0, products=0, orders=0)
    org_run, books_run = start_in_thread(org.app, tmp / "org"), books.start()
    try:
        org_info = {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)}
        retail = generate_retail_org(seed, accounts=15, products=8, orders=30)
        seed_retail_org(org_info["url"], org_info["client_id"], org_info["client_secret"], org_info["ca_file"], retail)
        books_info = {**books.credentials(books_run.url), "ca_file": str(books_run.ca_file),
                      "token_file": str(tmp / "qbo.token")}
        env = {**os.environ, **FLOWS["salesforce-to-quickbooks"].env(org_info, books_info)}
        yield org, books, load_pipeline(REPO / PIPELINE, env), Store(tmp / "ferry.db")
    finally:
        books_run.stop()
        org_run.stop()


def test_a_run_that_dies_before_linking_back_is_finished_by_the_next(tmp_path: Path) -> None:
    """Every write-back call fails (the org answers 503 past the HTTP core's retries): the books hold the
    records, the run fails, staging stays. The next run writes nothing to the books and links everything."""
    with _small_pair(tmp_path, 6) as (org, books, spec, store):
        org.faults.configure({"rules": [{"kind": "503", "rate": 1.0, "path": "composite/sobjects", "method": "PATCH"}]})
        with pytest.raises(TransientError):
            asyncio.run(Runner(spec, store).run())
        assert store.list_runs(spec.name, 1)[0].status == "failed"
        assert not any(r.get(LINK) for r in org.state.store.table("Account").rows.values())
        held = {e: len(books.company.all(e)) for e in OBJECTS}
        assert held["Customer"] > 0
        org.faults.configure({})
        stats = asyncio.run(Runner(spec, store).run())
        assert stats.status == "succeeded"
        assert all(s.written == 0 for s in stats.objects.values())
        assert {e: len(books.company.all(e)) for e in OBJECTS} == held
        linked = {k for k, r in org.state.store.table("Account").rows.items() if r.get(LINK)}
        assert len(linked) == stats.linked_back["Account"] == held["Customer"]  # each customer the books hold


def test_an_edit_made_while_linking_back_is_not_mistaken_for_the_write_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRM user edits an account between ferry's write-back and its re-read: the re-read version maps to a
    different payload, so it is not recorded as written, and the next run sends the edit to the books."""
    with _small_pair(tmp_path, 8) as (_org, books, spec, store):
        edited: list[str] = []
        original = SalesforceReadSource.fetch_many

        async def edit_then_fetch(self: SalesforceReadSource, stream: str, keys: Any) -> Any:
            if stream == "Account" and not edited:
                edited.append(sorted(keys)[0])
                await self._client.json("PATCH", self._client.data_path(f"/sobjects/Account/{edited[0]}"),
                                        label="a user's edit", json={"Phone": "+1 415 555 0142"})
            return await original(self, stream, keys)

        monkeypatch.setattr(SalesforceReadSource, "fetch_many", edit_then_fetch)
        first = asyncio.run(Runner(spec, store).run())
        assert first.status == "succeeded" and edited
        monkeypatch.setattr(SalesforceReadSource, "fetch_many", original)
        second = asyncio.run(Runner(spec, store).run())
        assert second.objects["Customer"].written == second.objects["Customer"].updated == 1
        assert second.objects["Item"].written == second.objects["Invoice"].written == 0
        phones = [c.get("PrimaryPhone", {}).get("FreeFormNumber") for c in books.company.all("Customer")
                  if c["DisplayName"].endswith(f"({edited[0]})")]
        assert phones == ["+1 415 555 0142"]

