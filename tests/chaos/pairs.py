"""The source side of each pair the chaos suite runs (Shopify -> Salesforce, WooCommerce -> Salesforce,
Shopify -> QuickBooks Online).

The harness (``harness.Chaos``) is the same for every pair: it spawns and kills ``ferry run``, injects the
target's faults and reconciles the org. A ``SourcePair`` says what differs per source: which example
pipeline, how its sandbox is built and what faults it injects, the environment the pipeline reads, how a
record is edited between lives, and how the org is reconciled against the source's final state.
"""

from __future__ import annotations

import copy
import random
import ssl
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from ferry.cli.demo import FLOWS
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.sandbox.woocommerce import WooCommerceSandbox
from ferry.store import DeadLetter
from tests.chaos.reconcile import Reconciliation, reconcile, reconcile_with_reference
from tests.e2e.test_sync_fidelity import EXTERNAL_ID as SHOPIFY_EXTERNAL_ID
from tests.e2e.test_sync_fidelity import derive
from tests.e2e.test_woocommerce_to_salesforce import EXTERNAL_ID as WOOCOMMERCE_EXTERNAL_ID
from tests.e2e.test_woocommerce_to_salesforce import expected_keys

if TYPE_CHECKING:
    from tests.chaos.harness import ChaosConfig, CleanRun

REPO = Path(__file__).resolve().parents[2]
SHOPIFY_API = "2025-07"


class SourcePair(ABC):
    """One source system feeding the Salesforce org: its sandbox, faults, edits and reconciliation."""

    name: str  # the prefix of its figures ("shopify:503", api_calls["shopify"])
    target = "salesforce"  # the harness: salesforce (harness.Chaos) or quickbooks (quickbooks.BooksChaos)
    example: Path
    external_id: dict[str, str]  # Salesforce object -> the external id field the pipeline upserts on
    # SQL over the ferry store's read_states: a stream read is under way (for the kill figures).
    reading_sql: str
    # The reconciliation compares with a clean run (``at_rest_copy`` is its source), started with the last life.
    judged_by_clean_run = False

    def __init__(self, tmp: Path, config: ChaosConfig) -> None:
        self.tmp = tmp
        self.config = config
        self.running: RunningSandbox | None = None

    @property
    @abstractmethod
    def sandbox(self) -> Any:
        """The source sandbox (``.app``, ``.faults``, ``.stats``)."""

    @abstractmethod
    def faults(self, seed: int) -> dict[str, Any]:
        """The fault configuration the source sandbox runs with (the ``/__sandbox/faults`` body)."""

    def at_rest_copy(self, tmp: Path) -> Any:
        """A fault-free sandbox serving a copy of the source as it is now (for a clean run)."""
        raise NotImplementedError(f"the {self.name} pair is not judged by a clean run")

    @abstractmethod
    def edit_people(self, n: int, rng: random.Random) -> set[str]:
        """Rename up to n valid customers (a new version while ferry runs); the keys that were edited."""

    @abstractmethod
    def touch_orders(self, n: int, rng: random.Random) -> None:
        """Change a note on n orders: new versions of Order and its OrderItems (enough to cross Bulk's threshold)."""

    @abstractmethod
    def reconcile(
        self,
        records: dict[str, list[dict[str, Any]]],
        letters: list[DeadLetter],
        edited: set[str],
        clean_run: CleanRun,
    ) -> Reconciliation:
        """The org (``records``) and the dead letters against the source's final state, record by record."""

    def start(self) -> RunningSandbox:
        self.running = start_in_thread(self.sandbox.app, self.tmp)
        return self.running

    def env(self, org: dict[str, str], source: tuple[Any, RunningSandbox] | None = None) -> dict[str, str]:
        """The environment the example pipeline reads, pointed at the org ``org`` and this source (or another
        sandbox of it: ``(sandbox, running)``)."""
        assert self.running
        sandbox, running = source or (self.sandbox, self.running)
        info = {**sandbox.credentials(running.url), "ca_file": str(running.ca_file)}
        return FLOWS[self.example.stem].env(info, org)

    def api_calls(self) -> int:
        return int(self.sandbox.stats.api_calls)

    def _client(self, timeout: float = 10) -> httpx.Client:
        assert self.running
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.running.ca_file)), timeout=timeout)


