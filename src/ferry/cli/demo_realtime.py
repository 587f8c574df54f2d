"""``ferry demo realtime``: a two-way sync running live between a Shopify and a Salesforce sandbox, orders included.

Both sandboxes run on 127.0.0.1 over HTTPS; ``ferry serve`` runs the two example pipelines
(examples/shopify-salesforce-bidirectional.yml and salesforce-shopify-bidirectional.yml) after a backfill each
way: the shop's webhooks in one way, Salesforce Change Data Capture the other. The shop -> Salesforce direction
also carries the shop's products and orders one way (the Product2, PricebookEntry, Order and OrderItem objects
of examples/shopify-to-salesforce.yml added to it: ``realtime_pipeline``). At a steady rate the demo then
creates customers (each with a first order at once, before the org has the customer), edits their phones,
places and edits orders (guest checkouts among them) in the shop (the sandbox delivers signed webhooks, some of
them twice: a duplicate fault), and edits Accounts' descriptions in Salesforce as a sales rep would. It
measures each change's end-to-end latency (the source's API answered -> the change visible in the other
system, by polling it), and at the end checks against the sandboxes themselves: every change arrived (lost),
no record exists twice (duplicated), once the stream stops neither side keeps changing (ping-pong), and the
org equals a clean batch run of the final shop into an empty org (``demo_realtime_check``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ferry.cli.demo import salesforce_env, shopify_env
from ferry.cli.demo_realtime_check import compare_with_clean_run, org_rows
from ferry.engine.pipeline import load_pipeline, packaged_examples
from ferry.engine.runner import Runner
from ferry.store import Store

API = "/admin/api/2025-07"
SHOP_TO_CRM = "shopify-salesforce-bidirectional"
CRM_TO_SHOP = "salesforce-shopify-bidirectional"
ORDERS_FROM = "shopify-to-salesforce"  # the one-way example whose order objects the demo's shop direction adds
ORDER_OBJECTS = ("Product2", "PricebookEntry", "Order", "OrderItem")
INITIAL_CUSTOMERS = 20
INITIAL_ORDERS = 10
PRODUCTS = 5
QUIET_SECONDS = 3.0  # after the stream: no change on either side for this long = settled; then one more window
# What each resource changed at the source becomes in the target (its writes, echoes, duplicates per resource).
RESOURCE_OBJECTS: dict[str, dict[str, tuple[str, ...]]] = {
    "shopify->salesforce": {"customers": ("Account", "Contact"), "orders": ("Order", "OrderItem"),
                            "products": ("Product2", "PricebookEntry")},
    "salesforce->shopify": {"customers": ("Customer",)},
}


@dataclass
class Snapshot:
    """Both sides at one moment: Accounts by the Shopify customer id they carry, shop customers by id, Orders by
    the Shopify order id, and how many OrderItems each Order (by its Salesforce Id) has."""

    accounts: dict[str, dict[str, Any]]
    customers: dict[int, dict[str, Any]]
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: Counter[str] = field(default_factory=Counter)

    def order_complete(self, order_id: int, lines: int) -> bool:
        order = self.orders.get(str(order_id))
        return order is not None and self.items.get(str(order.get("Id")), 0) == lines


@dataclass
class Change:
    direction: str  # "shopify->salesforce" | "salesforce->shopify"
    kind: str
    made_at: float
    visible: Callable[[Snapshot], bool]
    seen_at: float | None = None
    target: str = ""  # the record and field changed: a later change of the same one supersedes this one
    superseded: bool = False  # a later change of the same field was made before this one was seen
    resource: str = "customers"  # what changed at the source: customers | orders


@dataclass
class RealtimeReport:
    seconds: float
    rate: float
    changes: dict[str, int] = field(default_factory=dict)
    directions: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    ping_pong: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # open dead letters per object, both pipelines
    batch_check: dict[str, Any] = field(default_factory=dict)  # the org vs a clean batch run of the final shop

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.ping_pong == 0
                and bool(self.batch_check.get("equal")))

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "rate": self.rate, "changes": self.changes, "directions": self.directions,
                "lost": self.lost, "duplicated": self.duplicated, "ping_pong": self.ping_pong,
                "dead_letters": self.dead_letters, "equals_clean_batch_run": self.batch_check, "ok": self.ok}


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000, 1)


class _World:
    """The two sandboxes in this process, the pipelines pointed at them, the state store."""

    def __init__(self, tmp: Path) -> None:
        from ferry.sandbox.salesforce import SalesforceSandbox
        from ferry.sandbox.serve import start_in_thread
        from ferry.sandbox.shopify import ShopifySandbox

        self.tmp = tmp
        self.shop = ShopifySandbox(tmp / "shop", seed=1, customers=0, products=PRODUCTS, orders=0,
                                   bucket_size=100_000, leak_rate=100_000.0, webhook_time_scale=0.001)
        self.org = SalesforceSandbox(tmp / "org")
        self.shop_run = start_in_thread(self.shop.app, tmp / "shop")
        self.org_run = start_in_thread(self.org.app, tmp / "org")
        shop_info = {**self.shop.credentials(self.shop_run.url), "ca_file": str(self.shop_run.ca_file),
                     "webhook_secret": self.shop.webhook_secret}
        org_info = {**self.org.credentials(self.org_run.url), "ca_file": str(self.org_run.ca_file)}
        self.env = {**shopify_env(shop_info), **salesforce_env(org_info)}
        self.to_crm_file = realtime_pipeline(tmp)
        self.to_crm = load_pipeline(self.to_crm_file, self.env)
        self.to_shop = load_pipeline(packaged_examples()[CRM_TO_SHOP], self.env)
        self.store = Store(tmp / "ferry.db")
        self.shop_http = httpx.Client(base_url=self.shop_run.url, verify=str(self.shop_run.ca_file), timeout=30,
                                      headers={"X-Shopify-Access-Token": self.shop.access_token})
        self.org_http = self._person_on_the_org()

    def _person_on_the_org(self) -> httpx.Client:
        """The org's REST API as a person edits it: without ferry's ``client=ferry`` call option."""
        from ferry.connectors.salesforce.client import SalesforceClient

        async def session() -> Any:
            client = SalesforceClient(self.to_crm.target)
            try:
                return await client.auth.session()
            finally:
                await client.aclose()

        s = asyncio.run(session())
        return httpx.Client(base_url=s.instance_url, verify=str(self.org_run.ca_file), timeout=30,
                            headers={"Authorization": f"Bearer {s.access_token}"})

    def close(self) -> None:
        self.shop_http.close()
        self.org_http.close()
        self.org_run.stop()
        self.shop_run.stop()
        self.store.close()

    # -- what each side holds (read in-process, as often as the latency needs) ---------------------------
    def customers(self) -> list[dict[str, Any]]:
        return list(self.shop.state.table("customers").records)

    def org_rows(self, sobject: str) -> list[dict[str, Any]]:
        try:
            return org_rows(self.org, sobject)
        except RuntimeError:  # the org kept changing the table while it was copied: none this time
            return []

    def accounts(self) -> list[dict[str, Any]]:
        return self.org_rows("Account")

    def snapshot(self) -> Snapshot:
        return Snapshot({str(a.get("Shopify_Customer_Id__c")): a for a in self.accounts()},
                        {int(c["id"]): c for c in self.customers()},
                        {str(o.get("Shopify_Order_Id__c")): o for o in self.org_rows("Order")},
                        Counter(str(i.get("OrderId")) for i in self.org_rows("OrderItem")))

    def idle(self) -> bool:
        """Nothing staged and not yet planned, nothing queued to write, in either direction."""
        from ferry.engine.runner import PLANNED_MARK

        return all(self.store.staged_count(s.name, self.store.get_mark(s.name, PLANNED_MARK)) == 0
                   and self.store.outbox_count(s.name) == 0 for s in (self.to_crm, self.to_shop))

    def change_counts(self, topics: str = "customers/") -> tuple[int, int]:
        """(changes the shop announced of ``topics``, Account change events the org published). Customers and
        Accounts are what goes both ways (ping-pong); "" counts orders too (the stream settled)."""
        shop = self.shop_http.get("/__sandbox/webhooks/deliveries").json()["deliveries"]
        return (sum(1 for d in shop if str(d.get("topic", "")).startswith(topics) and not d.get("copy")),
                sum(1 for e in self.org.cdc.bus.events if e.entity == "Account"))

    def org_variants(self) -> list[int]:
        """The shop's variants the org has a PricebookEntry for."""
        return sorted(int(e["Shopify_Variant_Id__c"]) for e in self.org_rows("PricebookEntry"))

    # -- changes, as people make them -------------------------------------------------------------------
    def create_customer(self, n: int) -> int:
        body = {"customer": {"first_name": f"Demo{n}", "last_name": f"Customer{n}", "email": f"demo{n}@example.com",
                             "phone": f"+1613{n:07d}", "note": "created in the shop"}}
        resp = self.shop_http.post(f"{API}/customers.json", json=body)
        resp.raise_for_status()
        return int(resp.json()["customer"]["id"])

    def edit_phone(self, customer_id: int, phone: str) -> None:
        resp = self.shop_http.put(f"{API}/customers/{customer_id}.json",
                                  json={"customer": {"id": customer_id, "phone": phone}})
        resp.raise_for_status()

    def create_order(self, customer_id: int | None, variants: list[int], n: int) -> tuple[int, int]:
        """An order of ``variants`` (one line each) by a customer, or a guest checkout: (order id, lines)."""
        order: dict[str, Any] = {"line_items": [{"variant_id": v, "quantity": 1 + (n + i) % 3}
                                                for i, v in enumerate(variants)], "note": f"order {n}"}
        if customer_id is None:
            order["email"] = f"guest{n}@example.com"
        else:
            order["customer"] = {"id": customer_id}
        resp = self.shop_http.post(f"{API}/orders.json", json={"order": order})
        resp.raise_for_status()
        return int(resp.json()["order"]["id"]), len(variants)

    def edit_order_note(self, order_id: int, note: str) -> None:
        resp = self.shop_http.put(f"{API}/orders/{order_id}.json", json={"order": {"id": order_id, "note": note}})
        resp.raise_for_status()

    def edit_description(self, account_id: str, text: str) -> None:
        self.org_http.patch(f"/services/data/v62.0/sobjects/Account/{account_id}",
                            json={"Description": text}).raise_for_status()


