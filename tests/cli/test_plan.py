"""`ferry plan` against a live Salesforce sandbox: the example is clean; a broken mapping is caught before any write."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    state = tmp_path_factory.mktemp("org")
    sandbox = SalesforceSandbox(state)
    running = start_in_thread(sandbox.app, state)
    creds = sandbox.credentials(running.url)
    env = {
        "FERRY_HOME": str(state / "home"),
        # plan never reads the source, but the pipeline still names its settings
        "SHOPIFY_URL": "https://127.0.0.1:9",
        "SHOPIFY_ACCESS_TOKEN": "shpat_unused",
        "SALESFORCE_LOGIN_URL": creds["login_url"],
        "SALESFORCE_CLIENT_ID": creds["client_id"],
        "SALESFORCE_USERNAME": creds["username"],
        "SALESFORCE_PRIVATE_KEY_FILE": creds["private_key_file"],
        "SALESFORCE_CA_FILE": str(running.ca_file),
    }
    yield env, running.url
    running.stop()


def _plan(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", "plan", str(path), "--json"],
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
