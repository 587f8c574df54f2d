"""`ferry serve` end to end through real sockets: the Shopify sandbox delivers signed webhooks over HTTPS to the
server, which stages them durably and loads them into the Salesforce sandbox in micro-batches."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.engine.runner import Runner
from ferry.serve.registration import webhook_address

from .world import ServeThread, World, make_world, start_serve, stop_world, wait_for

# An org rule ferry's own validation cannot know: a Contact it refuses fails in Salesforce, alone.
ORG_RULES = """
objects:
  Contact:
    validationRules:
      - name: No_Refused
        formula: FirstName = "Refused"
        message: This org takes no contact named Refused
        errorField: FirstName
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("serve-e2e"), customers=40, products=10, orders=300, org_schema=ORG_RULES)
    try:
        stats = asyncio.run(Runner(w.spec, w.store).run())  # the backfill: what webhooks then keep current
        assert stats.status == "succeeded", stats.error
        yield w
    finally:
        stop_world(w)


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[ServeThread]:
    server = start_serve([world.spec], world.store, world.serve_options())
    try:
        yield server
    finally:
        assert server.stop() == 0


def _contacts(world: World) -> dict[str, dict[str, object]]:
    return {str(r["Shopify_Customer_Id__c"]): r for r in world.sf_records("Contact")}


def test_serve_registers_its_subscriptions_once(world: World, served: ServeThread) -> None:
    address = webhook_address(served.url, world.spec.name, "shopify")
    ours = sorted(s["topic"] for s in world.subscriptions() if s["address"] == address)
    assert ours == sorted(["customers/create", "customers/update", "orders/create", "orders/updated",
                           "products/create", "products/update"])
    assert served.service.registered[world.spec.name] == {"created": 6, "existing": 0}
    # A second registration (a restart) creates nothing.
    p = served.service.pipelines[0]
    assert p.inbox is not None
    again = asyncio.run(p.inbox.receiver.register(p.inbox.receiver.subscriptions(address, ["customers", "orders",
                                                                                          "products"])))
    assert again == {"created": 0, "existing": 6}
    assert len(world.subscriptions()) == 6


def test_a_customer_edit_reaches_salesforce_through_a_webhook(world: World, served: ServeThread) -> None:
    customer = world.shop_records("customers")[3]
    key = str(customer["id"])
    world.put("customers", customer["id"], {"first_name": "Webhooked"})
    wait_for(lambda: _contacts(world).get(key, {}).get("FirstName") == "Webhooked", 30, "the Contact update")
    origins = Counter(r.origin for r in world.store.list_runs(world.spec.name, 50))
    assert origins["webhook"] >= 1 and origins["manual"] == 1
    assert served.service.state.inboxes[(world.spec.name, "shopify")].counts.get("staged", 0) >= 1
    import httpx

    health = httpx.get(f"{served.url}/healthz", verify=str(world.shop_run.ca_file), timeout=10).json()
    assert health["events"][world.spec.name]["batches"] >= 1
    assert health["webhooks"][f"{world.spec.name}/shopify"]["staged"] >= 1
    scrape = httpx.get(f"{served.url}/metrics/", verify=str(world.shop_run.ca_file), timeout=10).text
    assert 'ferry_webhook_ack_seconds_count{system="shopify"}' in scrape
    assert f'ferry_end_to_end_seconds_count{{object="Contact",pipeline="{world.spec.name}"}}' in scrape


def test_a_burst_of_order_updates_becomes_a_few_calls(world: World, served: ServeThread) -> None:
    orders = world.shop_records("orders")[:300]
    processor = served.service.pipelines[0].processor
    assert processor is not None
    processor.window = 1.0  # a wider window: fewer, larger batches (latency traded for calls; --window-ms)
    before = world.sf_calls()

    def landed() -> bool:
        delivered = sum(1 for d in world.deliveries() if d["topic"] == "orders/updated" and d["state"] == "delivered")
        name = world.spec.name
        return delivered >= len(orders) and world.store.outbox_count(name) == 0 \
            and world.store.staged_count(name, world.store.get_mark(name, "planned_seq")) == 0

    try:
        for order in orders:
            world.put("orders", order["id"], {"note": f"burst {order['id']}"})
        wait_for(landed, 90, "every order delivered and loaded")
    finally:
        processor.window = 0.1
    after = world.sf_calls()
    writes = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    # 300 orders (Order, and their OrderItems) as a handful of Composite / Collections calls, not 300+ writes.
    assert sum(writes.values()) <= 16, writes
    assert Counter(r.origin for r in world.store.list_runs(world.spec.name, 200))["webhook"] >= 1


def test_staging_is_empty_and_nothing_dead_lettered_after_events(world: World, served: ServeThread) -> None:
    wait_for(lambda: world.store.outbox_count(world.spec.name) == 0, 30, "the outbox to drain")
    assert world.store.count_dead_letters(world.spec.name).get("webhook", 0) == 0