def realtime_pipeline(folder: Path) -> Path:
    """The demo's Shopify -> Salesforce pipeline, written to ``folder``: the two-way example
    (shopify-salesforce-bidirectional.yml: customers -> Accounts + Contacts, ownership, echo suppression) with
    the one-way example's products and orders added (its Product2, PricebookEntry, Order and OrderItem
    objects, streams ``products`` and ``orders``). Orders go one way; the name stays the two-way peer's."""
    examples = packaged_examples()
    spec = yaml.safe_load(Path(examples[SHOP_TO_CRM]).read_text(encoding="utf-8"))
    one_way = yaml.safe_load(Path(examples[ORDERS_FROM]).read_text(encoding="utf-8"))
    spec["source"]["streams"] = ["customers", "products", "orders"]
    spec["objects"] += [o for o in one_way["objects"] if o["name"] in ORDER_OBJECTS]
    path = folder / "shopify-salesforce-realtime.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run_realtime(seconds: float, rate: float, on_line: Callable[[str], None] = lambda _: None) -> RealtimeReport:
    from ferry.sandbox.tls import ensure_tls
    from ferry.serve.service import ServeOptions, Service

    with tempfile.TemporaryDirectory(prefix="ferry-realtime-") as tmp_dir:
        world = _World(Path(tmp_dir))
        try:
            numbers = itertools.count(1)
            customers = [world.create_customer(next(numbers)) for _ in range(INITIAL_CUSTOMERS)]
            asyncio.run(Runner(world.to_crm, world.store).run())
            # Orders sell what the org has: the sandbox's catalog plants a product whose name is too long for
            # Product2.Name (a dead letter with its reason, as it should be; not what this demo measures).
            variants = world.org_variants()
            for k in range(INITIAL_ORDERS):
                world.create_order(customers[k % len(customers)], _pick(variants, k, 2), next(numbers))
            on_line(f"backfill: {INITIAL_CUSTOMERS} customers, {len(variants)} variants, {INITIAL_ORDERS} orders, "
                    "Shopify -> Salesforce, then Salesforce -> Shopify")
            asyncio.run(Runner(world.to_crm, world.store).run())
            asyncio.run(Runner(world.to_shop, world.store).run())
            # Some webhooks arrive twice (a sender's retry after a lost answer): ferry must keep one.
            world.shop_http.post("/__sandbox/webhooks/faults",
                                 json={"seed": 7, "rules": [{"kind": "duplicate", "rate": 0.2}]}).raise_for_status()
            tls = ensure_tls(world.tmp / "shop")  # the shop sandbox's CA signed it: its webhooks trust it
            service = Service([world.to_crm, world.to_shop], world.store, ServeOptions(
                host="127.0.0.1", port=0, tls_cert=tls.cert_file, tls_key=tls.key_file, window=0.05,
                schedules=False))
            serve = _ServeThread(service)
            try:
                on_line(f"ferry serve {service.url}: webhooks in from the shop, CDC from the org")
                _settle(world, QUIET_SECONDS, 60)
                changes = _drive(world, seconds, rate, numbers, on_line)
                _wait_visible(changes, 30.0)
                _settle(world, QUIET_SECONDS, 60)
                after = world.change_counts()
                time.sleep(QUIET_SECONDS)
                ping_pong = sum(world.change_counts()) - sum(after)
            finally:
                serve.stop()
            report = _report(world, service, changes, seconds, rate, ping_pong)
            on_line("checking: the org against a clean batch run of the final shop into an empty org")
            report.batch_check = compare_with_clean_run(world.to_crm_file, world.env, world.org, world.tmp)
            return report
        finally:
            world.close()


