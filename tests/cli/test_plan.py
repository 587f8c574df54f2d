"""`ferry plan` against live Shopify and Salesforce sandboxes: the example is clean; a broken mapping, a wrong
source token and a wrong Salesforce client id are caught before any write, each said once."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.sandbox.shopify import ShopifySandbox, generate_store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    state = tmp_path_factory.mktemp("org")
    sandbox = SalesforceSandbox(state)
    shop = ShopifySandbox(state, store=generate_store(seed=2, customers=40, products=6, orders=30))
    running = start_in_thread(sandbox.app, state)
    shop_running = start_in_thread(shop.app, state)
    creds = sandbox.credentials(running.url)
    env = {
        "FERRY_HOME": str(state / "home"),
        "SHOPIFY_URL": shop_running.url,
        "SHOPIFY_ACCESS_TOKEN": shop.access_token,
        "SHOPIFY_CA_FILE": str(shop_running.ca_file),
        "SALESFORCE_LOGIN_URL": creds["login_url"],
        "SALESFORCE_CLIENT_ID": creds["client_id"],
        "SALESFORCE_USERNAME": creds["username"],
        "SALESFORCE_PRIVATE_KEY_FILE": creds["private_key_file"],
        "SALESFORCE_CA_FILE": str(running.ca_file),
    }
    yield env, running.url
    shop_running.stop()
    running.stop()


def _plan(path: Path, env: dict[str, str], *, as_json: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", "plan", str(path), *(["--json"] if as_json else [])],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _writes(url: str, ca: str) -> int:
    stats = httpx.get(f"{url}/__sandbox/stats", verify=ssl.create_default_context(cafile=ca)).json()
    # A Composite is a container (ferry describes every object in one): its subrequests say what it did.
    calls = {k: n for k, n in stats["by_endpoint"].items() if k != "POST /services/data/vXX.X/composite"}
    calls |= {f"{k} (in composite)": n for k, n in stats["composite_subrequests"].items()}
    return sum(n for k, n in calls.items() if k.split()[0] in ("POST", "PATCH", "PUT", "DELETE"))


def test_example_plan_is_clean_and_ordered(org: tuple[dict[str, str], str]) -> None:
    env, _ = org
    proc = _plan(EXAMPLE, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["problems"] == []
    order = report["load_order"]
    assert order.index("Account") < order.index("Contact") < order.index("Order") < order.index("OrderItem")
    assert order.index("Product2") < order.index("PricebookEntry") < order.index("OrderItem")
    contact = next(o for o in report["objects"] if o["name"] == "Contact")
    assert {"field": "Account.Shopify_Customer_Id__c"}.items() <= next(
        f for f in contact["fields"] if f["field"].startswith("Account.")
    ).items()


def test_broken_mapping_is_reported_field_by_field_without_writing(
    org: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, url = org
    text = EXAMPLE.read_text()
    text = text.replace(
        "      Phone: phone\n      MailingCity", "      Phone: phone\n      Shoe_Size__c: phone\n      MailingCity", 1
    )
    text = text.replace("    external_id: Shopify_Order_Id__c", "    external_id: Name", 1)
    text = text.replace(
        "AccountId: {ref: Account, by: Shopify_Customer_Id__c, value: customer_key}",
        "AccountId: {ref: Account, by: Phone, value: customer_key}",
        1,
    )
    text = text.replace("      Name: display_name\n", "", 1)  # Product2.Name is required
    broken = tmp_path / "broken.yml"
    broken.write_text(text)
    before = _writes(url, env["SALESFORCE_CA_FILE"])
    proc = _plan(broken, env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problems = "\n".join(json.loads(proc.stdout)["problems"])
    assert "Contact.Shoe_Size__c" in problems
    assert "Order.Name" in problems and "external id" in problems
    assert "Order.AccountId" in problems and "Account.Phone" in problems
    assert "Product2.Name" in problems and "required" in problems
    assert _writes(url, env["SALESFORCE_CA_FILE"]) == before


def test_plan_says_what_the_next_run_reads_and_writes(org: tuple[dict[str, str], str]) -> None:
    env, _ = org
    proc = _plan(EXAMPLE, env, as_json=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "source shopify: reachable, credentials accepted; a next run would read ~40 customers, ~6 products, " \
        "~30 orders" in out, out
    sized = re.findall(r"strategy of the next run \(~([\d,]+) records: 0 pending \+ ~([\d,]+) to read\)", out)
    assert len(sized) == 6 and all(a == b for a, b in sized) and int(sized[0][0]) >= 40, sized
    assert "records pending" not in out


def test_a_wrong_shopify_token_fails_plan_with_one_problem(org: tuple[dict[str, str], str]) -> None:
    env, url = org
    before = _writes(url, env["SALESFORCE_CA_FILE"])
    proc = _plan(EXAMPLE, {**env, "SHOPIFY_ACCESS_TOKEN": "shpat_wrong"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (problem,) = json.loads(proc.stdout)["problems"]
    assert problem.startswith("source shopify: ") and "401" in problem and "shpat_wrong" not in problem
    assert _writes(url, env["SALESFORCE_CA_FILE"]) == before


def test_a_wrong_salesforce_client_id_is_one_error_once(org: tuple[dict[str, str], str]) -> None:
    env, _ = org
    proc = _plan(EXAMPLE, {**env, "SALESFORCE_CLIENT_ID": "not-a-client"}, as_json=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "", "tables were printed for a target that refused the credentials"
    assert proc.stderr.count("invalid_client") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
