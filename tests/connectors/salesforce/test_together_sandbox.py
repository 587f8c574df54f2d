"""SalesforceSink.upsert_together against the Salesforce sandbox: several objects' Collections upserts in ONE
Composite call, parents first, each record with its own result."""

from __future__ import annotations

import ssl

import httpx

from ferry.connectors.salesforce import SalesforceSink
from ferry.core.contracts import TogetherLimits, UpsertPart, WritesTogether

from .conftest import Org

EXT = "Shopify_Customer_Id__c"


def _stats(org: Org) -> dict[str, object]:
    verify = ssl.create_default_context(cafile=str(org.running.ca_file))
    return dict(httpx.get(f"{org.running.url}/__sandbox/stats", verify=verify, timeout=10).json())


def _family(i: int, **contact: object) -> tuple[dict[str, object], dict[str, object]]:
    account = {EXT: f"t{i}", "Name": f"Together {i}"}
    person = {EXT: f"t{i}", "LastName": f"Last {i}", "FirstName": "Ann", f"Account.{EXT}": f"t{i}"} | contact
    return account, person


async def test_new_accounts_and_their_contacts_in_one_call_a_bad_contact_fails_alone(org: Org) -> None:
    families = [_family(i) for i in range(4)]
    accounts = [a for a, _ in families]
    contacts = [c for _, c in families]
    del contacts[1]["LastName"]  # required on create: Salesforce refuses this one record
    contacts.append({EXT: "orphan", "LastName": "Nobody", f"Account.{EXT}": "no-such-account"})
    async with SalesforceSink(org.config()) as sink:
        assert isinstance(sink, WritesTogether)
        assert sink.together_limits() == TogetherLimits(parts=5, records=200)
        await sink.describe_object("Contact")  # the references need it; not part of what is counted below
        before = _stats(org)
        answers = await sink.upsert_together([UpsertPart("Account", EXT, accounts),
                                              UpsertPart("Contact", EXT, contacts)])
        after = _stats(org)
        rows = await sink.query("SELECT Shopify_Customer_Id__c, Account.Name FROM Contact")
    assert after["api_calls"] == int(before["api_calls"]) + 1  # type: ignore[call-overload]
    assert sink.api_calls["Account"] == 1  # one Composite call, counted under its first part's object
    account_results, contact_results = answers
    assert [r.key for r in account_results] == ["t0", "t1", "t2", "t3"]
    assert all(r.success and r.created and r.id for r in account_results)
    assert [r.key for r in contact_results] == ["t0", "t1", "t2", "t3", "orphan"]
    assert [r.success for r in contact_results] == [True, False, True, True, False]
    assert contact_results[1].errors[0].code == "REQUIRED_FIELD_MISSING"
    assert "LastName" in contact_results[1].errors[0].fields
    assert contact_results[4].errors[0].code == "INVALID_FIELD" and "no-such-account" in \
        contact_results[4].errors[0].message
    # The Contacts named their Accounts created earlier in the same call: the parents' subrequest ran first.
    assert {r[EXT]: r["Account"]["Name"] for r in rows} == {"t0": "Together 0", "t2": "Together 2",
                                                            "t3": "Together 3"}


async def test_more_parts_than_one_call_holds_go_in_calls_in_turn(org: Org) -> None:
    families = [_family(i) for i in range(450)]
    async with SalesforceSink(org.config()) as sink:
        answers = await sink.upsert_together([UpsertPart("Account", EXT, [a for a, _ in families]),
                                              UpsertPart("Contact", EXT, [c for _, c in families])])
    # 900 records: 3 + 3 Collections subrequests of <= 200; 5 a call -> 2 calls, Accounts' all in the first.
    assert sink.api_calls["Account"] == 2
    assert [len(a) for a in answers] == [450, 450] and all(r.success for a in answers for r in a)


async def test_a_composite_the_org_refuses_goes_part_by_part_through_collections(org: Org) -> None:
    org.sandbox.faults.configure({"rules": [{"status": 400, "path": "composite", "method": "POST", "count": 1,
                                             "error_code": "API_DISABLED_FOR_ORG"}]})
    families = [_family(i) for i in range(3)]
    async with SalesforceSink(org.config()) as sink:
        answers = await sink.upsert_together([UpsertPart("Account", EXT, [a for a, _ in families]),
                                              UpsertPart("Contact", EXT, [c for _, c in families])])
        assert sink.composite_refused is not None and sink.together_limits() is None
    assert all(r.success for a in answers for r in a)


async def test_adopt_gives_existing_records_and_each_first_child_the_key_once(org: Org) -> None:
    # Adopts (two-way sync, engine/adopt.py): records a person made get the key the upsert will address them by.
    from ferry.core.contracts import Adopts, ChildAdoption

    async with SalesforceSink(org.config()) as sink:
        assert isinstance(sink, Adopts)

        async def create(sobject: str, **fields: object) -> str:
            answer = await sink._client.json("POST", sink._client.data_path(f"/sobjects/{sobject}"), label="test",
                                             json=fields)
            return str(answer["id"])

        a, b, c = [await create("Account", Name=n) for n in ("A", "B", "C")]
        a1 = await create("Contact", LastName="first", AccountId=a)
        a2 = await create("Contact", LastName="second", AccountId=a)
        c1 = await create("Contact", LastName="adopted before", AccountId=c, **{EXT: "c"})
        ids = {"a": a, "b": b, "c": c, "x": "001000000000999AAA"}  # x: no such Account, refused and logged
        children = [ChildAdoption("Contact", EXT, "AccountId")]
        assert await sink.adopt("Account", EXT, ids, children) == 4  # 3 Accounts, a's first Contact
        accounts = {r["Id"]: r[EXT] for r in await sink.query(f"SELECT Id, {EXT} FROM Account")}
        contacts = {r["Id"]: r[EXT] for r in await sink.query(f"SELECT Id, {EXT} FROM Contact")}
        assert accounts == {a: "a", b: "b", c: "c"}
        assert contacts == {a1: "a", a2: None, c1: "c"}
        assert await sink.adopt("Account", EXT, {"a": a}, children) == 1  # again: the Account, no Contact
