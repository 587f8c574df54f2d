"""Change Data Capture: writes through simple-salesforce (REST, Collections, Composite, Bulk 2.0) produce
change events of the org's shape, read over the Streaming API with a spec-written Bayeux client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from simple_salesforce import Salesforce

from .bayeux import Bayeux
from .conftest import Org, start_org

API = "62.0"


@pytest.fixture(scope="module")
def cdc_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    yield from start_org(tmp_path_factory.mktemp("cdc"), streaming_timeout_seconds=0.5)


@pytest.fixture
def sf(cdc_org: Org) -> Salesforce:
    cdc_org.admin("reset", "POST")
    cdc_org.sandbox.cdc.select_entities(None)
    cdc_org.sandbox.cdc.config.max_events = 100_000
    return cdc_org.client()


def stream(org: Org, sf: Salesforce, channel: str = "/data/ChangeEvents", replay: int | None = -1) -> Bayeux:
    client = Bayeux(org.session(), f"{org.url}/cometd/{API}", sf.session_id)
    client.open(channel, replay)
    return client


def payloads(client: Bayeux, count: int) -> list[dict[str, Any]]:
    events = client.poll(count)
    assert len(events) == count, [e["data"]["payload"]["ChangeEventHeader"] for e in events]
    return [e["data"]["payload"] for e in events]


def test_identical_updates_in_one_transaction_are_merged(cdc_org: Org, sf: Salesforce) -> None:
    ids = [r["id"] for r in sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Account"}, "Name": f"M{i}"} for i in range(3)]})]
    client = stream(cdc_org, sf)
    sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Account"}, "id": i, "Industry": "Apparel"} for i in ids]})
    sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Account"}, "id": i, "Phone": f"55{n}"} for n, i in enumerate(ids)]})
    events = payloads(client, 1 + 3)
    merged = events[0]
    assert merged["ChangeEventHeader"]["recordIds"] == ids and merged["Industry"] == "Apparel"
    assert merged["ChangeEventHeader"]["changedFields"] == ["Industry", "LastModifiedDate"]
    assert [e["ChangeEventHeader"]["recordIds"] for e in events[1:]] == [[i] for i in ids]  # different values
    assert [e["ChangeEventHeader"]["sequenceNumber"] for e in events[1:]] == [1, 2, 3]


def test_create_update_delete_undelete_event_shapes(cdc_org: Org, sf: Salesforce) -> None:
    client = stream(cdc_org, sf)
    before_ms = int(time.time() * 1000)
    account_id = sf.Account.create({"Name": "Acme", "Industry": "Retail", "BillingCity": "Paris",
                                    "BillingStreet": "1 Rue"})["id"]
    sf.Account.update(account_id, {"Industry": None, "Phone": "555"})
    sf.Account.update(account_id, {"Phone": "555"})  # changes nothing: no event
    sf.Account.delete(account_id)
    assert cdc_org.session().post(f"{cdc_org.url}/__sandbox/undelete/{account_id}").status_code == 200
    create, update, delete, undelete = payloads(client, 4)

    header = create["ChangeEventHeader"]
    assert header["entityName"] == "Account" and header["recordIds"] == [account_id]
    assert header["changeType"] == "CREATE" and header["changedFields"] == []
    assert header["changeOrigin"] == f"com/salesforce/api/rest/{API}"
    assert header["commitUser"].startswith("005") and header["sequenceNumber"] == 1
    assert before_ms - 1000 <= header["commitTimestamp"] <= int(time.time() * 1000) + 1000
    uuid.UUID(header["transactionKey"])
    assert isinstance(header["commitNumber"], int)
    assert "nulledFields" not in header  # CometD messages carry none (Pub/Sub and Apex only)
    assert create["Name"] == "Acme" and create["Industry"] == "Retail"
    assert create["BillingAddress"] == {"City": "Paris", "Street": "1 Rue"}
    assert "Id" not in create and "Phone" not in create  # no id in the body, no null fields on CREATE
    assert create["OwnerId"].startswith("005") and create["CreatedDate"].endswith("Z")

    header = update["ChangeEventHeader"]
    assert header["changeType"] == "UPDATE"
    assert set(header["changedFields"]) == {"Industry", "Phone", "LastModifiedDate"}
    assert update["Industry"] is None and update["Phone"] == "555"  # a nulled field is sent as null
    assert "Name" not in update and "LastModifiedDate" in update

    assert delete["ChangeEventHeader"]["changeType"] == "DELETE"
    assert set(delete) == {"ChangeEventHeader"}
    assert undelete["ChangeEventHeader"]["changeType"] == "UNDELETE"
    assert undelete["Name"] == "Acme" and undelete["Phone"] == "555"
    assert sf.Account.get(account_id)["Name"] == "Acme"

    replay_ids = [e["data"]["event"]["replayId"] for e in client.events]
    assert replay_ids == sorted(replay_ids) and len(set(replay_ids)) == 4
    assert all(e["channel"] == "/data/ChangeEvents" and len(e["data"]["schema"]) == 22 for e in client.events)
    assert client.disconnect()["successful"] is True


def test_undelete_restores_the_cascade_in_one_transaction(cdc_org: Org, sf: Salesforce) -> None:
    account_id = sf.Account.create({"Name": "Parent"})["id"]
    contact_ids = [sf.Contact.create({"LastName": f"Kid {i}", "AccountId": account_id})["id"] for i in range(2)]
    sf.Account.delete(account_id)
    client = stream(cdc_org, sf)
    assert cdc_org.session().post(f"{cdc_org.url}/__sandbox/undelete/{account_id}").json()["undeleted"] is True
    events = payloads(client, 3)
    assert {e["ChangeEventHeader"]["changeType"] for e in events} == {"UNDELETE"}
    assert events[0]["ChangeEventHeader"]["recordIds"] == [account_id]  # the parent first, then its children
    assert sorted(e["ChangeEventHeader"]["recordIds"][0] for e in events[1:]) == sorted(contact_ids)
    assert len({e["ChangeEventHeader"]["transactionKey"] for e in events}) == 1
    assert events[0]["ChangeEventHeader"]["changeOrigin"] == ""  # a UI change
    assert sf.query(f"SELECT COUNT() FROM Contact WHERE AccountId = '{account_id}'")["totalSize"] == 2
    assert cdc_org.session().post(f"{cdc_org.url}/__sandbox/undelete/{account_id}").status_code == 404


def test_compound_name_and_call_options_client(cdc_org: Org, sf: Salesforce) -> None:
    client = stream(cdc_org, sf, "/data/ContactChangeEvent")
    contact_id = sf.Contact.create({"FirstName": "Ada", "LastName": "Lovelace", "MailingCity": "London"},
                                   headers={"Sforce-Call-Options": "client=ferry"})["id"]
    sf.Contact.update(contact_id, {"FirstName": "Augusta"})
    sf.Account.create({"Name": "not on the Contact channel"})
    create, update = payloads(client, 2)
    assert create["ChangeEventHeader"]["changeOrigin"] == f"com/salesforce/api/rest/{API};client=ferry"
    assert create["Name"] == {"FirstName": "Ada", "LastName": "Lovelace"}
    assert create["MailingAddress"] == {"City": "London"}
    assert update["ChangeEventHeader"]["changedFields"] == ["Name.FirstName", "LastModifiedDate"]
    assert update["Name"] == {"FirstName": "Augusta"}
    assert client.events[0]["channel"] == "/data/ContactChangeEvent"


def test_collections_rollback_publishes_nothing_and_composite_shares_a_transaction(cdc_org: Org,
                                                                                    sf: Salesforce) -> None:
    client = stream(cdc_org, sf)
    base = f"{cdc_org.url}/services/data/v{API}"
    s = cdc_org.session()
    auth = {"Authorization": f"Bearer {sf.session_id}"}
    failed = s.post(f"{base}/composite/sobjects", headers=auth, json={"allOrNone": True, "records": [
        {"attributes": {"type": "Account"}, "Name": "kept only if all succeed"},
        {"attributes": {"type": "Account"}},  # REQUIRED_FIELD_MISSING: Name
    ]}).json()
    assert [r["success"] for r in failed] == [False, False]
    partial = s.post(f"{base}/composite/sobjects", headers=auth, json={"allOrNone": False, "records": [
        {"attributes": {"type": "Account"}, "Name": "one"},
        {"attributes": {"type": "Account"}},
    ]}).json()
    assert [r["success"] for r in partial] == [True, False]
    composite = s.post(f"{base}/composite", headers=auth, json={"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": f"/services/data/v{API}/sobjects/Account", "referenceId": "acc",
         "body": {"Name": "Parent"}},
        {"method": "POST", "url": f"/services/data/v{API}/sobjects/Contact", "referenceId": "con",
         "body": {"LastName": "Child", "AccountId": "@{acc.id}"}},
    ]}).json()
    assert [r["httpStatusCode"] for r in composite["compositeResponse"]] == [201, 201]
    one, parent, child = payloads(client, 3)
    assert one["Name"] == "one"
    assert [parent["Name"], child["Name"]] == ["Parent", {"LastName": "Child"}]
    headers = [parent["ChangeEventHeader"], child["ChangeEventHeader"]]
    assert headers[0]["transactionKey"] == headers[1]["transactionKey"] != one["ChangeEventHeader"]["transactionKey"]
    assert [h["sequenceNumber"] for h in headers] == [1, 2]


def test_bulk_ingest_publishes_with_the_bulk_origin(cdc_org: Org, sf: Salesforce) -> None:
    client = stream(cdc_org, sf, "/data/AccountChangeEvent")
    result = sf.bulk2.Account.insert(records=[{"Name": f"Bulk {i}"} for i in range(5)], wait=0.2)
    assert result[0]["numberRecordsProcessed"] == 5
    events = payloads(client, 5)
    assert sorted(e["Name"] for e in events) == [f"Bulk {i}" for i in range(5)]
    assert {e["ChangeEventHeader"]["changeOrigin"] for e in events} == {f"com/salesforce/api/bulkapi/{API}"}


def poll_ids(client: Bayeux, count: int) -> list[dict[str, Any]]:
    """Connect until the events received cover `count` record ids (merged events carry several), bounded."""
    for _ in range(40):
        if sum(len(e["data"]["payload"]["ChangeEventHeader"]["recordIds"]) for e in client.events) >= count:
            break
        client.connect()
    return [e["data"]["payload"] for e in client.events]


def test_bulk_saves_in_200_record_transactions_whose_same_changes_merge(cdc_org: Org, sf: Salesforce) -> None:
    # The org saves a Bulk batch 200 records a transaction: events share a transactionKey per 200 rows, and
    # the same UPDATE (or DELETE) of many records merges into one event listing their ids.
    created = stream(cdc_org, sf, "/data/AccountChangeEvent")
    sf.bulk2.Account.insert(records=[{"Name": f"T{i}", "Shopify_Customer_Id__c": f"t{i}"} for i in range(450)],
                            wait=0.1)
    inserts = poll_ids(created, 450)
    assert len(inserts) == 450 and {e["ChangeEventHeader"]["changeType"] for e in inserts} == {"CREATE"}
    keys = [e["ChangeEventHeader"]["transactionKey"] for e in inserts]
    assert [keys.count(k) for k in dict.fromkeys(keys)] == [200, 200, 50]
    assert [e["ChangeEventHeader"]["sequenceNumber"] for e in inserts[:201]] == [*range(1, 201), 1]

    updated = stream(cdc_org, sf, "/data/AccountChangeEvent")
    (ups,) = sf.bulk2.Account.upsert(records=[{"Shopify_Customer_Id__c": f"t{i}", "Industry": "Apparel"}
                                              for i in range(450)], external_id_field="Shopify_Customer_Id__c",
                                     wait=0.1)
    assert ups["numberRecordsFailed"] == 0
    merged = poll_ids(updated, 450)
    ids = [i for e in merged for i in e["ChangeEventHeader"]["recordIds"]]
    assert sorted(ids) == sorted(e["ChangeEventHeader"]["recordIds"][0] for e in inserts)
    # one event per transaction (one more where a transaction straddles a second: the org merges per second)
    assert 3 <= len(merged) <= 6 and all(len(e["ChangeEventHeader"]["recordIds"]) <= 200 for e in merged)
    assert {(e["ChangeEventHeader"]["changeType"], e["Industry"]) for e in merged} == {("UPDATE", "Apparel")}
    assert merged[0]["ChangeEventHeader"]["changedFields"] == ["Industry", "LastModifiedDate"]

    deleted = stream(cdc_org, sf, "/data/AccountChangeEvent")
    sf.bulk2.Account.delete(records=[{"Id": i} for i in ids[:250]], wait=0.1)
    gone = poll_ids(deleted, 250)
    assert 2 <= len(gone) <= 4 and sum(len(e["ChangeEventHeader"]["recordIds"]) for e in gone) == 250
    assert {e["ChangeEventHeader"]["changeType"] for e in gone} == {"DELETE"}


def test_replay_minus_two_a_replay_id_and_the_invalid_replay_error(cdc_org: Org, sf: Salesforce) -> None:
    ids = [sf.Account.create({"Name": f"A{i}"})["id"] for i in range(3)]
    everything = stream(cdc_org, sf, replay=-2)
    all_events = everything.poll(3)
    assert [e["data"]["payload"]["ChangeEventHeader"]["recordIds"][0] for e in all_events] == ids
    first = all_events[0]["data"]["event"]["replayId"]
    after_first = stream(cdc_org, sf, replay=first)
    assert [e["data"]["event"]["replayId"] for e in after_first.poll(2)] == [
        e["data"]["event"]["replayId"] for e in all_events[1:]]

    # only max_events are kept: the oldest falls out of retention and its replay id becomes invalid
    cdc_org.session().post(f"{cdc_org.url}/__sandbox/cdc", json={"max_events": 2})
    late = Bayeux(cdc_org.session(), f"{cdc_org.url}/cometd/{API}", sf.session_id)
    late.handshake()
    reply = late.subscribe("/data/ChangeEvents", replay=first - 1)
    assert reply["successful"] is False
    assert reply["error"] == (f"400::The replayId {{{first - 1}}} you provided was invalid.  Please provide a "
                              "valid ID, -2 to replay all events, or -1 to replay only new events.")
    assert late.subscribe("/data/ChangeEvents", replay=10**9)["successful"] is False
    assert late.subscribe("/data/ChangeEvents", replay=first)["successful"] is True  # the retention edge
    late.connect()
    assert len(late.poll(2)) == 2


def test_entity_selection(cdc_org: Org, sf: Salesforce) -> None:
    cdc_org.session().post(f"{cdc_org.url}/__sandbox/cdc", json={"entities": ["Contact"]})
    client = stream(cdc_org, sf)
    sf.Account.create({"Name": "not selected"})
    sf.Contact.create({"LastName": "selected"})
    assert [p["ChangeEventHeader"]["entityName"] for p in payloads(client, 1)] == ["Contact"]
    refused = Bayeux(cdc_org.session(), f"{cdc_org.url}/cometd/{API}", sf.session_id)
    refused.handshake()
    reply = refused.subscribe("/data/AccountChangeEvent")
    assert reply["error"] == ("400::The channel you requested to subscribe to does not exist "
                              "{/data/AccountChangeEvent}")
    assert refused.subscribe("/data/NoSuchThingChangeEvent")["successful"] is False
    info = cdc_org.admin("cdc")
    assert info["entities"] == ["Contact"] and info["by_entity"] == {"Contact": 1}


def test_handshake_and_session_errors(cdc_org: Org, sf: Salesforce) -> None:
    url = f"{cdc_org.url}/cometd/{API}"
    ok = Bayeux(cdc_org.session(), url, sf.session_id).handshake()
    assert ok["successful"] is True and ok["supportedConnectionTypes"] == ["long-polling"]
    assert ok["ext"] == {"replay": True, "payload.format": True} and ok["version"] == "1.0"
    denied = Bayeux(cdc_org.session(), url, "00D000000000000!AQbogus").handshake()
    assert denied == {"channel": "/meta/handshake", "id": "1", "successful": False,
                      "error": "403::Handshake denied", "advice": {"reconnect": "none"},
                      "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}}}
    anonymous = Bayeux(cdc_org.session(), url, None).handshake()
    assert anonymous["ext"]["sfdc"]["failureReason"] == "401::Request requires authentication"
    stranger = Bayeux(cdc_org.session(), url, sf.session_id)
    stranger.client_id = "nosuchclient"
    reply = stranger.connect()
    assert reply["error"] == "403::Unknown client" and reply["advice"]["reconnect"] == "handshake"
    old = Bayeux(cdc_org.session(), f"{cdc_org.url}/cometd/36.0", sf.session_id).handshake()
    assert old["error"].startswith("400::Unsupported API version. Only API versions '37.0' and later")


def test_expired_session_is_refused_on_connect(tmp_path: Path) -> None:
    for org in start_org(tmp_path, session_ttl_seconds=1.0, streaming_timeout_seconds=0.2):
        sf = org.client()
        client = stream(org, sf)
        time.sleep(1.2)
        reply = client.connect()
        assert reply["successful"] is False and reply["error"] == "401::Authentication invalid"
        assert reply["advice"] == {"reconnect": "none", "interval": 0}


def test_events_survive_a_restart_with_persist(tmp_path: Path) -> None:
    for org in start_org(tmp_path, persist=True, streaming_timeout_seconds=0.2):
        sf = org.client()
        sf.Account.create({"Name": "before restart"})
        first = org.admin("cdc")["last_replay_id"]
    for org in start_org(tmp_path, persist=True, streaming_timeout_seconds=0.2):
        sf = org.client()
        client = stream(org, sf, replay=-2)
        sf.Account.create({"Name": "after restart"})
        events = client.poll(2)
        assert [e["data"]["payload"]["Name"] for e in events] == ["before restart", "after restart"]
        assert [e["data"]["event"]["replayId"] for e in events] == [first, first + 1]


def test_upsert_collections_delete_and_bulk_hard_delete(cdc_org: Org, sf: Salesforce) -> None:
    client = stream(cdc_org, sf, "/data/AccountChangeEvent")
    assert sf.Account.upsert("Shopify_Customer_Id__c/C-1", {"Name": "Upserted"}) == 201
    assert sf.Account.upsert("Shopify_Customer_Id__c/C-1", {"Name": "Upserted again"}) == 200
    ids = [r["id"] for r in sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Account"}, "Name": f"C{i}"} for i in range(2)]})]
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids)})
    assert [r["success"] for r in deleted] == [True, True]
    upserted = sf.query("SELECT Id FROM Account WHERE Shopify_Customer_Id__c = 'C-1'")["records"][0]["Id"]
    (result,) = sf.bulk2.Account.hard_delete(records=[{"Id": upserted}], wait=0.2)
    assert result["numberRecordsProcessed"] == 1
    events = payloads(client, 6)
    kinds = [(e["ChangeEventHeader"]["changeType"], e["ChangeEventHeader"]["recordIds"]) for e in events]
    # one Collections call is one transaction: the org merges identical changes (both deletes) into one event
    assert kinds == [("CREATE", [upserted]), ("UPDATE", [upserted]), ("CREATE", [ids[0]]), ("CREATE", [ids[1]]),
                     ("DELETE", ids), ("DELETE", [upserted])]
    assert events[1]["Name"] == "Upserted again" and events[1]["ChangeEventHeader"]["changedFields"] == [
        "Name", "LastModifiedDate"]
    assert events[-1]["ChangeEventHeader"]["changeOrigin"] == f"com/salesforce/api/bulkapi/{API}"


def test_channel_appended_to_the_url_as_the_js_client_does(cdc_org: Org, sf: Salesforce) -> None:
    reply = Bayeux(cdc_org.session(), f"{cdc_org.url}/cometd/{API}/meta/handshake", sf.session_id).handshake()
    assert reply["successful"] is True


INVOICE_SCHEMA = """
objects:
  Invoice__c:
    keyPrefix: a01
    labelPlural: Invoices
    owned: true
    fields:
      - {name: Name, type: string, length: 80, nillable: false, nameField: true}
      - {name: Amount__c, type: currency, precision: 18, scale: 2}
