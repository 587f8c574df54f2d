"""`ferry plan`'s report, in process, against the sandboxes: type mismatches, write access, staged and
sampled values that would be dead-lettered, the source's credentials and counts, the write strategy and the
budget. Nothing is written."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from ferry.core.ports import StagedRow
from ferry.engine.inspect import inspect_pipeline
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.errors import AuthError
from ferry.sandbox.shopify.generator import generate_store
from ferry.store import Store
from tests.engine.world import world

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"


async def test_plan_reports_mismatches_notes_staged_failures_and_strategy(tmp_path: Path) -> None:
    with world(tmp_path, customers=30, products=8, orders=40) as w:
        text = EXAMPLE.read_text().replace(
            "      Phone: phone\n      BillingStreet", "      Phone: phone\n      NumberOfEmployees: {value: many}\n"
            "      BillingStreet", 1
        ).replace('  api_version: "62.0"\n', '  api_version: "62.0"\n  bulk_threshold: 2000\n  api_budget: 10%\n', 1)
        path = tmp_path / "p.yml"
        path.write_text(text)
        spec = load_pipeline(path, w.env())
        store = Store(tmp_path / "ferry.db")
        customer = copy.deepcopy(generate_store(seed=1, customers=1, products=0, orders=0).customers[0])
        rows = []
        for i in range(3):
            c = dict(customer, id=900 + i, last_name="L", email=f"c{i}@example.com", phone="5" * 60)
            rows.append(StagedRow(str(c["id"]), c["updated_at"], orjson.dumps(c)))
        store.stage(spec.name, "customers", 1, rows)
        budget = w.org.state.budget
        before = budget.used

        report = await inspect_pipeline(spec, store)

        problems = "\n".join(report.errors)
        assert "Account.NumberOfEmployees: the mapped value 'many' cannot be written" in problems
        notes = {o.name: o.notes for o in report.objects}
        assert any("PricebookEntry.Pricebook2Id: createable but not updateable" in n for n in notes["PricebookEntry"])
        assert any("Account.Description: values longer than" in n and "cut to fit" in n for n in notes["Account"])
        assert any(n.startswith("Contact.Phone: 3 staged record(s) would be dead-lettered (STRING_TOO_LONG)")
                   for n in notes["Contact"]), notes["Contact"]
        # The source answered: its counts size the next run, and the strategy follows from them.
        assert report.source is not None and report.source.problems == []
        assert report.source.estimates == {"customers": 30, "products": 8, "orders": 40}
        account = next(o for o in report.objects if o.name == "Account")
        assert account.to_read is not None and account.to_read >= 30
        assert account.strategy == "collections" and "nothing to write" not in account.reason
        assert report.api_budget == "10%" and report.budget_remaining is not None
        assert budget.used - before <= 8  # describes and a query: reads only
        # Plan's calls count against the pipeline's share (the ledger), and it shows what is left of it.
        spent = budget.used - before
        assert report.budget is not None and report.budget["spent_24h"] == spent > 0
        assert report.budget["allowed"] == 100_000 and report.budget["remaining"] == 100_000 - spent
        # The describes go in one Composite: a container, whose subrequests say what it did (all GETs).
        calls = [k for k in budget.by_endpoint if k != "POST /services/data/vXX.X/composite"]
        calls += list(budget.subrequests)
        assert budget.subrequests, "plan described its objects in one Composite"
        writes = [k for k in calls if k.split()[0] in ("POST", "PATCH", "PUT", "DELETE")]
        assert writes == []


async def test_the_estimate_per_object_is_what_the_run_then_reads(tmp_path: Path) -> None:
    with world(tmp_path, seed=3, customers=45, products=10, orders=48) as w:  # each stream fits one probe
        spec = w.spec(w.pipeline_file("estimate"))
        store = Store(tmp_path / "ferry.db")
        report = await inspect_pipeline(spec, store)
        assert report.errors == [], report.errors
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        for o in report.objects:
            assert o.to_read == stats.objects[o.name].read, o.name
        # After the run nothing changed: the next run reads only what sits at its (inclusive) cursor again.
        again = await inspect_pipeline(spec, store)
        assert all(o.to_read is not None and o.to_read <= 3 for o in again.objects), [
            (o.name, o.to_read) for o in again.objects
        ]


def _text_into_typed_fields(spec: dict[str, Any]) -> None:
    objects = {o["name"]: o for o in spec["objects"]}
    objects["Account"]["fields"]["AnnualRevenue"] = "note"  # customer.note: free text, into a currency field
    objects["Contact"]["fields"]["Birthdate"] = "first_name"  # text into a date field
    objects["Contact"]["fields"]["Title"] = "created_at"  # text into text: fine
    objects["Account"]["fields"]["NumberOfEmployees"] = {"template": "n{key}"}  # text every record fails on


async def test_plan_catches_text_mapped_to_number_and_date_fields(tmp_path: Path) -> None:
    with world(tmp_path, customers=20, products=4, orders=10) as w:
        spec = w.spec(w.pipeline_file("types", _text_into_typed_fields))
        report = await inspect_pipeline(spec, Store(tmp_path / "ferry.db"))
        problems = report.errors
        assert any(p.startswith("Account.AnnualRevenue: customer.note is text, but AnnualRevenue is a currency")
                   for p in problems), problems
        assert any(p.startswith("Contact.Birthdate: customer.first_name is text, but Birthdate is a date")
                   for p in problems), problems
        assert not any(p.startswith("Contact.Title") for p in problems)
        # A template whose own text no number holds: a static problem, said once (the sampled records agree).
        employees = [p for p in problems if p.startswith("Account.NumberOfEmployees: ")]
        assert len(employees) == 1 and "the template 'n{key}' is text ('n' is in every value)" in employees[0], problems


async def test_a_wrong_source_token_is_one_problem_of_the_plan(tmp_path: Path) -> None:
    with world(tmp_path, customers=5, products=2, orders=5) as w:
        spec = load_pipeline(w.pipeline_file("token"), {**w.env(), "SHOPIFY_ACCESS_TOKEN": "shpat_wrong"})
        report = await inspect_pipeline(spec, Store(tmp_path / "ferry.db"))
        assert report.source is not None and len(report.source.problems) == 1
        (problem,) = report.errors
        assert problem.startswith("source shopify: customers: ") and "401" in problem, problem
        assert "shpat_wrong" not in problem
        assert all(o.to_read is None for o in report.objects)


async def test_a_wrong_salesforce_client_id_is_one_error(tmp_path: Path) -> None:
    with world(tmp_path, customers=5, products=2, orders=5) as w:
        spec = load_pipeline(w.pipeline_file("client"), {**w.env(), "SALESFORCE_CLIENT_ID": "not-a-client"})
        before = w.org.state.budget.used
        with pytest.raises(AuthError) as info:
            await inspect_pipeline(spec, Store(tmp_path / "ferry.db"))
        assert "invalid_client" in str(info.value), info.value
        assert w.org.state.budget.used == before