class ShopifyPair(SourcePair):
    """Shopify: edits go through the Admin REST API (its faults apply); the expected org is derived from raw JSON."""

    name = "shopify"
    example = REPO / "examples" / "shopify-to-salesforce.yml"
    external_id = SHOPIFY_EXTERNAL_ID
    reading_sql = "json_extract(state, '$.read') IS NOT NULL"  # the reader's progress, until its last page

    def __init__(self, tmp: Path, config: ChaosConfig) -> None:
        super().__init__(tmp, config)
        self.shop = ShopifySandbox(
            tmp, seed=config.seed, customers=config.customers, products=config.products, orders=config.orders
        )

    @property
    def sandbox(self) -> ShopifySandbox:
        return self.shop

    def faults(self, seed: int) -> dict[str, Any]:
        return {
            "seed": seed,
            "rules": [
                {"kind": "503", "rate": 0.05},
                {"kind": "reset", "rate": 0.02},
                {"kind": "timeout", "rate": 0.01, "hold_seconds": 3.0},
                {"kind": "429", "rate": 0.01, "burst": 5, "retry_after": 0.5},
            ],
        }

    def edit_people(self, n: int, rng: random.Random) -> set[str]:
        assert self.running
        exp = derive(self.shop.store)
        valid = sorted(
            k
            for k in exp.people
            if not k.startswith("guest:") and k not in exp.errors["Account"] and k not in exp.errors["Contact"]
        )
        edited: set[str] = set()
        with self._client() as client:
            for key in rng.sample(valid, min(n, len(valid))):
                name = f"Chaos{rng.randrange(10_000)}"
                for _ in range(10):  # the sandbox's own faults apply to us too
                    try:
                        resp = client.put(
                            f"{self.running.url}/admin/api/{SHOPIFY_API}/customers/{key}.json",
                            json={"customer": {"id": int(key), "first_name": name}},
                            headers={"X-Shopify-Access-Token": self.shop.access_token},
                        )
                    except httpx.TransportError:
                        continue
                    if resp.status_code == 200:
                        edited.add(key)
                        break
        return edited

    def at_rest_copy(self, tmp: Path) -> ShopifySandbox:
        return ShopifySandbox(tmp, store=copy.deepcopy(self.shop.store))

    def touch_orders(self, n: int, rng: random.Random) -> None:
        assert self.running
        ids = sorted(int(o["id"]) for o in self.shop.store.orders)
        with self._client() as client:
            for oid in rng.sample(ids, min(n, len(ids))):
                for _ in range(10):  # the sandbox's own faults apply to us too
                    try:
                        resp = client.put(
                            f"{self.running.url}/admin/api/{SHOPIFY_API}/orders/{oid}.json",
                            json={"order": {"id": oid, "note": f"chaos {rng.randrange(10_000)}"}},
                            headers={"X-Shopify-Access-Token": self.shop.access_token},
                        )
                    except httpx.TransportError:
                        continue
                    if resp.status_code == 200:
                        break

    def reconcile(
        self,
        records: dict[str, list[dict[str, Any]]],
        letters: list[DeadLetter],
        edited: set[str],
        clean_run: CleanRun,
    ) -> Reconciliation:
        # The fidelity test's independent derivation says where each record lands and with which reasons.
        return reconcile(derive(self.shop.store), records, letters, edited)