@dataclass
class _Catalog:
    """What the changes pick from: customers the org has (by Shopify id -> Account Id), the shop's variants,
    the orders placed during the stream."""

    synced: list[int]
    accounts: dict[str, str]
    variants: list[int]
    orders: list[int] = field(default_factory=list)


def _drive(world: _World, seconds: float, rate: float, numbers: itertools.count[int],
           on_line: Callable[[str], None]) -> list[Change]:
    """Changes at ``rate`` a second for ``seconds`` (``_changes``: customers, orders, descriptions in the org)."""
    synced = sorted(int(c["id"]) for c in world.customers())
    catalog = _Catalog(synced, {str(a["Shopify_Customer_Id__c"]): str(a["Id"]) for a in world.accounts()},
                       world.org_variants())
    changes: list[Change] = []
    pending: dict[str, list[Change]] = {}
    watcher = _Watcher(world, changes)
    watcher.start()
    started = time.monotonic()
    for i in itertools.count():
        due = started + i / rate
        if due - started >= seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        for change in _changes(world, i, next(numbers), catalog):
            for earlier in pending.get(change.target, []):
                # Latest wins: once the later value is made, the earlier can no longer be seen; the later one's
                # latency counts, and a later value that never arrives counts as lost.
                if earlier.seen_at is None:
                    earlier.superseded = True
            pending[change.target] = [change]
            changes.append(change)
        if i and i % max(1, int(rate)) == 0:
            on_line(f"  {len(changes)} changes made, {sum(1 for c in changes if c.seen_at)} visible in the other side")
    watcher.stop_after_all_seen = True
    return changes


