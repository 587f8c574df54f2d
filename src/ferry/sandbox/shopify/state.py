"""The live state behind a sandbox: indexed tables over the store, the write clock, id sequences."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from ferry.sandbox.shopify.ids import ID_BASES, IdSequence
from ferry.sandbox.shopify.orders import OrderBuilder
from ferry.sandbox.shopify.store import RESOURCES, Record, Store
from ferry.sandbox.shopify.subscriptions import Subscriptions
from ferry.sandbox.shopify.tables import Table
from ferry.sandbox.shopify.times import EPOCH_END, fmt_shop


class WriteClock:
    """The "now" stamped on writes, by one of two rules.

    By default: the wall clock, but always at least one second after the newest updated_at in the store and
    after the previous write. Always newer than every stored version; and, like Shopify's, never behind the
    time the store tells clients (its Date header), so a client that bounds an incremental read by the store's
    clock sees every write made while it read. While the generated data is dated after the wall clock, writes
    are stamped deterministically (+1 s each). A burst of writes runs this clock ahead of the wall clock (a
    second per write), which Shopify's does not. The WooCommerce sandbox uses this rule.

    ``same_second`` (the Shopify sandbox's): Shopify's own rule instead: a write is stamped with the wall
    clock's second, so writes within one second share their updated_at (never behind the previous write or the
    newest stored one).
    """

    def __init__(self, newest: int, wall: Callable[[], float] = time.time, *, same_second: bool = False) -> None:
        self._last = max(newest, EPOCH_END)
        self._wall = wall
        self._step = 0 if same_second else 1

    def tick(self) -> int:
        self._last = max(self._last + self._step, int(self._wall()))
        return self._last

    def now_text(self) -> str:
        return fmt_shop(self.tick())


class ShopState:
    def __init__(self, store: Store, *, seed: int, shop: str, same_second_writes: bool = True) -> None:
        self.store = store
        self.shop = shop
        self.tables = {name: Table(name, store.records(name)) for name in RESOURCES}
        self.clock = WriteClock(max(t.max_updated() for t in self.tables.values()), same_second=same_second_writes)
        # A separate stream from the generator's, so writes never disturb a regenerated store.
        self._rnd = random.Random(f"sandbox-writes-{seed}")
        self._ids: dict[str, IdSequence] | None = None
        self._builder: OrderBuilder | None = None
        # Webhook subscriptions, shared by REST webhooks.json and GraphQL webhookSubscription*.
        self.subscriptions = Subscriptions(IdSequence(random.Random(f"webhooks-{seed}"), 1_460_000_000_000))
        # Called after every write through the API: (resource, "create" | "update" | "delete", record).
        self.listeners: list[Callable[[str, str, Record], None]] = []

    def changed(self, resource: str, event: str, rec: Record) -> None:
        for listener in self.listeners:
            listener(resource, event, rec)

    def table(self, resource: str) -> Table:
        return self.tables[resource]

    @property
    def ids(self) -> dict[str, IdSequence]:
        """Id sequences for new records, starting above every id already in the store."""
        if self._ids is None:
            highest = dict.fromkeys(ID_BASES, 0)
            for kind, resource in (("customer", "customers"), ("product", "products"), ("order", "orders")):
                highest[kind] = self.tables[resource].max_id()
            for rec in self.store.customers:
                for addr in rec.get("addresses") or ():
                    highest["address"] = max(highest["address"], _int(addr.get("id")))
            for rec in self.store.products:
                for v in rec.get("variants") or ():
                    highest["variant"] = max(highest["variant"], _int(v.get("id")))
                    highest["inventory_item"] = max(highest["inventory_item"], _int(v.get("inventory_item_id")))
            for rec in self.store.orders:
                self._scan_order_ids(rec, highest)
            self._ids = {k: IdSequence(self._rnd, max(base, highest[k])) for k, base in ID_BASES.items()}
        return self._ids

    @staticmethod
    def _scan_order_ids(rec: Record, highest: dict[str, int]) -> None:
        for li in rec.get("line_items") or ():
            highest["line_item"] = max(highest["line_item"], _int(li.get("id")))
        for sl in rec.get("shipping_lines") or ():
            highest["shipping_line"] = max(highest["shipping_line"], _int(sl.get("id")))
        for f in rec.get("fulfillments") or ():
            highest["fulfillment"] = max(highest["fulfillment"], _int(f.get("id")))
        for r in rec.get("refunds") or ():
            highest["refund"] = max(highest["refund"], _int(r.get("id")))
            for t in r.get("transactions") or ():
                highest["transaction"] = max(highest["transaction"], _int(t.get("id")))
            for rli in r.get("refund_line_items") or ():
                highest["refund_line_item"] = max(highest["refund_line_item"], _int(rli.get("id")))

    @property
    def builder(self) -> OrderBuilder:
        if self._builder is None:
            self._builder = OrderBuilder(self._rnd, self.ids, self.shop)
        return self._builder

    def random(self) -> float:
        return self._rnd.random()


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