class WooCommercePair(SourcePair):
    """WooCommerce: edits are made server-side, as in wp-admin (``PATCH /__sandbox/records/{resource}/{id}``).

    The keys the org must hold are derived from the store's raw records (the e2e test's derivation); which
    records are invalid, and for what reasons, and what each written field holds, come from a clean run: a
    fault-free, never-killed ``ferry run`` of the same pipeline over the store's final state into a new org
    (from a copy of the store taken as the last life starts: no edit is made after that).
    """

    name = "woocommerce"
    example = REPO / "examples" / "woocommerce-to-salesforce.yml"
    external_id = WOOCOMMERCE_EXTERNAL_ID
    reading_sql = "json_extract(state, '$.offset') IS NOT NULL"  # a read under way, not yet its cursor alone
    judged_by_clean_run = True

    def __init__(self, tmp: Path, config: ChaosConfig) -> None:
        super().__init__(tmp, config)
        self.woo = WooCommerceSandbox(
            tmp, seed=config.seed, customers=config.customers, products=config.products, orders=config.orders
        )
        self.touched: set[int] = set()  # orders whose note was changed between lives

    @property
    def sandbox(self) -> WooCommerceSandbox:
        return self.woo

    def faults(self, seed: int) -> dict[str, Any]:
        # The host in front of PHP (nginx 502/503/504, a WAF's 429) and WordPress's fatal-error 500.
        return {
            "seed": seed,
            "rules": [
                {"kind": "503", "rate": 0.04},
                {"kind": "502", "rate": 0.01},
                {"kind": "500", "rate": 0.01},
                {"kind": "reset", "rate": 0.02},
                {"kind": "timeout", "rate": 0.01, "hold_seconds": 3.0},
                {"kind": "429", "rate": 0.01, "burst": 3, "retry_after": 0.5},
            ],
        }

    def at_rest_copy(self, tmp: Path) -> WooCommerceSandbox:
        return WooCommerceSandbox(tmp, store=copy.deepcopy(self.woo.store))

    def edit_people(self, n: int, rng: random.Random) -> set[str]:
        # Customers whose first name is plain and short: a rename never changes whether they are valid.
        named = sorted(
            str(c["id"])
            for c in self.woo.store.customers
            if c.get("role", "customer") == "customer" and 0 < len((c.get("first_name") or "").strip()) < 30
        )
        edited: set[str] = set()
        for key in rng.sample(named, min(n, len(named))):
            if self._admin_edit("customers", int(key), {"first_name": f"Chaos{rng.randrange(10_000)}"}):
                edited.add(key)
        return edited

    def touch_orders(self, n: int, rng: random.Random) -> None:
        ids = sorted(int(o["id"]) for o in self.woo.store.orders)
        for oid in rng.sample(ids, min(n, len(ids))):
            if self._admin_edit("orders", oid, {"customer_note": f"chaos {rng.randrange(10_000)}"}):
                self.touched.add(oid)

    def _admin_edit(self, resource: str, rid: int, body: dict[str, Any]) -> bool:
        """An edit made in wp-admin: no faults apply, ``date_modified`` is bumped."""
        assert self.running
        with self._client() as client:
            return client.patch(f"{self.running.url}/__sandbox/records/{resource}/{rid}", json=body).status_code == 200

    def final_state(self) -> dict[str, list[dict[str, Any]]]:
        """The store's records as stored now (outside the API: no faults), for the reconciliation."""
        assert self.running
        with self._client(timeout=60) as client:
            return {
                name: client.get(f"{self.running.url}/__sandbox/records/{name}").json()
                for name in ("customers", "products", "variations", "orders")
            }

    def reconcile(
        self,
        records: dict[str, list[dict[str, Any]]],
        letters: list[DeadLetter],
        edited: set[str],
        clean_run: CleanRun,
    ) -> Reconciliation:
        raw = self.final_state()
        keys = expected_keys(raw["customers"], raw["products"], raw["variations"], raw["orders"])
        spec = yaml.safe_load(self.example.read_text())
        fields = {o["name"]: list(o["fields"]) for o in spec["objects"]}
        # The source's own word on the edits: an edited customer's Contact holds its newest first name.
        customers = {str(c["id"]): c for c in raw["customers"]}
        newest = {"Contact": {k: {"FirstName": customers[k]["first_name"].strip()} for k in edited}}
        orders = [o for o in raw["orders"] if str(o["customer_id"]) in edited or o["id"] in self.touched]
        touched = {"Account": edited, "Contact": edited, "Order": {str(o["id"]) for o in orders},
                   "OrderItem": {str(li["id"]) for o in orders for li in o["line_items"]}}
        return reconcile_with_reference(
            keys, self.external_id, fields, records, letters, clean_run(), newest, touched
        )


class ShopifyToQuickBooksPair(ShopifyPair):
    """Shopify feeding a QuickBooks Online company (``tests/chaos/quickbooks.py``'s ``BooksChaos``, not the
    Salesforce harness): same shop, faults and edits as ``ShopifyPair``; judged by a clean run's books."""

    example = REPO / "examples" / "shopify-to-quickbooks.yml"
    judged_by_clean_run = True
    target = "quickbooks"

    def at_rest_copy(self, tmp: Path) -> ShopifySandbox:
        return ShopifySandbox(tmp, store=copy.deepcopy(self.shop.store))

    def reconcile(
        self,
        records: dict[str, list[dict[str, Any]]],
        letters: list[DeadLetter],
        edited: set[str],
        clean_run: CleanRun,
    ) -> Reconciliation:
        raise NotImplementedError("the books are reconciled by tests.chaos.quickbooks.reconcile_books")


PAIRS: dict[str, type[SourcePair]] = {
    "shopify": ShopifyPair,
    "woocommerce": WooCommercePair,
    "shopify-to-quickbooks": ShopifyToQuickBooksPair,
}
