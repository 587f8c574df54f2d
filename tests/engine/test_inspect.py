"""`ferry plan`'s report, in process, against the Salesforce sandbox: type mismatches, write access,
staged values that would be dead-lettered, the write strategy and the budget. Nothing is written."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson

from ferry.core.ports import StagedRow
from ferry.engine.inspect import inspect_pipeline
from ferry.engine.pipeline import load_pipeline
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.sandbox.shopify.generator import generate_store
from ferry.store import Store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"


async def test_plan_reports_mismatches_notes_staged_failures_and_strategy(tmp_path: Path) -> None:
    sandbox = SalesforceSandbox(tmp_path)
    running = start_in_thread(sandbox.app, tmp_path)
    try:
        creds = sandbox.credentials(running.url)
        text = EXAMPLE.read_text().replace(
            "      Phone: phone\n      BillingStreet", "      Phone: phone\n      NumberOfEmployees: {value: many}\n"
            "      BillingStreet", 1
        ).replace('  api_version: "62.0"\n', '  api_version: "62.0"\n  bulk_threshold: 2000\n  api_budget: 10%\n', 1)
        path = tmp_path / "p.yml"
        path.write_text(text)
        env = {"SHOPIFY_URL": "https://127.0.0.1:9", "SHOPIFY_ACCESS_TOKEN": "shpat_unused",
               "SALESFORCE_LOGIN_URL": creds["login_url"], "SALESFORCE_CLIENT_ID": creds["client_id"],
               "SALESFORCE_USERNAME": creds["username"], "SALESFORCE_PRIVATE_KEY_FILE": creds["private_key_file"],
               "SALESFORCE_CA_FILE": str(running.ca_file)}
        spec = load_pipeline(path, env)
        store = Store(tmp_path / "ferry.db")
        customer = copy.deepcopy(generate_store(seed=1, customers=1, products=0, orders=0).customers[0])
        rows = []
        for i in range(3):
            c = dict(customer, id=900 + i, last_name="L", email=f"c{i}@example.com", phone="5" * 60)
            rows.append(StagedRow(str(c["id"]), c["updated_at"], orjson.dumps(c)))
        store.stage(spec.name, "customers", 1, rows)
        before = sandbox.state.budget.used

        report = await inspect_pipeline(spec, store)

        problems = "\n".join(report.errors)
        assert "Account.NumberOfEmployees: the mapped value 'many' cannot be written" in problems
        notes = {o.name: o.notes for o in report.objects}
        assert any("PricebookEntry.Pricebook2Id: createable but not updateable" in n for n in notes["PricebookEntry"])
        assert any("Account.Description: values longer than" in n and "cut to fit" in n for n in notes["Account"])
        assert any(n.startswith("Contact.Phone: 3 staged record(s) would be dead-lettered (STRING_TOO_LONG)")
                   for n in notes["Contact"]), notes["Contact"]
        account = next(o for o in report.objects if o.name == "Account")
        assert account.strategy == "collections" and account.reason == "nothing to write"
        assert report.api_budget == "10%" and report.budget_remaining is not None
        assert sandbox.state.budget.used - before <= 8  # describes and a query: reads only
        # Plan's calls count against the pipeline's share (the ledger), and it shows what is left of it.
        spent = sandbox.state.budget.used - before
        assert report.budget is not None and report.budget["spent_24h"] == spent > 0
        assert report.budget["allowed"] == 100_000 and report.budget["remaining"] == 100_000 - spent
        # The describes go in one Composite: a container, whose subrequests say what it did (all GETs).
        calls = [k for k in sandbox.state.budget.by_endpoint if k != "POST /services/data/vXX.X/composite"]
        calls += list(sandbox.state.budget.subrequests)
        assert sandbox.state.budget.subrequests, "plan described its objects in one Composite"
        writes = [k for k in calls if k.split()[0] in ("POST", "PATCH", "PUT", "DELETE")]
        assert writes == []
    finally:
        running.stop()
