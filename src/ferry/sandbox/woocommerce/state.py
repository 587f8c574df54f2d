"""The live state behind a sandbox: records by id, the write clock, the id sequences."""

from __future__ import annotations

from collections.abc import Callable

# The Shopify sandbox's write clock: never behind the wall clock, always after the newest stored change.
from ferry.sandbox.shopify.state import WriteClock
from ferry.sandbox.woocommerce.store import CHILDREN, TOP_LEVEL, Record, Store
from ferry.sandbox.woocommerce.times import StoreTime, parse_gmt


class StoreState:
    """Indexes over a ``Store`` that writes keep in step with its lists (the lists are what is served)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.st = StoreTime(store.timezone)
        self.by_id: dict[str, dict[int, Record]] = {name: {r["id"]: r for r in store.top(name)} for name in TOP_LEVEL}
        for child in CHILDREN:
            self.by_id[child] = {r["id"]: r for rs in store.children(child).values() for r in rs}
        self.parent_of: dict[str, dict[int, int]] = {
            child: {r["id"]: pid for pid, rs in store.children(child).items() for r in rs} for child in CHILDREN}
        newest = max((parse_gmt(r["date_modified_gmt"]) for name in ("customers", "products", "orders", "coupons",
                                                                    "variations")
                      for r in self.by_id[name].values() if r.get("date_modified_gmt")), default=0)
        self.clock = WriteClock(newest)
        posts = [i for name in ("products", "orders", "coupons", *CHILDREN) for i in self.by_id[name]]
        self._next_post = max(posts, default=10)
        self._next_user = max(self.by_id["customers"], default=1)
        self._next_item = max((li["id"] for o in store.orders for li in o.get("line_items", [])), default=0) + 1000
        self._next_meta = 10_000_000
        # Called after every change a WooCommerce hook would announce: (resource, "created" | "updated" |
        # "deleted", record); the webhooks listen here.
        self.listeners: list[Callable[[str, str, Record], None]] = []

    def changed(self, resource: str, event: str, record: Record) -> None:
        for listener in self.listeners:
            listener(resource, event, record)

    def post_id(self) -> int:
        self._next_post += 1
        return self._next_post

    def user_id(self) -> int:
        self._next_user += 1
        return self._next_user

    def item_id(self) -> int:
        self._next_item += 1
        return self._next_item

    def meta_id(self) -> int:
        self._next_meta += 1
        return self._next_meta

    def records(self, resource: str, parent: int | None = None) -> list[Record]:
        """A resource's records in storage (id) order; for a child resource, those of one parent."""
        if resource in CHILDREN:
            if parent is None:
                return [r for rs in self.store.children(resource).values() for r in rs]
            return self.store.children(resource).get(parent, [])
        return self.store.top(resource)

    def get(self, resource: str, rid: int) -> Record | None:
        return self.by_id[resource].get(rid)

    def add(self, resource: str, record: Record, parent: int | None = None) -> None:
        self.by_id[resource][record["id"]] = record
        if resource in CHILDREN:
            assert parent is not None
            self.store.children(resource).setdefault(parent, []).append(record)
            self.parent_of[resource][record["id"]] = parent
        else:
            self.store.top(resource).append(record)

    def remove(self, resource: str, rid: int) -> None:
        record = self.by_id[resource].pop(rid)
        if resource in CHILDREN:
            parent = self.parent_of[resource].pop(rid)
            self.store.children(resource)[parent].remove(record)
        else:
            self.store.top(resource).remove(record)

    def stamp(self, record: Record) -> int:
        """Bump ``date_modified``/``date_modified_gmt`` as a save does; returns the new epoch."""
        now = self.clock.tick()
        record["date_modified"], record["date_modified_gmt"] = self.st.pair(now)
        return now