def test_a_restart_processes_what_was_staged_before_it(world: World, tmp_path: Path) -> None:
    """Events staged by a process that died before loading them are loaded by the next start."""
    customer = world.shop_records("customers")[5]
    # Stage an event as the inbox would, with no server running (the previous process died after the ack).
    import orjson

    from ferry.connectors.shopify.normalize import identify
    from ferry.core.ports import StagedRow

    raw = {**customer, "first_name": "Staged", "updated_at": "2031-01-01T00:00:00-00:00"}
    key, version = identify("customers", raw)
    assert world.store.accept_delivery(world.spec.name, "shopify:test-restart", "customers",
                                       [StagedRow(key, version, orjson.dumps(raw))])
    server = start_serve([world.spec], world.store, world.serve_options(register=False))
    try:
        wait_for(lambda: _contacts(world).get(key, {}).get("FirstName") == "Staged", 30, "the staged event")
    finally:
        assert server.stop() == 0


def test_events_ride_out_a_short_target_outage(world: World, served: ServeThread) -> None:
    """Salesforce answers 503 to its next calls: the event is acknowledged and staged all the same, and its
    write lands once the org answers again (HTTP retries, then the record's retry budget). An outage longer
    than the budget dead-letters the records with a transient code: the schedule's sweep or `ferry dlq
    replay` writes them later (docs/serve.md)."""
    key = next(k for k in _contacts(world) if k.isdigit())
    name = world.spec.name
    faults = {"rules": [{"kind": "503", "rate": 1.0, "count": 6}]}
    assert world.org_http.post("/__sandbox/faults", json=faults).status_code == 200
    try:
        world.put("customers", int(key), {"first_name": "AfterOutage"})
        wait_for(lambda: _contacts(world)[key].get("FirstName") == "AfterOutage", 60, "the event after the outage")
        injected = world.org_http.get("/__sandbox/stats").json()["faults_injected"]
        assert sum(injected.values()) >= 6, injected
    finally:
        world.org_http.delete("/__sandbox/faults")
    letter = world.store.dead_letter_for(name, "Contact", key)
    assert letter is None or letter.status != "open"


def test_a_micro_batch_is_one_call_and_a_contact_the_org_refuses_is_dead_lettered(
    world: World, served: ServeThread
) -> None:
    """Account + Contact of a micro-batch go in one Composite call (parents first); a Contact the org refuses
    is dead-lettered with the org's reason, its Account and the other customers' records are written."""
    name = world.spec.name
    processor = served.service.pipelines[0].processor
    assert processor is not None
    customers = [c for c in world.shop_records("customers")[20:30] if str(c["id"]) in _contacts(world)][:4]
    bad, good = customers[0], customers[1:]

    def idle() -> bool:  # what earlier tests sent is written (their calls are not this test's)
        staged = world.store.staged_count(name, world.store.get_mark(name, "planned_seq"))
        return world.store.outbox_count(name) == 0 and staged == 0 and not processor.run_lock.locked()

    wait_for(idle, 60, "earlier events to be written")
    processor.window = 1.0  # the four edits in one micro-batch
    before = world.sf_calls()
    runs_before = {r.id for r in world.store.list_runs(name, 500)}
    try:
        world.put("customers", bad["id"], {"first_name": "Refused"})
        for n, customer in enumerate(good):
            world.put("customers", customer["id"], {"first_name": f"Together{n}"})
        wait_for(lambda: world.store.dead_letter_for(name, "Contact", str(bad["id"])) is not None, 30,
                 "the refused Contact's dead letter")
        wait_for(lambda: all(_contacts(world)[str(c["id"])].get("FirstName") == f"Together{n}"
                             for n, c in enumerate(good)), 30, "the other Contacts")
    finally:
        processor.window = 0.1
    letter = world.store.dead_letter_for(name, "Contact", str(bad["id"]))
    assert letter is not None
    assert letter.errors[0]["code"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert "no contact named Refused" in letter.errors[0]["message"] and letter.errors[0]["fields"] == ["FirstName"]
    accounts = {str(r["Shopify_Customer_Id__c"]): r for r in world.sf_records("Account")}
    assert accounts[str(bad["id"])]["Name"].startswith("Refused")  # its Account was written all the same
    after = world.sf_calls()
    writes = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    runs = [r for r in world.store.list_runs(name, 500) if r.id not in runs_before and r.origin == "webhook"]
    written = [r for r in runs if r.stats.get("objects", {}).get("Contact", {}).get("written")]
    assert written and all(r.stats["objects"]["Contact"]["strategy"] == "together" for r in written)
    # One Composite call per micro-batch: no Collections call of its own.
    composite = "POST /services/data/vXX.X/composite"
    assert set(writes) == {composite} and 1 <= writes[composite] <= len(runs), (writes, len(runs))
