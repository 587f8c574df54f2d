"""Chaos for salesforce-to-quickbooks: `ferry run` SIGKILLed at random moments while a CRM user edits accounts.

The org (REST pages of 200 records, so a read spans pages) is read, written to an empty QuickBooks company and
linked back, by the real CLI in a child process that is killed at a random moment of each life: in a read,
in a batch write whose answer never arrives, in the link back. Between lives a user changes some accounts'
phone numbers in Salesforce. Then the pipeline is run to the end, and the books and the org are reconciled
with the org's raw records: every Customer, Item and Invoice once or dead-lettered (never both, never
missing), every edit in the books (latest wins), every written record's QuickBooks Id on its Salesforce
record, and one more run writes nothing.

The short version runs with the suite; the long one (``-m slow``) kills more, on a larger org.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import ssl
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import FLOWS
from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.retail import generate_retail_org, seed_retail_org
from ferry.sandbox.serve import start_in_thread

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "salesforce-to-quickbooks.yml"
OBJECTS = {"Customer": "Account", "Item": "Product2", "Invoice": "Order"}
LINK = "QuickBooks_Id__c"


@dataclass(frozen=True)
class KillConfig:
    seed: int
    accounts: int
    products: int
    orders: int
    kills: int
    max_delay: float  # seconds after a life's run has begun (its run row exists) the kill may land


def _pipeline(tmp: Path) -> Path:
    """The example with REST pages of 200 records: a read spans pages, and a kill can land between them."""
    text = EXAMPLE.read_text(encoding="utf-8").replace("  order_statuses: [Activated]\n",
                                                       "  order_statuses: [Activated]\n  query_batch_size: 200\n")
    assert "query_batch_size" in text
    path = tmp / "salesforce-to-quickbooks.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _ferry(env: dict[str, str], *args: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", "ferry", *args, "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_with_kills(tmp: Path, config: KillConfig) -> None:
    rng = random.Random(config.seed)
    org = SalesforceSandbox(tmp / "org", seed=config.seed)
    books = QuickBooksSandbox(tmp / "books", seed=config.seed, customers=0, products=0, orders=0)
    org_run, books_run = start_in_thread(org.app, tmp / "org"), books.start()
    try:
        creds = org.credentials(org_run.url)
        org_info = {**creds, "ca_file": str(org_run.ca_file)}
        retail = generate_retail_org(config.seed, accounts=config.accounts, products=config.products,
                                     orders=config.orders)
        seed_retail_org(org_run.url, creds["client_id"], creds["client_secret"], org_run.ca_file, retail)
        books_info = {**books.credentials(books_run.url), "ca_file": str(books_run.ca_file),
                      "token_file": str(tmp / "qbo.token")}
        env = {**os.environ, **FLOWS["salesforce-to-quickbooks"].env(org_info, books_info),
               "FERRY_HOME": str(tmp / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
        pipeline = _pipeline(tmp)
        verify = ssl.create_default_context(cafile=str(org_run.ca_file))
        with httpx.Client(base_url=org_run.url, verify=verify, timeout=30) as crm:
            token = crm.post("/services/oauth2/token", data={
                "grant_type": "client_credentials", "client_id": creds["client_id"],
                "client_secret": creds["client_secret"]}).json()["access_token"]
            crm.headers["Authorization"] = f"Bearer {token}"
            phones: dict[str, str] = {}
            killed = 0
            for life in range(config.kills):
                before = _last_run_id(tmp / "home" / "ferry.db")
                proc = subprocess.Popen([sys.executable, "-m", "ferry", "run", str(pipeline), "--json"], env=env,
                                        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                # Timed from the run's own start (its run row), not from a first call to the org: `ferry run`'s
                # preflight calls the org before the run begins, and a run of the short org takes about a second.
                _wait_for_run(tmp / "home" / "ferry.db", proc, before)
                time.sleep(rng.uniform(0.0, config.max_delay))
                if proc.poll() is None:
                    proc.kill()
                    killed += 1
                proc.wait()
                for account in rng.sample(sorted(org.state.store.table("Account").rows), 2):  # a user's edits
                    phones[account] = f"+1 206 555 {life:02d}{rng.randrange(100):02d}"
                    edit = crm.patch(f"/services/data/v62.0/sobjects/Account/{account}",
                                     json={"Phone": phones[account]})
                    assert edit.status_code == 204, edit.text
        final = _ferry(env, "run", str(pipeline))
        runs = _ferry(env, "runs", "--limit", "1000")
        died = [r for r in runs if r["status"] == "died"]  # killed after the run began (not while Python started)
        print(f"\nsalesforce-to-quickbooks kills: {killed} lives killed, {len(died)} of them inside a run; "
              f"{len(runs)} runs")
        assert len(died) >= config.kills // 2, f"only {len(died)} of {config.kills} kills landed inside a run"
        assert final["status"] == "succeeded", final.get("error")
        _reconcile(org, books_run, env, pipeline, phones)
    finally:
        books_run.stop()
        org_run.stop()


def _last_run_id(db: Path) -> int:
    if not db.exists():
        return 0
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()[0])


def _wait_for_run(db: Path, proc: subprocess.Popen[bytes], after: int, timeout: float = 60) -> None:
    """Until this life's run (an id past ``after``: a killed life's row stays `running` until the next run
    closes it) is in the state store (it holds its pipeline lock then), or the process has ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if db.exists():
            try:
                with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
                    if conn.execute("SELECT 1 FROM runs WHERE id > ? LIMIT 1", (after,)).fetchone():
                        return
            except sqlite3.Error:
                pass  # the database is being created or migrated
        time.sleep(0.005)