def _changes(world: _World, i: int, n: int, cat: _Catalog) -> list[Change]:
    """The i-th step, one of six in turn: a new customer with a first order placed at once (the org has neither:
    the order's customer must be written first), a phone edited, an Account description edited in the CRM, an
    order by a known customer, an order's note edited, another description edited. (No guest checkouts: their
    Accounts, keyed ``guest:<email>``, would travel back to the shop through the two-way direction.)"""
    step = i % 6
    if step == 0:
        new = world.create_customer(n)
        made = time.time()
        order, lines = world.create_order(new, _pick(cat.variants, n, 2), n)
        cat.orders.append(order)
        return [Change("shopify->salesforce", "create", made, lambda snap: str(new) in snap.accounts,
                       target=f"new {new}"),
                _order_created(order, lines)]
    if step == 1:
        cid, phone = cat.synced[n % len(cat.synced)], f"+1613{n:07d}"
        world.edit_phone(cid, phone)
        return [Change("shopify->salesforce", "update", time.time(),
                       lambda snap: snap.accounts.get(str(cid), {}).get("Phone") == phone, target=f"phone {cid}")]
    if step == 3 or (step == 4 and not cat.orders):
        order, lines = world.create_order(cat.synced[(n * 3) % len(cat.synced)], _pick(cat.variants, n, 3), n)
        cat.orders.append(order)
        return [_order_created(order, lines)]
    if step == 4:
        oid, note = cat.orders[n % len(cat.orders)], f"gift wrap {n}"
        world.edit_order_note(oid, note)
        return [Change("shopify->salesforce", "update", time.time(),
                       lambda snap: snap.orders.get(str(oid), {}).get("Description") == note,
                       target=f"order note {oid}", resource="orders")]
    target = cat.synced[(n * 7) % len(cat.synced)]
    note = f"rep note {n}"
    world.edit_description(cat.accounts[str(target)], note)
    return [Change("salesforce->shopify", "update", time.time(),
                   lambda snap: snap.customers.get(target, {}).get("note") == note, target=f"note {target}")]