"""


def test_custom_object_channel_and_unsubscribe(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(INVOICE_SCHEMA)
    for org in start_org(tmp_path, extra_schema=schema, streaming_timeout_seconds=0.2):
        sf = org.client()
        client = stream(org, sf, "/data/Invoice__ChangeEvent")
        assert client.subscribe("/data/Invoice__cChangeEvent")["successful"] is False  # the org's name drops "c"
        invoice_id = sf.Invoice__c.create({"Name": "INV-1", "Amount__c": 12.5})["id"]
        [created] = payloads(client, 1)
        assert created["ChangeEventHeader"]["entityName"] == "Invoice__c"
        assert created["ChangeEventHeader"]["recordIds"] == [invoice_id] and created["Amount__c"] == 12.5
        assert client.events[0]["channel"] == "/data/Invoice__ChangeEvent"
        reply = client.send({"channel": "/meta/unsubscribe", "subscription": "/data/Invoice__ChangeEvent"})[0]
        assert reply["successful"] is True
        sf.Invoice__c.update(invoice_id, {"Amount__c": 13})
        assert client.connect()["successful"] is True
        assert len(client.events) == 1  # nothing after the unsubscribe


def test_retention_window_drops_old_events(cdc_org: Org, sf: Salesforce) -> None:
    sf.Account.create({"Name": "old"})
    first = cdc_org.admin("cdc")["last_replay_id"]
    try:
        cdc_org.session().post(f"{cdc_org.url}/__sandbox/cdc", json={"retention_seconds": 0.3})
        time.sleep(0.4)
        sf.Account.create({"Name": "new"})
        late = stream(cdc_org, sf, replay=-2)
        assert [e["data"]["payload"]["Name"] for e in late.poll(1)] == ["new"]
        probe = Bayeux(cdc_org.session(), f"{cdc_org.url}/cometd/{API}", sf.session_id)
        probe.handshake()
        assert probe.subscribe("/data/ChangeEvents", replay=first - 1)["error"].startswith("400::The replayId")
    finally:
        cdc_org.session().post(f"{cdc_org.url}/__sandbox/cdc", json={"retention_seconds": 72 * 3600})


def test_gap_events_carry_the_header_and_record_ids_only(cdc_org: Org, sf: Salesforce) -> None:
    account = sf.Account.create({"Name": "before gap"})["id"]
    client = stream(cdc_org, sf)
    cdc_org.session().post(f"{cdc_org.url}/__sandbox/cdc", json={"gap_next": 2})
    sf.Account.update(account, {"Industry": "Apparel"})
    created = sf.Account.create({"Name": "gap create"})["id"]
    sf.Account.update(account, {"Industry": "Banking"})  # the switch is spent: an ordinary change event
    gap_update, gap_create, update = payloads(client, 3)
    assert set(gap_update) == {"ChangeEventHeader"} and set(gap_create) == {"ChangeEventHeader"}
    assert gap_update["ChangeEventHeader"]["changeType"] == "GAP_UPDATE"
    assert gap_update["ChangeEventHeader"]["recordIds"] == [account]
    assert gap_update["ChangeEventHeader"]["changedFields"] == []
    assert gap_create["ChangeEventHeader"]["changeType"] == "GAP_CREATE"
    assert gap_create["ChangeEventHeader"]["recordIds"] == [created]
    assert update["ChangeEventHeader"]["changeType"] == "UPDATE" and update["Industry"] == "Banking"
    assert cdc_org.admin("cdc")["gap_next"] == 0


def test_a_transaction_over_the_overflow_threshold_ends_in_one_overflow_event_per_entity(
        cdc_org: Org, sf: Salesforce) -> None:
    client = stream(cdc_org, sf)
    try:
        cdc_org.session().post(f"{cdc_org.url}/__sandbox/cdc", json={"overflow_threshold": 3})
        sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": [
            {"attributes": {"type": "Contact"}, "LastName": f"O{i}"} for i in range(6)]})
        events = payloads(client, 4)
    finally:
        cdc_org.session().post(f"{cdc_org.url}/__sandbox/cdc", json={"overflow_threshold": 100_000})
    assert [e["ChangeEventHeader"]["changeType"] for e in events] == ["CREATE"] * 3 + ["GAP_OVERFLOW"]
    overflow = events[3]
    assert set(overflow) == {"ChangeEventHeader"}
    assert overflow["ChangeEventHeader"]["entityName"] == "Contact"
    assert overflow["ChangeEventHeader"]["recordIds"] == ["000000000000000AAA"]
    assert len({e["ChangeEventHeader"]["transactionKey"] for e in events}) == 1