def _reconcile(org: SalesforceSandbox, books_run: Any, env: dict[str, str], pipeline: Path,
               phones: dict[str, str]) -> None:
    verify = ssl.create_default_context(cafile=str(books_run.ca_file))

    def books(entity: str) -> list[dict[str, Any]]:
        return list(httpx.get(f"{books_run.url}/__sandbox/records/{entity}", verify=verify, timeout=30).json())

    crm = {sobject: dict(org.state.store.table(sobject).rows) for sobject in OBJECTS.values()}
    numbers = {o["OrderNumber"]: k for k, o in crm["Order"].items()}
    written = {
        "Customer": [(r["DisplayName"].rsplit("(", 1)[-1].rstrip(")"), r) for r in books("Customer")],
        "Item": [(r["Name"].split(" ", 1)[0], r) for r in books("Item") if r["Name"].startswith("01t")],
        "Invoice": [(numbers[r["DocNumber"]], r) for r in books("Invoice")],
    }
    letters: dict[str, set[str]] = {obj: set() for obj in OBJECTS}
    for letter in _ferry(env, "dlq", "list", "--pipeline", "salesforce-to-quickbooks", "--limit", "100000"):
        letters[letter["object"]].add(letter["record_key"])
    for obj, sobject in OBJECTS.items():
        keys = [k for k, _ in written[obj]]
        assert max(Counter(keys).values()) == 1, f"{obj}: a duplicate in the books"
        expected = {k for k, r in crm[sobject].items() if sobject != "Order" or r["Status"] == "Activated"}
        held = set(keys)
        assert not held & letters[obj], f"{obj}: written and dead-lettered: {sorted(held & letters[obj])[:5]}"
        assert held | letters[obj] == expected, f"{obj}: lost {sorted(expected - held - letters[obj])[:5]}"
        linked = {k: r.get(LINK) for k, r in crm[sobject].items() if r.get(LINK)}
        assert linked == {k: r["Id"] for k, r in written[obj]}, f"{obj}: the links back differ from the books"
    customers = dict(written["Customer"])
    for account, phone in phones.items():
        if account in customers:
            assert customers[account].get("PrimaryPhone", {}).get("FreeFormNumber") == phone, account
    again = _ferry(env, "run", str(pipeline))
    assert all(again["objects"][obj]["written"] == 0 for obj in OBJECTS), again["objects"]


def test_kills_short(tmp_path: Path) -> None:
    run_with_kills(tmp_path, KillConfig(seed=21, accounts=60, products=15, orders=160, kills=3, max_delay=0.6))


@pytest.mark.slow
def test_kills_long(tmp_path: Path) -> None:
    run_with_kills(tmp_path, KillConfig(seed=22, accounts=600, products=120, orders=2400, kills=15, max_delay=6.0))
