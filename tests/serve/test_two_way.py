"""Two-way sync through real sockets: Shopify customers <-> Salesforce Accounts/Contacts, both example pipelines
(examples/*-bidirectional.yml) in one `ferry serve`: Shopify's webhooks in one way, Salesforce Change Data
Capture (CometD) the other.

The same customer is edited on both sides in the same second, each side editing a field it owns (the phone in
the shop, the description in the CRM): the declared ownership decides, so both edits survive on both sides
(neither direction writes the field the other side owns back over it). Then the changes on both sandboxes are
counted for a few seconds: they stop (no ping-pong), and the echoes ferry dropped are in the runs' stats. A customer
made in the shop, and an Account made in the CRM, each end as one record on each side, linked both ways."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import salesforce_env, shopify_env
from ferry.connectors.salesforce.client import SalesforceClient
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.store import Store

from .world import REPO, free_port, start_serve, wait_for

API = "/admin/api/2025-07"
TO_SF = REPO / "examples" / "shopify-salesforce-bidirectional.yml"
TO_SHOP = REPO / "examples" / "salesforce-shopify-bidirectional.yml"


async def _session(config: Any) -> Any:
    client = SalesforceClient(config)
    try:
        return await client.auth.session()
    finally:
        await client.aclose()


class TwoWayWorld:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.shop = ShopifySandbox(tmp / "shop", seed=3, customers=0, products=1, orders=0,
                                   bucket_size=100_000, leak_rate=100_000.0, webhook_time_scale=0.001)
        self.org = SalesforceSandbox(tmp / "org")
        self.shop_run = start_in_thread(self.shop.app, tmp / "shop")
        self.org_run = start_in_thread(self.org.app, tmp / "org")
        shop_info = {**self.shop.credentials(self.shop_run.url), "ca_file": str(self.shop_run.ca_file),
                     "webhook_secret": self.shop.webhook_secret}
        org_info = {**self.org.credentials(self.org_run.url), "ca_file": str(self.org_run.ca_file)}
        env = {**shopify_env(shop_info), **salesforce_env(org_info)}
        self.to_sf = load_pipeline(TO_SF, env)
        self.to_shop = load_pipeline(TO_SHOP, env)
        self.store = Store(tmp / "ferry.db")
        self.shop_http = httpx.Client(base_url=self.shop_run.url, verify=str(self.shop_run.ca_file), timeout=30,
                                      headers={"X-Shopify-Access-Token": self.shop.access_token})
        session = asyncio.run(_session(self.to_sf.target))
        # A person's edits: the org's REST API without ferry's call options (`client=ferry`)
        self.org_http = httpx.Client(base_url=session.instance_url, verify=str(self.org_run.ca_file), timeout=30,
                                     headers={"Authorization": f"Bearer {session.access_token}"})

    def graphql(self) -> dict[str, Any]:
        return dict(self.shop_http.get("/__sandbox/graphql").json())

    def create_customers(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            body = {"customer": {"first_name": f"Ada{i}", "last_name": f"Lovelace{i}", "email": f"ada{i}@example.com",
                                 "phone": f"+1613555{i:04d}", "note": "from the shop"}}
            resp = self.shop_http.post(f"{API}/customers.json", json=body)
            assert resp.status_code == 201, resp.text

    def close(self) -> None:
        self.shop_http.close()
        self.org_http.close()
        self.org_run.stop()
        self.shop_run.stop()
        self.store.close()

    def customers(self) -> dict[int, dict[str, Any]]:
        return {int(c["id"]): c for c in self.shop.state.table("customers").records}

    def accounts(self) -> dict[str, dict[str, Any]]:
        return dict(self.org.state.store.table("Account").rows)

    def account_of(self, customer_id: int) -> dict[str, Any]:
        found = [a for a in self.accounts().values() if str(a.get("Shopify_Customer_Id__c")) == str(customer_id)]
        assert len(found) == 1, found
        return found[0]

    def changes(self) -> tuple[int, int, int]:
        """(customer changes the shop has announced, Account and Contact change events the org has published)."""
        shop = sum(1 for d in self.shop_http.get("/__sandbox/webhooks/deliveries").json()["deliveries"]
                   if str(d.get("topic", "")).startswith("customers/"))
        events = list(self.org.cdc.bus.events)
        return (shop, sum(1 for e in events if e.entity == "Account"),
                sum(1 for e in events if e.entity == "Contact"))

    def edit_customer(self, customer_id: int, **fields: Any) -> None:
        body = {"customer": {"id": customer_id, **fields}}
        resp = self.shop_http.put(f"{API}/customers/{customer_id}.json", json=body)
        assert resp.status_code == 200, resp.text

    def edit_account(self, account_id: str, **fields: Any) -> None:
        resp = self.org_http.patch(f"/services/data/v62.0/sobjects/Account/{account_id}", json=fields)
        assert resp.status_code == 204, resp.text

    def runs(self, pipeline: str) -> list[dict[str, Any]]:
        return [json.loads(r.stats) if isinstance(r.stats, str) else r.stats
                for r in self.store.list_runs(pipeline, 1000) if r.stats]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[TwoWayWorld]:
    w = TwoWayWorld(tmp_path)
    yield w
    w.close()


def _settled(world: TwoWayWorld, quiet: float = 2.5, timeout: float = 40.0) -> tuple[int, int, int]:
    """Wait until neither sandbox announces a change for ``quiet`` seconds; the counts then."""
    deadline = time.monotonic() + timeout
    last, since = world.changes(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = world.changes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the two sandboxes never stopped changing (ping-pong?): {last}")


def test_same_second_edits_on_both_sides_end_by_ownership_without_ping_pong(world: TwoWayWorld) -> None:
    # Backfill both ways (what a user runs before `ferry serve`): the shop's customers become Accounts and
    # Contacts; the Salesforce direction then links the same customers (found by email) and tags them.
    world.create_customers(3)
    asyncio.run(Runner(world.to_sf, world.store).run())
    asyncio.run(Runner(world.to_shop, world.store).run())
    assert len(world.accounts()) == len(world.customers()) == 3
    serve = start_serve([world.to_sf, world.to_shop], world.store, _options(world))
    try:
        _settled(world)  # the CDC catch-up from the backfill's cursor, the backfill's own echoes
        cid = sorted(world.customers())[0]
        account = world.account_of(cid)
        before = world.changes()
        # The same second: the shop edits the phone (Shopify owns it), the CRM the description (Salesforce owns
        # it, the shop's customer note).
        world.edit_customer(cid, phone="+16135550199")
        world.edit_account(str(account["Id"]), Description="Key account since 2026")
        try:
            wait_for(lambda: world.customers()[cid].get("note") == "Key account since 2026"
                     and world.account_of(cid).get("Phone") == "+16135550199", 30, "both edits on both sides")
        except AssertionError:
            print("DEBUG", world.customers()[cid], world.account_of(cid), serve.service.state.inboxes and
                  {k: v.counts for k, v in serve.service.state.inboxes.items()},
                  world.shop_http.get("/__sandbox/webhooks/deliveries").json())
            raise
        after = _settled(world)
        customer, account = world.customers()[cid], world.account_of(cid)
        # Ownership decided: each side's edit survived on both sides, nothing wrote an owned field back over it.
        assert customer["phone"] == "+16135550199" and account["Phone"] == "+16135550199"
        assert customer["note"] == account["Description"] == "Key account since 2026"
        # No ping-pong, counted exactly: each side's edit and ferry's one write of it to the other side, nothing
        # more. The shop: the phone edit, ferry's note; the org: the description edit, ferry's phone on the Account
        # and on its Contact. Each side's write coming back through the other direction was dropped as an echo.
        made = tuple(a - b for a, b in zip(after, before, strict=True))
        assert made == (2, 2, 1), f"(shop, Account, Contact) changes: {made}"
        time.sleep(2.0)
        assert world.changes() == after, "writes went on after the sync settled"

        # A customer created in the shop becomes an Account; its change event comes back to the shop direction,
        # which finds the customer through the other direction's id map: one update (its tags), no create that
        # Shopify refuses as a taken email followed by a lookup and an update (24 points and 3 requests).
        points = world.graphql()["points_charged"]
        world.create_customers(1, start=10)
        new = max(world.customers())
        wait_for(lambda: "sf-" in str(world.customers()[new].get("tags")), 30, "the new customer linked back")
        settled = _settled(world)
        assert world.graphql()["points_charged"] - points == 10, "not one customerUpdate for the new customer"
        # The shop: the create and ferry's tags; the org: ferry's Account and Contact creates. Nothing else.
        assert tuple(a - b for a, b in zip(settled, after, strict=True)) == (2, 1, 1)
        _crm_made_account_comes_back_as_itself(world, settled)  # the other way round (shares this serve)
    finally:
        assert serve.stop() == 0
    echoes = sum(o.get("echoes", 0) for r in world.runs(world.to_sf.name) + world.runs(world.to_shop.name)
                 for o in (r.get("objects") or {}).values())
    assert echoes >= 1, "ferry's own writes came back and were not counted as echoes"


def _crm_made_account_comes_back_as_itself(world: TwoWayWorld, before: tuple[int, int, int]) -> None:
    """A person creates an Account and its Contact in Salesforce. The CRM -> shop direction creates the shop
    customer; the shop's webhook for it comes back through the shop -> CRM direction, which must address the
    SAME Account and Contact (it adopts them: their external id becomes the customer's id), not create a second
    pair. Nothing more is written once the two agree."""
    accounts, customers = set(world.accounts()), set(world.customers())
    contacts_before = set(world.org.state.store.table("Contact").rows)
    resp = world.org_http.post("/services/data/v62.0/sobjects/Account",
                               json={"Name": "Grace Hopper", "Phone": "+16135550111"})
    assert resp.status_code == 201, resp.text
    account_id = str(resp.json()["id"])
    resp = world.org_http.post("/services/data/v62.0/sobjects/Contact",
                               json={"AccountId": account_id, "FirstName": "Grace", "LastName": "Hopper",
                                     "Email": "grace@example.com", "Phone": "+16135550111"})
    assert resp.status_code == 201, resp.text
    contact_id = str(resp.json()["id"])
    wait_for(lambda: len(world.customers()) == len(customers) + 1, 30, "the shop customer")
    after = _settled(world)
    (cid,) = set(world.customers()) - customers
    customer = world.customers()[cid]
    assert set(world.accounts()) - accounts == {account_id}, "a second Account"
    contacts = world.org.state.store.table("Contact").rows
    assert set(contacts) - contacts_before == {contact_id}, "a second Contact"
    # Linked both ways: the Account and its Contact carry the customer's id, the customer the Account's, and
    # the shop direction's id map (in the store: a restart keeps it) names the same records.
    assert str(world.accounts()[account_id]["Shopify_Customer_Id__c"]) == str(cid)
    assert str(contacts[contact_id]["Shopify_Customer_Id__c"]) == str(cid)
    assert f"sf-{account_id}" in str(customer.get("tags")) and customer["email"] == "grace@example.com"
    assert world.store.target_ids(world.to_sf.name, "Account", [str(cid)]) == {str(cid): account_id}
    assert world.store.target_ids(world.to_sf.name, "Contact", [str(cid)]) == {str(cid): contact_id}
    # Counted exactly: the person's two creates, ferry's customer in the shop, ferry's adoption of the Account
    # and the Contact (the key written onto them). The shop's webhook upserted what the CRM already held (no
    # change), and every write coming back the other way was an echo.
    made = tuple(a - b for a, b in zip(after, before, strict=True))
    assert made == (1, 2, 2), f"(shop, Account, Contact) changes: {made}"


def _options(world: TwoWayWorld) -> Any:
    from ferry.sandbox.tls import ensure_tls
    from ferry.serve.service import ServeOptions

    tls = ensure_tls(world.tmp / "shop")  # the shop sandbox's CA signed it: its webhook dispatcher trusts it
    return ServeOptions(host="127.0.0.1", port=free_port(), tls_cert=tls.cert_file, tls_key=tls.key_file,
                        window=0.1, schedules=False)


def _after_the_shop_stamp(world: TwoWayWorld, cid: int) -> None:
    """Wait until the wall clock is past the customer's last stamp in the shop.

    The CRM edits below change the last name, a field both sides own, decided by ``latest_wins``: the Contact's
    SystemModstamp against the shop's stamp of the customer. A CRM edit made before the shop's stamp (a stamp to
    the second; with ``same_second_writes=False`` the shop's clock even runs ahead under a burst of writes) is,
    rightly by the rule, the older one: the shop's name stays and the run counts it as ``target_newer``. A
    person edits seconds later; so does the test."""
    stamp = dt.datetime.fromisoformat(str(world.customers()[cid]["updated_at"])).timestamp()
    wait_for(lambda: time.time() > stamp + 0.01, 30, "the wall clock past the shop's stamp")


def test_change_feed_resumes_from_the_staged_replay_id_after_a_restart(world: TwoWayWorld) -> None:
    world.create_customers(2)
    asyncio.run(Runner(world.to_sf, world.store).run())
    asyncio.run(Runner(world.to_shop, world.store).run())
    cid = sorted(world.customers())[1]
    account_id = str(world.account_of(cid)["Id"])
    serve = start_serve([world.to_shop], world.store, _options(world))
    try:
        world.edit_account(account_id, Description="first edit")
        wait_for(lambda: world.customers()[cid].get("note") == "first edit", 30, "the first edit in the shop")
        # The backfill's cursor made the feed subscribe, then catch up from the cursor: an edit made before the
        # subscription was open is read by the catch-up (no event for it). Now live: the next edit is an event,
        # and its page is staged with its replay id.
        world.edit_account(account_id, Description="second edit")
        wait_for(lambda: world.customers()[cid].get("note") == "second edit", 30, "the second edit in the shop")
        wait_for(lambda: isinstance((world.store.read_state(world.to_shop.name, "Account") or {}).get("replay_id"),
                                    int), 30, "a replay id staged")
    finally:
        assert serve.stop() == 0
    world.edit_account(account_id, Description="made while ferry was down")
    serve = start_serve([world.to_shop], world.store, _options(world))
    try:
        wait_for(lambda: world.customers()[cid].get("note") == "made while ferry was down", 30,
                 "the edit made while ferry was down")
        # A Contact edited alone (no Account change event): its Account's record embeds it, so the Contact's own
        # change stream carries it to the shop, and its replay id is saved with the Account's position.
        contact = next(c for c in world.org.state.store.table("Contact").rows.values()
                       if c.get("AccountId") == account_id)
        _after_the_shop_stamp(world, cid)
        resp = world.org_http.patch(f"/services/data/v62.0/sobjects/Contact/{contact['Id']}",
                                    json={"LastName": "Byron"})
        assert resp.status_code == 204, resp.text
        wait_for(lambda: world.customers()[cid].get("last_name") == "Byron", 30, "the Contact's edit in the shop")
        wait_for(lambda: isinstance(((world.store.read_state(world.to_shop.name, "Account") or {}).get("children")
                                     or {}).get("Contact", {}).get("replay_id"), int), 30, "the Contact's replay id")
        feed = serve.service.pipelines[0].feed
        # The Account stream resumed by its replay id (no catch-up). Its Contact stream saw no event (nothing
        # edited a Contact): it has no replay id yet and catches up from its watermark, as after any such gap.
        assert feed is not None and feed.events.catch_ups_by_stream.get("Account", 0) == 0  # type: ignore[attr-defined]
    finally:
        assert serve.stop() == 0
    # Only a Contact edited while ferry was down: no Account event will come, and the Contact stream resumes by
    # its own saved replay id (it does not wait for the Account stream's first event).
    _after_the_shop_stamp(world, cid)
    resp = world.org_http.patch(f"/services/data/v62.0/sobjects/Contact/{contact['Id']}", json={"LastName": "Shelley"})
    assert resp.status_code == 204, resp.text
    serve = start_serve([world.to_shop], world.store, _options(world))
    try:
        wait_for(lambda: world.customers()[cid].get("last_name") == "Shelley", 30, "the Contact edited while down")
        feed = serve.service.pipelines[0].feed
        assert feed is not None and feed.events.catch_ups == 0  # type: ignore[attr-defined]  # both by replay id
    finally:
        assert serve.stop() == 0


def test_a_batch_that_dies_between_the_adoption_and_its_upsert_adopts_again_and_makes_no_second_account(
    world: TwoWayWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backfill path (no serve): a person's Account and Contact become a shop customer; the shop -> CRM run
    # adopts them, then dies before its upsert (the state a killed process leaves: rows queued, keys written
    # onto the records, nothing in this pipeline's id map). The next run adopts again (nothing to change on
    # the Contact: it carries the key) and upserts into the same records.
    from ferry.engine import runner as runner_module

    resp = world.org_http.post("/services/data/v62.0/sobjects/Account", json={"Name": "Ada Byron"})
    account_id = str(resp.json()["id"])
    resp = world.org_http.post("/services/data/v62.0/sobjects/Contact",
                               json={"AccountId": account_id, "LastName": "Byron", "Email": "ada@example.com"})
    contact_id = str(resp.json()["id"])
    asyncio.run(Runner(world.to_shop, world.store).run())
    (cid, _), = world.customers().items()
    real = runner_module.adopt_linked

    async def adopt_then_die(*args: Any, **kwargs: Any) -> int:
        await real(*args, **kwargs)
        raise RuntimeError("killed after the adoption")

    monkeypatch.setattr(runner_module, "adopt_linked", adopt_then_die)
    with pytest.raises(RuntimeError, match="killed after the adoption"):
        asyncio.run(Runner(world.to_sf, world.store).run())
    assert str(world.accounts()[account_id]["Shopify_Customer_Id__c"]) == str(cid)
    assert world.store.target_ids(world.to_sf.name, "Account", [str(cid)]) == {}
    monkeypatch.setattr(runner_module, "adopt_linked", real)
    stats = asyncio.run(Runner(world.to_sf, world.store).run())
    assert stats.status == "succeeded" and stats.adopted == 1, stats.as_dict()  # the Account again, not the Contact
    assert list(world.accounts()) == [account_id]
    contacts = world.org.state.store.table("Contact").rows
    assert list(contacts) == [contact_id] and str(contacts[contact_id]["Shopify_Customer_Id__c"]) == str(cid)
    assert world.store.target_ids(world.to_sf.name, "Account", [str(cid)]) == {str(cid): account_id}
    assert world.store.target_ids(world.to_sf.name, "Contact", [str(cid)]) == {str(cid): contact_id}
