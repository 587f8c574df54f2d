"""`ferry serve` end to end through real sockets: the Shopify sandbox delivers signed webhooks over HTTPS to the
server, which stages them durably and loads them into the Salesforce sandbox in micro-batches.

Orders: a new order whose customer and product the org does not have yet still lands, parents first: the
shop's `customers/*` and `products/*` deliveries are dropped (a sender that lost them, or sends them later), so
only the order's webhook says anything, and the micro-batch fetches what it refers to (engine/parents.py).
Each micro-batch's run row counts its own API calls, not the running total of the process."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.engine.runner import Runner
from ferry.serve.registration import webhook_address

from .world import API, ServeThread, World, make_world, start_serve, stop_world, wait_for

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


# -- orders in real time: parents first, and each run counting its own calls ------------------------------


def _by(world: World, sobject: str, field: str) -> dict[str, dict[str, Any]]:
    return {str(r[field]): r for r in world.sf_records(sobject)}


def _webhook_runs(world: World) -> list[Any]:
    return [r for r in world.store.list_runs(world.spec.name, 500) if r.origin == "webhook"]


def _idle(world: World, before: set[int]) -> bool:
    """A micro-batch ran since ``before`` and every run has finished, nothing waits staged or in the outbox."""
    name = world.spec.name
    runs = [r for r in _webhook_runs(world) if r.id not in before]
    return bool(runs) and all(r.status != "running" for r in runs) and world.store.outbox_count(name) == 0 \
        and world.store.staged_count(name, world.store.get_mark(name, "planned_seq")) == 0


def _orderable_variant(world: World) -> tuple[int, int]:
    """(product id, variant id) of a variant the org has a PricebookEntry for."""
    held = set(_by(world, "PricebookEntry", "Shopify_Variant_Id__c"))
    for product in world.shop_records("products"):
        for variant in product["variants"]:
            if str(variant["id"]) in held:
                return int(product["id"]), int(variant["id"])
    raise AssertionError("no variant of the shop is in the org")


def test_a_new_order_of_a_new_customer_and_a_new_variant_lands_parents_first(world: World,
                                                                             served: ServeThread) -> None:
    # Only the order's own webhook arrives: the customer's and the product's deliveries are dropped.
    faults = {"seed": 1, "rules": [{"kind": "drop", "rate": 1.0, "topic": "customers/"},
                                   {"kind": "drop", "rate": 1.0, "topic": "products/"}]}
    assert world.shop_http.post("/__sandbox/webhooks/faults", json=faults).status_code == 200
    try:
        resp = world.shop_http.post(f"{API}/customers.json", json={"customer": {
            "first_name": "Grace", "last_name": "Hopper", "email": "grace.rt@example.com"}})
        assert resp.status_code == 201, resp.text
        customer = resp.json()["customer"]["id"]
        product, known = _orderable_variant(world)
        variants = [v for p in world.shop_records("products") if p["id"] == product for v in p["variants"]]
        added = world.put("products", product, {"variants": [{"id": v["id"]} for v in variants]
                                                + [{"title": "Realtime edition", "price": "12.50", "sku": "RT-1"}]})
        new_variant = next(v["id"] for v in added["variants"] if v.get("sku") == "RT-1")
        assert str(new_variant) not in _by(world, "PricebookEntry", "Shopify_Variant_Id__c")
        resp = world.shop_http.post(f"{API}/orders.json", json={"order": {
            "customer": {"id": customer}, "note": "first order",
            "line_items": [{"variant_id": new_variant, "quantity": 2}, {"variant_id": known, "quantity": 1}]}})
        assert resp.status_code == 201, resp.text
        order = resp.json()["order"]

        def landed() -> bool:
            sf_order = _by(world, "Order", "Shopify_Order_Id__c").get(str(order["id"]))
            items = [i for i in world.sf_records("OrderItem") if sf_order and i["OrderId"] == sf_order["Id"]]
            return len(items) == 2

        wait_for(landed, 30, "the new order with both its lines")
    finally:
        world.shop_http.delete("/__sandbox/webhooks/faults")
    account = _by(world, "Account", "Shopify_Customer_Id__c")[str(customer)]
    sf_order = _by(world, "Order", "Shopify_Order_Id__c")[str(order["id"])]
    assert sf_order["AccountId"] == account["Id"] and sf_order["Description"] == "first order"
    assert str(customer) in _by(world, "Contact", "Shopify_Customer_Id__c")
    entry = _by(world, "PricebookEntry", "Shopify_Variant_Id__c")[str(new_variant)]
    items = {i["PricebookEntryId"]: i for i in world.sf_records("OrderItem") if i["OrderId"] == sf_order["Id"]}
    assert items[entry["Id"]]["Quantity"] in (2, 2.0)
    # No delivery but the order's said anything about the customer or the new variant: they were fetched.
    fetched: dict[str, int] = {}
    for run in _webhook_runs(world):
        for stream, n in (run.stats.get("parents_fetched") or {}).items():
            fetched[stream] = fetched.get(stream, 0) + n
    assert fetched.get("customers", 0) >= 1 and fetched.get("products", 0) >= 1, fetched
    name = world.spec.name
    ours = {"Account": str(customer), "Contact": str(customer), "Order": str(order["id"]),
            "Product2": str(new_variant), "PricebookEntry": str(new_variant)}
    for obj, key in ours.items():
        assert world.store.dead_letter_for(name, obj, key) is None, (obj, key)


def test_an_order_edit_lands_and_each_run_counts_its_own_calls(world: World, served: ServeThread) -> None:
    order = next(o for o in world.shop_records("orders") if str(o["id"]) in _by(world, "Order", "Shopify_Order_Id__c"))
    counted: list[int] = []
    for n in range(3):
        before = {r.id for r in _webhook_runs(world)}
        calls_before = sum(world.sf_calls().values())
        world.put("orders", order["id"], {"note": f"edit {n}"})
        wait_for(lambda n=n: _by(world, "Order", "Shopify_Order_Id__c")[str(order["id"])].get("Description")
                 == f"edit {n}", 30, f"edit {n} of the order")
        wait_for(lambda before=before: _idle(world, before), 30, "the micro-batch to finish")
        runs = [r for r in _webhook_runs(world) if r.id not in before]
        assert all(r.status == "succeeded" for r in runs), [(r.id, r.status) for r in runs]
        calls = sum(int(o.get("api_calls", 0)) for r in runs for o in r.stats["objects"].values()) + sum(
            int(r.stats.get("setup_api_calls", 0)) for r in runs)
        # Each run row carries its own calls: the runs of this edit add up to what the org served meanwhile
        # (a running total would grow with every edit).
        assert calls == sum(world.sf_calls().values()) - calls_before, (calls, [r.stats["objects"] for r in runs])
        counted.append(calls)
    # The same edit costs the same each time (a running total would grow: 4, 8, 12, ...).
    assert len(set(counted)) == 1 and counted[0] <= 6, counted


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