def _order_created(order: int, lines: int) -> Change:
    """A new order is visible once the org has the Order with every one of its OrderItems."""
    return Change("shopify->salesforce", "create", time.time(), lambda snap: snap.order_complete(order, lines),
                  target=f"order {order}", resource="orders")


def _pick(variants: list[int], n: int, most: int) -> list[int]:
    """1..``most`` distinct variants, the same for the same ``n``."""
    chooser = random.Random(n)
    return chooser.sample(variants, chooser.randint(1, min(most, len(variants))))


class _Watcher(threading.Thread):
    """Marks each change visible the moment the other side shows it (polls the sandboxes every 10 ms)."""

    def __init__(self, world: _World, changes: list[Change]) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.changes = changes
        self.stop_after_all_seen = False
        self.halt = False

    def run(self) -> None:
        while not self.halt:
            pending = [c for c in list(self.changes) if c.seen_at is None and not c.superseded]
            if not pending and self.stop_after_all_seen:
                return
            if pending:
                snap, now = self.world.snapshot(), time.time()  # one look at both sides for every pending change
                for change in pending:
                    if change.visible(snap):
                        change.seen_at = now
            time.sleep(0.01)


def _wait_visible(changes: list[Change], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(c.seen_at is None and not c.superseded for c in changes):
        time.sleep(0.05)


def _settle(world: _World, quiet: float, timeout: float) -> tuple[int, int]:
    """Wait until ferry has nothing staged or queued and neither side changed for ``quiet`` seconds. Changes
    after that are ferry reacting to its own writes (ping-pong), not a backlog still draining: a sink paced by
    its API budget (Shopify's points) can pause for seconds between writes of work it already has."""
    deadline = time.monotonic() + timeout
    last, since = world.change_counts(""), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = world.change_counts("")
        if now != last or not world.idle():
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def _report(world: _World, service: Any, changes: list[Change], seconds: float, rate: float,
            ping_pong: int) -> RealtimeReport:
    report = RealtimeReport(seconds=seconds, rate=rate, ping_pong=ping_pong)
    report.changes = dict(Counter(f"{c.direction} {c.resource} {c.kind}" for c in changes))
    inbox = next(iter(service.state.inboxes.values()))
    feed = next(p.feed for p in service.pipelines if p.feed is not None)
    # What ferry took in, per direction and source resource: the shop's webhooks by stream, the org's change feed.
    received: dict[str, dict[str, dict[str, int]]] = {
        "shopify->salesforce": {r: dict(inbox.stream_counts.get(r, {})) for r in ("customers", "orders")},
                "salesforce->shopify": {"customers": {"staged": int(feed.records)}}}
    duplicated = _duplicated(world)
    for direction, spec in (("shopify->salesforce", world.to_crm), ("salesforce->shopify", world.to_shop)):
        written = _written_by_object(world.store, spec.name)
        mine = [c for c in changes if c.direction == direction]
        objects = {resource: _figures(
            [c for c in mine if c.resource == resource], received[direction].get(resource, {}),
            {o: written.get(o, {}) for o in RESOURCE_OBJECTS[direction][resource]},
            duplicated.get(direction, {}).get(resource, 0),
        ) for resource in received[direction]}
        totals = _figures(mine, _summed(received[direction].values()), written,
                          sum(duplicated.get(direction, {}).values()))
        report.directions[direction] = {"pipeline": spec.name, **totals, "objects": objects,
                                        **_run_totals(world.store, spec.name)}
    report.lost = sum(1 for c in changes if c.seen_at is None and not c.superseded)
    report.duplicated = sum(v for d in duplicated.values() for v in d.values())
    for spec in (world.to_crm, world.to_shop):
        for obj, count in world.store.count_dead_letters(spec.name).items():
            if count:
                report.dead_letters[f"{spec.name}/{obj}"] = int(count)
    return report


def _figures(changes: list[Change], received: dict[str, int], written: dict[str, dict[str, int]],
             duplicated: int) -> dict[str, Any]:
    """One row of the report: a direction, or one source resource in it."""
    latencies = [c.seen_at - c.made_at for c in changes if c.seen_at is not None and not c.superseded]
    return {
        "changes": len(changes),
        "events_received": int(received.get("staged", 0)),
        "written": sum(w.get("written", 0) for w in written.values()),
        "written_by_object": {o: w.get("written", 0) for o, w in written.items() if w.get("written", 0)},
        "duplicates_suppressed": int(received.get("duplicate", 0)),
        "echoes_suppressed": sum(w.get("echoes", 0) for w in written.values()),
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                       "p99": _percentile(latencies, 99), "max": _percentile(latencies, 100)},
        "superseded": sum(1 for c in changes if c.superseded),
        "lost": sum(1 for c in changes if c.seen_at is None and not c.superseded),
        "duplicated": duplicated,
    }


