"""SalesforceSink against the real Salesforce sandbox (HTTPS, OAuth, Collections, Bulk 2.0, faults)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ferry.connectors.salesforce import SalesforceSink, soql_quote
from ferry.connectors.salesforce.strategy import Strategy
from ferry.errors import AuthError, BudgetExhausted, ConfigError, PermanentError

from .conftest import Org, start_org

EXT = "Shopify_Customer_Id__c"


def _accounts(n: int) -> list[dict[str, object]]:
    return [{EXT: f"c{i}", "Name": f"Customer {i}"} for i in range(n)]


def _contacts(n: int, prefix: str = "c") -> list[dict[str, object]]:
    return [{EXT: f"{prefix}{i}", "LastName": f"Last {i}", "FirstName": "Ann", "Email": f"ann{i}@example.com",
             f"Account.{EXT}": f"c{i}"} for i in range(n)]


async def test_jwt_login_and_describe(org: Org) -> None:
    async with SalesforceSink(org.config("jwt")) as sink:
        schema = await sink.describe_object("Contact")
        again = await sink.describe_object("Contact")
        assert schema is again and sink.api_calls == {"describe": 1}  # cached
        assert schema.fields[EXT].external_id
        account_id = schema.by_relationship("Account")
        assert account_id is not None and account_id.name == "AccountId" and account_id.reference_to == ["Account"]
        assert schema.fields["LastName"].required_on_create
        assert sink.logins == 1
        assert sink.api_usage is not None and sink.api_usage[0] >= 1


async def test_client_credentials_and_query(org: Org) -> None:
    async with SalesforceSink(org.config("client_credentials")) as sink:
        rows = await sink.query("SELECT Id, Name FROM Pricebook2 WHERE IsStandard = true")
    assert [r["Name"] for r in rows] == ["Standard Price Book"]


async def test_wrong_secret_is_an_auth_error_that_says_what_to_fix(org: Org) -> None:
    async with SalesforceSink(org.config("client_credentials", client_secret="WRONG-SECRET-VALUE")) as sink:
        with pytest.raises(AuthError) as info:
            await sink.describe_object("Contact")
    assert "SALESFORCE_CLIENT_SECRET" in str(info.value) and "WRONG-SECRET-VALUE" not in str(info.value)


async def test_soql_quote_keeps_an_injection_a_literal(org: Org) -> None:
    async with SalesforceSink(org.config()) as sink:
        await sink.upsert("Account", EXT, _accounts(3), Strategy.COLLECTIONS)
        hostile = "Customer 1' OR Name != '"
        rows = await sink.query(f"SELECT Id FROM Account WHERE Name = {soql_quote(hostile)}")
        assert rows == []
        named = await sink.query(f"SELECT Id, Name FROM Account WHERE Name = {soql_quote('Customer 1')}")
        assert [r["Name"] for r in named] == ["Customer 1"]


async def test_collections_upsert_450_contacts_creates_then_updates(org: Org) -> None:
    async with SalesforceSink(org.config()) as sink:
        accounts = await sink.upsert("Account", EXT, _accounts(450), Strategy.COLLECTIONS)
        assert all(r.success and r.created for r in accounts)
        first = await sink.upsert("Contact", EXT, _contacts(450), Strategy.COLLECTIONS)
        assert [r.key for r in first] == [f"c{i}" for i in range(450)]
        assert all(r.success and r.created and r.id for r in first)
        second = await sink.upsert("Contact", EXT, _contacts(450), Strategy.COLLECTIONS, label="Contact:update")
        assert all(r.success and r.created is False for r in second)
        assert [r.id for r in second] == [r.id for r in first]  # same records, no duplicates
        assert sink.api_calls["Contact"] == 3 and sink.api_calls["Contact:update"] == 3
        rows = await sink.query("SELECT Id, Account.Name FROM Contact WHERE Shopify_Customer_Id__c = 'c7'")
    assert rows[0]["Account"]["Name"] == "Customer 7"


async def test_collections_per_record_errors_do_not_hold_back_the_rest(org: Org) -> None:
    records = _contacts(5)
    records[1]["LastName"] = None  # required
    records[3][f"Account.{EXT}"] = "no-such-account"
    records.append({"LastName": "No key"})
    async with SalesforceSink(org.config()) as sink:
        await sink.upsert("Account", EXT, _accounts(5), Strategy.COLLECTIONS)
        results = await sink.upsert("Contact", EXT, records, Strategy.COLLECTIONS)
    assert [r.success for r in results] == [True, False, True, False, True, False]
    assert results[1].errors[0].code == "REQUIRED_FIELD_MISSING" and not results[1].transient
    assert results[3].errors[0].code == "INVALID_FIELD"
    assert results[5].errors[0].code == "MISSING_EXTERNAL_ID"


@pytest.mark.parametrize("success_results", [False, True])
async def test_bulk_upsert_5000_with_invalid_rows(org: Org, success_results: bool) -> None:
    records: list[dict[str, object]] = [{EXT: f"b{i}", "LastName": f"Last {i}", "Email": f"b{i}@example.com",
                "Description": 'quote " comma , newline \n ünïcode'} for i in range(5000)]
    bad = {17, 999, 2500, 4999}
    for i in bad:
        records[i]["LastName"] = None
    records[42]["Email"] = "not-an-email"
    bad.add(42)
    jobs: list[tuple[str, str]] = []
    config = org.config(bulk_success_results=success_results)
    org.sandbox.faults.configure({"rules": [{"kind": "latency", "rate": 1.0, "latency_ms": 1,
                                             "path": "successfulResults"}]})
    org.sandbox.faults.reset_counts()
    async with SalesforceSink(config, on_bulk_job=lambda job, obj: jobs.append((job, obj))) as sink:
        results = await sink.upsert("Contact", EXT, records, Strategy.BULK)
        assert len(results) == 5000 and [r.key for r in results] == [f"b{i}" for i in range(5000)]
        failed = {i for i, r in enumerate(results) if not r.success}
        assert failed == bad
        assert results[17].errors[0].code == "REQUIRED_FIELD_MISSING" and results[17].errors[0].fields == ["LastName"]
        assert results[42].errors[0].code == "INVALID_EMAIL_ADDRESS"
        assert jobs == [(sink.last_bulk_job_id, "Contact")]
        calls_first = sink.api_calls["Contact"]
        fetched = org.sandbox.faults.injected["latency"]  # the marker rule below fired once per download
        if success_results:
            assert all(r.created and r.id for i, r in enumerate(results) if i not in bad)
            assert calls_first <= 5 + 10  # create, upload, close, 2 result files + a few backed-off polls
        else:
            # The job's counts (complete, 5,000 processed, 5 failed) answer for the 4,995 successes: no
            # successfulResults call, so no Salesforce id or created flag for them.
            assert all(r.success and r.id is None and r.created is None for i, r in enumerate(results) if i not in bad)
            assert calls_first <= 4 + 10
        assert fetched == (1 if success_results else 0)

        again = await sink.upsert("Contact", EXT, records, Strategy.BULK)
        if success_results:
            assert all(r.created is False for i, r in enumerate(again) if i not in bad)
            assert [r.id for r in again] == [r.id for r in results]
        assert [r.success for r in again] == [r.success for r in results]
        stored = await sink.query("SELECT Id, Description FROM Contact")
    assert len(stored) == 5000 - len(bad)  # also exercises nextRecordsUrl (pages of 2,000)
    assert stored[0]["Description"] == 'quote " comma , newline \n ünïcode'


async def test_bulk_null_clears_a_field(org: Org) -> None:
    async with SalesforceSink(org.config()) as sink:
        await sink.upsert("Contact", EXT, [{EXT: "n1", "LastName": "L", "Phone": "123"}], Strategy.BULK)
        await sink.upsert("Contact", EXT, [{EXT: "n1", "Phone": None}], Strategy.BULK)
        rows = await sink.query("SELECT Phone, LastName FROM Contact WHERE Shopify_Customer_Id__c = 'n1'")
    assert rows[0]["Phone"] is None and rows[0]["LastName"] == "L"


async def test_lock_contention_comes_back_as_transient_record_errors(org: Org) -> None:
    org.sandbox.faults.configure({"seed": 3, "lock_row_rate": 0.2})
    async with SalesforceSink(org.config()) as sink:
        results = await sink.upsert("Contact", EXT, [{EXT: f"l{i}", "LastName": "L"} for i in range(100)],
                                    Strategy.COLLECTIONS)
    locked = [r for r in results if not r.success]
    assert locked and all(r.transient and r.errors[0].code == "UNABLE_TO_LOCK_ROW" for r in locked)


async def test_transient_503_is_retried(org: Org) -> None:
    org.sandbox.faults.configure({"rules": [{"status": 503, "path": "composite", "count": 2}]})
    async with SalesforceSink(org.config()) as sink:
        results = await sink.upsert("Contact", EXT, [{EXT: "r1", "LastName": "L"}], Strategy.COLLECTIONS)
        assert results[0].success
        assert sink.api_calls["Contact"] == 3


async def test_token_expiry_mid_run_is_recovered_by_one_refresh(tmp_path: Path) -> None:
    org, running = start_org(tmp_path, session_ttl_seconds=1)
    try:
        async with SalesforceSink(org.config(max_concurrency=4)) as sink:
            await sink.upsert("Account", EXT, _accounts(800), Strategy.COLLECTIONS)
            assert sink.logins == 1
            await asyncio.sleep(1.2)
            # Four chunks in flight all hit INVALID_SESSION_ID; only one of them logs in again.
            results = await sink.upsert("Contact", EXT, _contacts(800), Strategy.COLLECTIONS)
            assert all(r.success for r in results)
            assert sink.logins == 2
    finally:
        running.stop()


async def test_daily_budget_exhaustion_stops_the_run(tmp_path: Path) -> None:
    org, running = start_org(tmp_path, daily_api_limit=3)
    try:
        async with SalesforceSink(org.config()) as sink:
            with pytest.raises(BudgetExhausted):
                for _ in range(5):
                    await sink.upsert("Contact", EXT, [{EXT: "x", "LastName": "L"}], Strategy.COLLECTIONS)
            assert sink.api_usage == (3, 3)
    finally:
        running.stop()


async def test_bulk_relationship_columns_and_unknown_parent(org: Org) -> None:
    async with SalesforceSink(org.config(bulk_threshold=10)) as sink:
        await sink.upsert("Account", EXT, _accounts(30), Strategy.COLLECTIONS)
        records = _contacts(30)
        records[5][f"Account.{EXT}"] = "missing-parent"
        choice = sink.choose_strategy("Contact", len(records))
        assert choice.strategy is Strategy.BULK
        results = await sink.upsert("Contact", EXT, records, choice.strategy)
        rows = await sink.query("SELECT Shopify_Customer_Id__c, Account.Name FROM Contact")
    assert [r.success for r in results].count(False) == 1 and not results[5].success
    assert {r[EXT]: r["Account"]["Name"] for r in rows}["c9"] == "Customer 9"


async def test_describe_many_is_one_api_call_and_matches_single_describes(org: Org) -> None:
    names = ["Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem"]
    used_before = org.sandbox.state.budget.used
    async with SalesforceSink(org.config()) as sink:
        schemas = await sink.describe(names)
        assert sink.api_calls.get("describe") == 1
    assert org.sandbox.state.budget.used - used_before == 1  # the org counts the Composite as one call
    async with SalesforceSink(org.config()) as sink:
        for name in names:
            assert await sink.describe_object(name) == schemas[name]


async def test_describe_many_of_an_unknown_object_raises_the_orgs_error(org: Org) -> None:
    async with SalesforceSink(org.config()) as sink:
        with pytest.raises(PermanentError, match=r"NOT_FOUND|INVALID_TYPE"):
            await sink.describe(["Account", "NoSuchObject__c"])
        assert await sink.describe_object("Account")  # the good one was cached by the same call
        # The Composite, the failing object alone, and (on this error path only) the org's object list for a
        # suggestion of the closest name.
        assert sink.api_calls.get("describe") == 3


async def test_an_unknown_object_names_the_closest_one_the_org_has(org: Org) -> None:
    async with SalesforceSink(org.config()) as sink:
        with pytest.raises(ConfigError, match=r"no object Contcat .*; did you mean Contact\?$"):
            await sink.describe_object("Contcat")
        with pytest.raises(ConfigError, match=r"no object Zzzzqqq \([^)]*NOT_FOUND[^)]*\)$"):  # nothing close
            await sink.describe_object("Zzzzqqq")


async def test_describe_many_carries_the_constant_queries_in_the_same_call(org: Org) -> None:
    pricebook = "SELECT Id FROM Pricebook2 WHERE IsStandard = true LIMIT 1"
    bad = "SELECT NoSuchField__c FROM Account"
    async with SalesforceSink(org.config()) as direct:
        expected = await direct.query(pricebook)
    assert len(expected) == 1 and expected[0]["Id"]
    used_before = org.sandbox.state.budget.used
    async with SalesforceSink(org.config()) as sink:
        await sink.describe(["Account", "Order"], [pricebook, bad])
        assert await sink.query(pricebook) == expected  # fetched with the describes: no call of its own
        assert org.sandbox.state.budget.used - used_before == 1
        with pytest.raises(PermanentError):  # a failed subrequest is asked again, and fails with the org's error
            await sink.query(bad)
        assert await sink.query(pricebook) == expected  # one-shot: a later query asks the org again
        assert org.sandbox.state.budget.used - used_before == 3
