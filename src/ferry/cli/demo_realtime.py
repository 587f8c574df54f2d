"""``ferry demo realtime``: a two-way sync running live between a Shopify and a Salesforce sandbox.

Both sandboxes run on 127.0.0.1 over HTTPS; ``ferry serve`` runs the two example pipelines
(examples/shopify-salesforce-bidirectional.yml and salesforce-shopify-bidirectional.yml) after a backfill each
way: the shop's webhooks in one way, Salesforce Change Data Capture the other. At a steady rate the demo then
creates customers and edits their phones in the shop (the sandbox delivers signed webhooks, some of them twice:
a duplicate fault) and edits Accounts' descriptions in Salesforce as a sales rep would. It measures each
change's end-to-end latency (the source's API answered -> the change visible in the other system), and at the
end checks against the sandboxes themselves: every change arrived (lost), no record exists twice (duplicated),
and once the stream stops neither side keeps changing (ping-pong).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ferry.cli.demo import salesforce_env, shopify_env
from ferry.engine.pipeline import PipelineSpec, load_pipeline, packaged_examples
from ferry.engine.runner import Runner
from ferry.store import Store

API = "/admin/api/2025-07"
SHOP_TO_CRM = "shopify-salesforce-bidirectional"
CRM_TO_SHOP = "salesforce-shopify-bidirectional"
INITIAL_CUSTOMERS = 20
QUIET_SECONDS = 3.0  # after the stream: no change on either side for this long = settled; then one more window


@dataclass
class Snapshot:
    """Both sides at one moment: Accounts by the Shopify customer id they carry, shop customers by id."""

    accounts: dict[str, dict[str, Any]]
    customers: dict[int, dict[str, Any]]


@dataclass
class Change:
    direction: str  # "shopify->salesforce" | "salesforce->shopify"
    kind: str
    made_at: float
    visible: Callable[[Snapshot], bool]
    seen_at: float | None = None
    target: str = ""  # the record and field changed: a later change of the same one supersedes this one
    superseded: bool = False  # a later change of the same field was made before this one was seen


@dataclass
class RealtimeReport:
    seconds: float
    rate: float
    changes: dict[str, int] = field(default_factory=dict)
    directions: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    ping_pong: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "rate": self.rate, "changes": self.changes, "directions": self.directions,
                "lost": self.lost, "duplicated": self.duplicated, "ping_pong": self.ping_pong,
                "ok": self.lost == 0 and self.duplicated == 0 and self.ping_pong == 0}


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
        self.shop = ShopifySandbox(tmp / "shop", seed=1, customers=0, products=1, orders=0,
                                   bucket_size=100_000, leak_rate=100_000.0, webhook_time_scale=0.001)
        self.org = SalesforceSandbox(tmp / "org")
        self.shop_run = start_in_thread(self.shop.app, tmp / "shop")
        self.org_run = start_in_thread(self.org.app, tmp / "org")
        shop_info = {**self.shop.credentials(self.shop_run.url), "ca_file": str(self.shop_run.ca_file),
                     "webhook_secret": self.shop.webhook_secret}
        org_info = {**self.org.credentials(self.org_run.url), "ca_file": str(self.org_run.ca_file)}
        env = {**shopify_env(shop_info), **salesforce_env(org_info)}
        self.to_crm = load_pipeline(packaged_examples()[SHOP_TO_CRM], env)
        self.to_shop = load_pipeline(packaged_examples()[CRM_TO_SHOP], env)
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

    def accounts(self) -> list[dict[str, Any]]:
        for _ in range(5):
            try:
                return list(dict(self.org.state.store.table("Account").rows).values())
            except RuntimeError:  # the org's thread changed the table while it was copied
                continue
        return []

    def snapshot(self) -> Snapshot:
        return Snapshot({str(a.get("Shopify_Customer_Id__c")): a for a in self.accounts()},
                        {int(c["id"]): c for c in self.customers()})

    def idle(self) -> bool:
        """Nothing staged and not yet planned, nothing queued to write, in either direction."""
        from ferry.engine.runner import PLANNED_MARK

        return all(self.store.staged_count(s.name, self.store.get_mark(s.name, PLANNED_MARK)) == 0
                   and self.store.outbox_count(s.name) == 0 for s in (self.to_crm, self.to_shop))

    def change_counts(self) -> tuple[int, int]:
        """(customer changes the shop announced, Account change events the org published)."""
        shop = self.shop_http.get("/__sandbox/webhooks/deliveries").json()["deliveries"]
        return (sum(1 for d in shop if str(d.get("topic", "")).startswith("customers/") and not d.get("copy")),
                sum(1 for e in self.org.cdc.bus.events if e.entity == "Account"))

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

    def edit_description(self, account_id: str, text: str) -> None:
        self.org_http.patch(f"/services/data/v62.0/sobjects/Account/{account_id}",
                            json={"Description": text}).raise_for_status()


def run_realtime(seconds: float, rate: float, on_line: Callable[[str], None] = lambda _: None) -> RealtimeReport:
    from ferry.sandbox.tls import ensure_tls
    from ferry.serve.service import ServeOptions, Service

    with tempfile.TemporaryDirectory(prefix="ferry-realtime-") as tmp_dir:
        world = _World(Path(tmp_dir))
        try:
            numbers = itertools.count(1)
            for _ in range(INITIAL_CUSTOMERS):
                world.create_customer(next(numbers))
            on_line(f"backfill: {INITIAL_CUSTOMERS} customers, Shopify -> Salesforce, then Salesforce -> Shopify")
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
                after = _settle(world, QUIET_SECONDS, 60)
                time.sleep(QUIET_SECONDS)
                ping_pong = sum(world.change_counts()) - sum(after)
            finally:
                serve.stop()
            return _report(world, service, changes, seconds, rate, ping_pong)
        finally:
            world.close()


def _drive(world: _World, seconds: float, rate: float, numbers: itertools.count[int],
           on_line: Callable[[str], None]) -> list[Change]:
    """Changes at ``rate`` a second for ``seconds``: create a customer, edit a phone, edit a description."""
    synced = sorted(int(c["id"]) for c in world.customers())
    accounts = {str(a["Shopify_Customer_Id__c"]): str(a["Id"]) for a in world.accounts()}
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
        n = next(numbers)
        change = _one_change(world, i, n, synced, accounts)
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


def _one_change(world: _World, i: int, n: int, synced: list[int], accounts: dict[str, str]) -> Change:
    """The i-th change: a new customer, a phone edited in the shop, or a description edited in the CRM."""
    if i % 3 == 0:
        new = world.create_customer(n)
        return Change("shopify->salesforce", "create", time.time(), lambda snap: str(new) in snap.accounts,
                      target=f"new {new}")
    if i % 3 == 1:
        cid, phone = synced[n % len(synced)], f"+1613{n:07d}"
        world.edit_phone(cid, phone)
        return Change("shopify->salesforce", "update", time.time(),
                      lambda snap: snap.accounts.get(str(cid), {}).get("Phone") == phone, target=f"phone {cid}")
    target = synced[(n * 7) % len(synced)]
    note = f"rep note {n}"
    world.edit_description(accounts[str(target)], note)
    return Change("salesforce->shopify", "update", time.time(),
                  lambda snap: snap.customers.get(target, {}).get("note") == note, target=f"note {target}")


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
    last, since = world.change_counts(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = world.change_counts()
        if now != last or not world.idle():
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def _report(world: _World, service: Any, changes: list[Change], seconds: float, rate: float,
            ping_pong: int) -> RealtimeReport:
    report = RealtimeReport(seconds=seconds, rate=rate, ping_pong=ping_pong)
    report.changes = dict(Counter(f"{c.direction} {c.kind}" for c in changes))
    figures = _pipeline_figures(world.store, [world.to_crm, world.to_shop])
    inbox = next(iter(service.state.inboxes.values()))
    feed = next(p.feed for p in service.pipelines if p.feed is not None)
    received = {"shopify->salesforce": int(inbox.counts.get("staged", 0)),
                "salesforce->shopify": int(feed.records)}
    duplicates = {"shopify->salesforce": int(inbox.counts.get("duplicate", 0)), "salesforce->shopify": 0}
    for direction, spec in (("shopify->salesforce", world.to_crm), ("salesforce->shopify", world.to_shop)):
        mine = [c for c in changes if c.direction == direction]
        latencies = [c.seen_at - c.made_at for c in mine if c.seen_at is not None and not c.superseded]
        report.directions[direction] = {
            "pipeline": spec.name,
            "changes": len(mine),
            "events_received": received[direction],
            "written": figures[spec.name]["written"],
            "duplicates_suppressed": duplicates[direction],
            "echoes_suppressed": figures[spec.name]["echoes"],
            "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                           "p99": _percentile(latencies, 99), "max": _percentile(latencies, 100)},
            "superseded": sum(1 for c in mine if c.superseded),
            "lost": sum(1 for c in mine if c.seen_at is None and not c.superseded),
        }
    report.lost = sum(1 for c in changes if c.seen_at is None and not c.superseded)
    by_customer = Counter(str(a.get("Shopify_Customer_Id__c")) for a in world.accounts())
    by_email = Counter(str(c.get("email")) for c in world.customers())
    report.duplicated = sum(n - 1 for n in by_customer.values() if n > 1) + sum(n - 1 for n in by_email.values()
                                                                               if n > 1)
    return report


def _pipeline_figures(store: Store, specs: list[PipelineSpec]) -> dict[str, dict[str, int]]:
    """Written records and echoes suppressed by ``ferry serve``'s micro-batches (runs of origin webhook)."""
    out: dict[str, dict[str, int]] = {}
    for spec in specs:
        written = echoes = 0
        for run in store.list_runs(spec.name, 100_000):
            if run.origin != "webhook":
                continue
            for obj in (run.stats.get("objects") or {}).values():
                written += int(obj.get("written", 0))
                echoes += int(obj.get("echoes", 0))
        out[spec.name] = {"written": written, "echoes": echoes}
    return out


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