def _summed(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for c in counts:
        out.update(c)
    return dict(out)


def _duplicated(world: _World) -> dict[str, dict[str, int]]:
    """Records that exist more than once, by what identifies them: per direction and source resource."""
    def extra(values: Iterable[Any]) -> int:
        return sum(n - 1 for n in Counter(str(v) for v in values).values() if n > 1)

    in_org = {
        "customers": extra(a.get("Shopify_Customer_Id__c") for a in world.accounts())
        + extra(c.get("Shopify_Customer_Id__c") for c in world.org_rows("Contact")),
        "orders": extra(o.get("Shopify_Order_Id__c") for o in world.org_rows("Order"))
        + extra(i.get("Shopify_Line_Item_Id__c") for i in world.org_rows("OrderItem")),
    }
    return {"shopify->salesforce": in_org,
            "salesforce->shopify": {"customers": extra(c.get("email") for c in world.customers())}}


def _written_by_object(store: Store, pipeline: str) -> dict[str, dict[str, int]]:
    """Per target object: records written and echoes suppressed by ``ferry serve``'s micro-batches (runs of
    origin webhook)."""
    out: dict[str, dict[str, int]] = {}
    for run in store.list_runs(pipeline, 100_000):
        if run.origin != "webhook":
            continue
        for obj, figures in (run.stats.get("objects") or {}).items():
            mine = out.setdefault(obj, {"written": 0, "echoes": 0})
            mine["written"] += int(figures.get("written", 0))
            mine["echoes"] += int(figures.get("echoes", 0))
    return out


def _run_totals(store: Store, pipeline: str) -> dict[str, Any]:
    """Over ``ferry serve``'s micro-batches: how many, the records fetched because an event referred to them and
    the target lacked them (a new customer's first order; engine/parents.py) per source stream, and the wall
    seconds per phase (where the time went)."""
    fetched: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    runs = [r for r in store.list_runs(pipeline, 100_000) if r.origin == "webhook"]
    for run in runs:
        fetched.update({k: int(v) for k, v in (run.stats.get("parents_fetched") or {}).items()})
        phases.update({k: float(v) for k, v in (run.stats.get("wall_seconds") or {}).items()})
    return {"micro_batches": len(runs), "parents_fetched": dict(fetched),
            "phase_seconds": {k: round(v, 2) for k, v in phases.most_common(8)}}


def render(figures: dict[str, Any]) -> list[str]:
    """The report as text lines (``ferry demo realtime`` without --json)."""
    lines = []
    for direction, d in figures["directions"].items():
        for name, row in [("all", d), *d["objects"].items()]:
            lat = row["latency_ms"]
            lines.append(
                f"{direction:<20} {name:<9} changes {row['changes']:>4}  events in {row['events_received']:>4}  "
                f"written {row['written']:>4}  dup. suppressed {row['duplicates_suppressed']:>3}  echoes "
                f"{row['echoes_suppressed']:>3}  lost {row['lost']}  duplicated {row['duplicated']}  "
                f"p50 {lat['p50']} ms  p95 {lat['p95']} ms  p99 {lat['p99']} ms")
    check = figures["equals_clean_batch_run"]
    lines.append(f"lost {figures['lost']}  duplicated {figures['duplicated']}  ping-pong writes {figures['ping_pong']}"
                 f"  dead letters {sum(figures['dead_letters'].values())}")
    lines.append(f"org equals a clean batch run of the final shop: {check.get('equal')} "
                 f"({check.get('differences')} differences; records {check.get('records')})")
    lines.extend(f"  differs: {diff}" for diff in check.get("listed", []))
    return lines


class _ServeThread:
    """``ferry serve`` (the Service) on its own thread and event loop."""

    def __init__(self, service: Any) -> None:
        self.service = service
        ready = threading.Event()
        self.box: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.box["loop"] = loop
            try:
                self.box["code"] = loop.run_until_complete(service.run(on_ready=lambda _: ready.set()))
            except BaseException as exc:  # surfaced below
                self.box["error"] = exc
                ready.set()
            finally:
                loop.close()

        self.thread = threading.Thread(target=run, name="ferry-serve", daemon=True)
        self.thread.start()
        if not ready.wait(60) or "error" in self.box:
            raise RuntimeError(f"ferry serve did not start: {self.box.get('error')}")

    def stop(self) -> None:
        self.box["loop"].call_soon_threadsafe(self.service.request_stop)
        self.thread.join(60)
