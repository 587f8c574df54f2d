"""A seeded generator of a realistic, messy Shopify store.

Same seed and sizes give a byte-identical store: all randomness comes from one
``random.Random(seed)`` and all times from a fixed epoch (records are created
between 2026-01-01 and 2026-10-31; later events such as refunds and edits may
land a few weeks after that). Nothing reads the wall clock.

Each kind of messiness appears at a small, realistic rate, and at least once
whenever the store has records of that kind. ``Store.anomalies`` records them,
keyed ``"<kind>:<id>"``, with these tags:

customer
    ``email_missing``, ``email_malformed`` (``"jane.doe@"``, ``"bob@@example.com"``...),
    ``email_shared`` (two customers, same address), ``email_mixed_case``,
    ``phone_malformed`` (``"call me"``...), ``name_missing`` (no first and no last name),
    ``first_name_too_long`` (> 40), ``last_name_too_long`` (> 80), ``city_too_long`` (> 40),
    ``zip_too_long`` (> 20), ``no_address``, ``note_emoji``, ``script_<name>`` for names not in
    plain ASCII Latin (latin_diacritics, cyrillic, greek, cjk, arabic, hebrew, devanagari, thai),
    ``repeat_customer`` (2+ orders), ``updated_at_shared``.
product
    ``draft``, ``archived``, ``title_too_long`` (> 255), ``title_non_latin``, ``updated_at_shared``.
variant
    ``sku_missing`` (null or ``""``), ``sku_duplicate`` (same SKU as a variant of another product).
order
    ``guest_checkout`` (``customer: null``, email on the order), ``guest_no_email`` (neither),
    ``cancelled``, ``refunded``, ``partially_refunded``, ``pending``, ``authorized``,
    ``edited_after_creation`` (updated_at hours to weeks after created_at), ``foreign_currency``
    (presentment currency other than USD), ``note_emoji``, ``note_too_long`` (> 32,000 chars),
    ``city_too_long``, ``zip_too_long`` (copied from the customer's address), ``updated_at_shared``
    (same updated_at instant as at least one other order; there is always a block of consecutive
    ids and a scattered group sharing one, so the collision crosses page boundaries).
line_item
    ``custom_item_no_variant`` (``variant_id`` and ``product_id`` null), ``variant_deleted``
    (``variant_id`` null), ``product_deleted`` (both null, ``product_exists: false``),
    ``title_too_long`` (> 255).
"""

from __future__ import annotations

import bisect
import gc
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ferry.sandbox.shopify import pools
from ferry.sandbox.shopify.compact import CompactRecords
from ferry.sandbox.shopify.ids import ID_BASES, IdSequence, gid
from ferry.sandbox.shopify.money import USD, Presentment, dec
from ferry.sandbox.shopify.orders import Lifecycle, LineSpec, OrderBuilder, OrderInput
from ferry.sandbox.shopify.store import RESOURCES, Record, Store
from ferry.sandbox.shopify.times import EPOCH_END, EPOCH_START, fmt, fmt_local, shop_offset

DAY = 86_400
# Offsets other than the shop's own zone, for the share of timestamps written elsewhere.
_OTHER_OFFSETS = (0, 60, 120, 330, 540, -420, -210, 600)
_PRESENTMENTS = tuple(Presentment(code, rate, digits) for code, rate, digits in pools.CURRENCIES)
# Lines per order: mean 2.25, a long-ish tail (bundles, multi-size fitting orders).
_LINE_COUNTS = (1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5)
_QUANTITIES = (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 4, 5)


def generate_store(seed: int = 7, customers: int = 1000, products: int = 200, orders: int = 2000,
                   *, shop: str = "ferry-demo") -> Store:
    """Generate a messy store; deterministic in all arguments."""
    for name, n in (("customers", customers), ("products", products), ("orders", orders)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    # Building a store allocates millions of small dicts and no cycles; the cyclic GC would
    # rescan them over and over (nearly halving the speed of a 100,000-order build).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Generator(seed, shop).run(customers, products, orders)
    finally:
        if was_enabled:
            gc.enable()


def shard_sizes(customers: int, products: int, orders: int, shard_orders: int) -> list[tuple[int, int, int]]:
    """(customers, products, orders) of each shard: as many shards as ``shard_orders`` needs, sizes split evenly."""
    if shard_orders < 1:
        raise ValueError(f"shard_orders must be >= 1, got {shard_orders}")
    n = max(1, -(-orders // shard_orders))
    return [tuple(total * (k + 1) // n - total * k // n for total in (customers, products, orders))  # type: ignore[misc]
            for k in range(n)]


def generate_shards(seed: int = 7, customers: int = 1000, products: int = 200, orders: int = 2000, *,
                    shard_orders: int, shop: str = "ferry-demo") -> Iterator[Store]:
    """A large store as a run of independent shards, one at a time (bounded memory); deterministic.

    Shard 0 is exactly ``generate_store(seed, ...)`` of its sizes, so a store no bigger than one shard is
    the ordinary store. Each later shard draws from its own seed (``"<seed>/shard-<k>"``), continues every
    id sequence above the previous shard's and numbers emails and order names after it, so ids, order
    names and guest emails stay unique store-wide. Orders only reference customers and products of their
    own shard, and the whole-store passes (shared updated_at groups, customers' order totals) run within
    a shard: the data differ from ``generate_store`` of the full size, which is why this mode is opt-in.
    """
    for name, n in (("customers", customers), ("products", products), ("orders", orders)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    starts = dict(ID_BASES)
    c_off = o_off = 0
    for k, (n_c, n_p, n_o) in enumerate(shard_sizes(customers, products, orders, shard_orders)):
        g = _Generator(seed if k == 0 else f"{seed}/shard-{k}", shop, id_starts=starts,
                       customer_offset=c_off, order_offset=o_off)
        was_enabled = gc.isenabled()
        gc.disable()  # as in generate_store
        try:
            store = g.run(n_c, n_p, n_o)
        finally:
            if was_enabled:
                gc.enable()
        yield store
        starts = {kind: seq.last for kind, seq in g.ids.items()}
        c_off += n_c
        o_off += n_o


def generate_compact_store(seed: int = 7, customers: int = 1000, products: int = 200, orders: int = 2000, *,
                           shard_orders: int = 100_000, shop: str = "ferry-demo",
                           spill_dir: Path | None = None) -> Store:
    """``generate_shards`` packed into ``CompactRecords`` shard by shard: memory ~ the compressed store
    (or, with ``spill_dir``, a file there) plus one shard's dicts."""
    out = Store(**{name: CompactRecords(spill_dir=spill_dir) for name in RESOURCES})  # type: ignore[arg-type]
    for shard in generate_shards(seed, customers, products, orders, shard_orders=shard_orders, shop=shop):
        for name in RESOURCES:
            target = out.records(name)
            assert isinstance(target, CompactRecords)
            target.extend(sorted(shard.records(name), key=lambda r: r["id"]))
        out.anomalies.update(shard.anomalies)
        del shard
    return out


def _cumulative(weights: Sequence[int]) -> tuple[list[int], int]:
    cum = list(itertools.accumulate(weights))
    return cum, cum[-1] if cum else 0


class _Timeline:
    """Created/updated epochs and the offset each record is written in, kept beside the records."""

    def __init__(self, created: list[int], offsets: list[int]) -> None:
        self.created = created
        self.updated = list(created)
        self.offsets = offsets


class _Generator:
    def __init__(self, seed: int | str, shop: str, *, id_starts: dict[str, int] | None = None,
                 customer_offset: int = 0, order_offset: int = 0) -> None:
        self.rnd = random.Random(seed)
        self.shop = shop
        starts = id_starts or ID_BASES
        self.ids = {kind: IdSequence(self.rnd, starts[kind]) for kind in ID_BASES}
        # Numbers that must stay unique across the shards of one large store (emails, order numbers);
        # both are 0 for an ordinary store, which keeps its output unchanged.
        self.customer_offset = customer_offset
        self.order_offset = order_offset
        self.anomalies: dict[str, list[str]] = {}
        self.builder = OrderBuilder(self.rnd, self.ids, shop)
        self._script_cum, self._script_total = _cumulative([w for _, w in pools.SCRIPT_WEIGHTS])
        self._country_cum, self._country_total = _cumulative(pools.COUNTRY_WEIGHTS)

    # ------------------------------------------------------------------ helpers
    def tag(self, kind: str, ident: int, tag: str) -> None:
        self.anomalies.setdefault(f"{kind}:{ident}", []).append(tag)

    def assign(self, n: int, rates: dict[str, float]) -> dict[int, str]:
        """Pick disjoint record indices per category: ``round(n * rate)`` each, at least one while n allows.

        Exact counts from a sample (rather than a coin per record) guarantee every kind is present
        even in small stores, which the tests rely on.
        """
        counts = {name: max(1, round(n * rate)) for name, rate in rates.items()}
        chosen = self.rnd.sample(range(n), min(n, sum(counts.values()))) if n else []
        out: dict[int, str] = {}
        pos = 0
        for name, count in counts.items():
            for idx in chosen[pos:pos + count]:
                out[idx] = name
            pos += count
        return out

    def times(self, n: int, start: int, end: int) -> list[int]:
        span = end - start
        rnd = self.rnd.random
        return sorted(start + int(rnd() * span) for _ in range(n))

    def offset(self, epoch: int) -> int:
        r = self.rnd.random()
        if r < 0.85:
            return shop_offset(epoch)
        return _OTHER_OFFSETS[int((r - 0.85) / 0.15 * len(_OTHER_OFFSETS))]

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[int(self.rnd.random() * len(seq))]

    # ------------------------------------------------------------------ orchestration
    def run(self, n_customers: int, n_products: int, n_orders: int) -> Store:
        catalog = _Catalog(self, n_products)
        people = _People(self, n_customers)
        orders, order_times = _Orders(self, people, catalog).generate(n_orders)
        people.absorb_orders(orders)
        for kind, records, timeline in (("customer", people.records, people.timeline),
                                        ("product", catalog.records, catalog.timeline),
                                        ("order", orders, order_times)):
            self.share_updated_at(len(records), timeline)
            self.render_updated(kind, records, timeline)
        for snap, rec in zip(people.snapshots, people.records, strict=True):
            snap["updated_at"] = rec["updated_at"]
        return Store(customers=people.records, products=catalog.records, orders=orders, anomalies=self.anomalies)

    def share_updated_at(self, n: int, tl: _Timeline) -> None:
        """Make groups of records share one updated_at instant, as bulk edits and imports do.

        A block of consecutive ids crosses page boundaries in id order; a scattered group and
        random pairs hit every other filter. Incremental cursors must not skip any of them.
        """
        if n < 2:
            return
        size = min(max(2, n // 10), 260)
        start = int(self.rnd.random() * (n - size + 1))
        groups: list[Sequence[int]] = [self.rnd.sample(range(n), 2) for _ in range(n // 100)]
        groups.append(self.rnd.sample(range(n), min(n, max(2, n // 50))))
        groups.append(range(start, start + size))  # last, so no later group breaks the run of ids
        for group in groups:
            at = max(tl.updated[i] for i in group) + 1 + int(self.rnd.random() * 3600)
            off = shop_offset(at)
            for i in group:
                tl.updated[i] = at
                tl.offsets[i] = off

    def render_updated(self, kind: str, records: list[Record], tl: _Timeline) -> None:
        seen = Counter(tl.updated)
        for rec, at, off in zip(records, tl.updated, tl.offsets, strict=True):
            rec["updated_at"] = fmt_local(at, off)
            if seen[at] > 1:
                self.tag(kind, rec["id"], "updated_at_shared")

    def address(self, first: str | None, last: str | None, phone: str | None, *, long_city: bool = False,
                long_zip: bool = False) -> tuple[Record, int]:
        """A postal address (order shape, no ids) and the tax rate in basis points of its country."""
        ci = bisect.bisect_right(self._country_cum, int(self.rnd.random() * self._country_total))
        country, code, cities, _prefix, tax_bp = pools.COUNTRIES[ci]
        city, province, province_code, zip_code = self.pick(cities)
        if long_city:
            city = self.pick(pools.LONG_CITIES)
        if long_zip:
            zip_code = self.pick(pools.LONG_ZIPS)
        name = " ".join(p for p in (first, last) if p)
        return {
            "first_name": first, "address1": f"{1 + int(self.rnd.random() * 999)} {self.pick(pools.STREETS)}",
            "phone": phone, "city": city, "zip": zip_code, "province": province or None, "country": country,
            "last_name": last, "address2": "Apt 4" if self.rnd.random() < 0.2 else None,
            "company": "Acme Corp" if self.rnd.random() < 0.08 else None, "latitude": None, "longitude": None,
            "name": name or None, "country_code": code, "province_code": province_code or None,
        }, tax_bp

    def script_name(self) -> tuple[str, pools.NameEntry]:
        idx = bisect.bisect_right(self._script_cum, int(self.rnd.random() * self._script_total))
        script = pools.SCRIPT_WEIGHTS[idx][0]
        return script, self.pick(pools.NAMES[script])


class _People:
    """Customers, plus what orders need of them: creation times, order-embedded snapshots, addresses."""

    def __init__(self, g: _Generator, n: int) -> None:
        self.g = g
        created = g.times(n, EPOCH_START, EPOCH_END - 45 * DAY)
        if n >= 2:  # a CSV import: a run of consecutive customers created in the same second
            size = min(max(2, n // 20), 120)
            start = int(g.rnd.random() * (n - size + 1))
            created[start:start + size] = [created[start]] * size
        self.timeline = _Timeline(created, [g.offset(t) for t in created])
        self.records: list[Record] = []
        self.snapshots: list[Record] = []
        self.order_address: list[tuple[Record, int] | None] = []
        self._build(n)

    def _build(self, n: int) -> None:
        g = self.g
        kinds = [
            g.assign(n, {"email_missing": 0.03, "email_malformed": 0.02, "email_shared": 0.01,
                         "email_mixed_case": 0.02}),
            g.assign(n, {"phone_malformed": 0.02}),
            g.assign(n, {"name_missing": 0.015, "first_name_too_long": 0.005, "last_name_too_long": 0.005}),
            g.assign(n, {"city_too_long": 0.005, "zip_too_long": 0.005, "no_address": 0.05}),
            g.assign(n, {"note_emoji": 0.03}),
        ]
        for i in range(n):
            flags = {k for d in kinds if (k := d.get(i)) is not None}
            self._customer(i, flags)
        self._share_emails(kinds[0])

    def _customer(self, i: int, flags: set[str]) -> None:
        g, rnd = self.g, self.g.rnd
        cid = g.ids["customer"].next()
        script, (first, last, ascii_first, ascii_last) = g.script_name()
        if script != "latin":
            g.tag("customer", cid, f"script_{script}")
        first_name: str | None = first
        last_name: str | None = last
        if "name_missing" in flags:
            first_name = last_name = None
        elif "first_name_too_long" in flags:
            first_name = g.pick(pools.LONG_FIRST_NAMES)
        elif "last_name_too_long" in flags:
            last_name = g.pick(pools.LONG_LAST_NAMES)
        domain = g.pick(pools.EMAIL_DOMAINS)
        n = i + g.customer_offset
        email: str | None = f"{ascii_first}.{ascii_last}{n}@{domain}"
        if "email_missing" in flags:
            email = None
        elif "email_malformed" in flags:
            email = g.pick(pools.MALFORMED_EMAILS)
        elif "email_mixed_case" in flags:
            email = f"{ascii_first.title()}.{ascii_last.upper()}{n}@{domain.title()}"
        ci = bisect.bisect_right(g._country_cum, int(rnd.random() * g._country_total))
        phone: str | None = None
        if "phone_malformed" in flags:
            phone = g.pick(pools.MALFORMED_PHONES)
        elif rnd.random() < 0.55:
            phone = f"{pools.COUNTRIES[ci][3]}{int(rnd.random() * 10**7):07d}"
        for flag in flags - {"email_shared"}:
            g.tag("customer", cid, flag)
        created = self.timeline.created[i]
        off = self.timeline.offsets[i]
        addresses = self._addresses(cid, first_name, last_name, phone, flags)
        consent = "subscribed" if rnd.random() < 0.35 else "not_subscribed"
        tags = ", ".join(sorted({g.pick(pools.TAGS) for _ in range(int(rnd.random() * 3))}))
        rec: Record = {
            "id": cid, "email": email, "created_at": fmt(created, off), "updated_at": None,
            "first_name": first_name, "last_name": last_name, "orders_count": 0, "state": self._state(),
            "total_spent": "0.00", "last_order_id": None,
            "note": g.pick(pools.CUSTOMER_NOTES) if "note_emoji" in flags else None,
            "verified_email": email is not None and "email_malformed" not in flags,
            "multipass_identifier": None, "tax_exempt": rnd.random() < 0.02, "tags": tags, "last_order_name": None,
            "currency": "USD", "phone": phone, "addresses": addresses, "tax_exemptions": [],
            "email_marketing_consent": None if email is None else {
                "state": consent, "opt_in_level": "single_opt_in", "consent_updated_at": None},
            "sms_marketing_consent": None if phone is None else {
                "state": "not_subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": None,
                "consent_collected_from": "OTHER"},
            "admin_graphql_api_id": gid("Customer", cid),
            "default_address": addresses[0] if addresses else None,
        }
        self.records.append(rec)
        self.snapshots.append(self._snapshot(rec))

    def _state(self) -> str:
        r = self.g.rnd.random()
        return "disabled" if r < 0.65 else "enabled" if r < 0.95 else "invited" if r < 0.99 else "declined"

    def _addresses(self, cid: int, first: str | None, last: str | None, phone: str | None,
                   flags: set[str]) -> list[Record]:
        g = self.g
        if "no_address" in flags:
            self.order_address.append(None)
            return []
        count = 2 if g.rnd.random() < 0.1 else 1
        out: list[Record] = []
        for n in range(count):
            addr, tax_bp = g.address(first, last, phone, long_city="city_too_long" in flags and n == 0,
                                     long_zip="zip_too_long" in flags and n == 0)
            if n == 0:
                self.order_address.append((addr, tax_bp))
            aid = g.ids["address"].next()
            out.append({"id": aid, "customer_id": cid, **{k: v for k, v in addr.items() if k not in (
                "latitude", "longitude")}, "country_name": addr["country"], "default": n == 0})
        return out

    @staticmethod
    def _snapshot(rec: Record) -> Record:
        """The customer as embedded in its orders (a subset of the customer resource)."""
        keys = ("id", "email", "created_at", "updated_at", "first_name", "last_name", "state", "note",
                "verified_email", "multipass_identifier", "tax_exempt", "phone", "email_marketing_consent",
                "sms_marketing_consent", "tags", "currency", "tax_exemptions", "admin_graphql_api_id",
                "default_address")
        return {k: rec[k] for k in keys}

    def _share_emails(self, email_kinds: dict[int, str]) -> None:
        """Give each ``email_shared`` customer the address of another customer with a normal email."""
        normal = [i for i in range(len(self.records)) if i not in email_kinds]
        if not normal:
            return
        for i, kind in email_kinds.items():
            if kind != "email_shared":
                continue
            j = self.g.pick(normal)
            email = self.records[j]["email"]
            for k in (i, j):
                self.records[k]["email"] = email
                self.snapshots[k]["email"] = email
                if "email_shared" not in self.g.anomalies.get(f"customer:{self.records[k]['id']}", []):
                    self.g.tag("customer", self.records[k]["id"], "email_shared")

    def absorb_orders(self, orders: list[Record]) -> None:
        """Fill orders_count/total_spent/last_order_* and bump updated_at as each order would have."""
        index = {rec["id"]: i for i, rec in enumerate(self.records)}
        counts = [0] * len(self.records)
        spent = [0] * len(self.records)
        for order in orders:
            cust = order["customer"]
            if cust is None:
                continue
            i = index[cust["id"]]
            counts[i] += 1
            if order["financial_status"] not in ("voided", "pending"):
                whole, _, frac = order["current_total_price"].partition(".")
                spent[i] += int(whole) * 100 + int(frac)
            rec = self.records[i]
            rec["last_order_id"] = order["id"]
            rec["last_order_name"] = order["name"]
            at = order["_created_epoch"] + 2
            if at > self.timeline.updated[i]:
                self.timeline.updated[i] = at
        for i, rec in enumerate(self.records):
            rec["orders_count"] = counts[i]
            rec["total_spent"] = dec(spent[i])
            if counts[i] >= 2:
                self.g.tag("customer", rec["id"], "repeat_customer")
        for order in orders:
            del order["_created_epoch"]


class _Catalog:
    """Products and variants, plus pools of sellable, deleted-variant and deleted-product lines."""

    def __init__(self, g: _Generator, n: int) -> None:
        self.g = g
        created = g.times(n, EPOCH_START, EPOCH_END - 60 * DAY)
        self.timeline = _Timeline(created, [g.offset(t) for t in created])
        self.records: list[Record] = []
        self.sellable: list[tuple[Record, Record, int, int]] = []
        self.deleted_variants: list[tuple[Record, Record, int, int]] = []
        self.deleted_products: list[tuple[Record, Record, int, int]] = []
        status = g.assign(n, {"draft": 0.08, "archived": 0.06})
        titles = g.assign(n, {"title_too_long": 0.01, "title_non_latin": 0.08})
        ghosts = g.assign(n, {"variant_deleted": 0.1})
        for i in range(n):
            self._product(i, status.get(i, "active"), titles.get(i), ghost_variant=i in ghosts)
        self._messy_skus()
        for _ in range(max(1, n // 50) if n else 0):  # products deleted since they were ordered
            product = self._make(EPOCH_START, shop_offset(EPOCH_START), "archived", None)
            self.deleted_products += [(product, v, *self._price_grams(v)) for v in product["variants"]]

    def _product(self, i: int, status: str, title_kind: str | None, *, ghost_variant: bool) -> None:
        g = self.g
        product = self._make(self.timeline.created[i], self.timeline.offsets[i], status, title_kind)
        pid = product["id"]
        self.timeline.updated[i] = self.timeline.created[i] + int(g.rnd.random() * 20 * DAY)
        for tag in (status if status != "active" else None, title_kind):
            if tag:
                g.tag("product", pid, tag)
        variants = product["variants"]
        if ghost_variant:
            # The variant existed when some orders were placed, then the merchant deleted it.
            if len(variants) > 1:
                ghost = variants.pop()
            else:
                vid = g.ids["variant"].next()
                ghost = {**variants[0], "id": vid, "title": "Discontinued", "sku": None,
                         "admin_graphql_api_id": gid("ProductVariant", vid)}
            self.deleted_variants.append((product, ghost, *self._price_grams(ghost)))
        if status != "draft":
            self.sellable += [(product, v, *self._price_grams(v)) for v in variants]
        self.records.append(product)

    @staticmethod
    def _price_grams(variant: Record) -> tuple[int, int]:
        whole, _, frac = variant["price"].partition(".")
        return int(whole) * 100 + int(frac), variant["grams"]

    def _title(self, title_kind: str | None, ptype: str) -> str:
        g = self.g
        if title_kind == "title_non_latin":
            return g.pick(pools.FOREIGN_TITLES)
        title = f"{g.pick(pools.ADJECTIVES)} {g.pick(pools.NOUNS)} {ptype}"
        if title_kind == "title_too_long":
            features = " | ".join(f"{g.pick(pools.ADJECTIVES)} {g.pick(pools.NOUNS)} edition" for _ in range(14))
            title = f"{title} — {features}"
        return title

    def _make(self, created: int, off: int, status: str, title_kind: str | None) -> Record:
        g, rnd = self.g, self.g.rnd
        pid = g.ids["product"].next()
        ptype = g.pick(pools.PRODUCT_TYPES)
        title = self._title(title_kind, ptype)
        handle = "-".join(w for w in "".join(c if c.isascii() and c.isalnum() else " " for c in title.lower())
                          .split()[:6]) or "product"
        ts = fmt(created, off)
        options, variants = self._variants(pid, ts, ptype)
        image: Record | None = None
        if rnd.random() < 0.8:
            iid = g.ids["image"].next()
            image = {"id": iid, "alt": None, "position": 1, "product_id": pid, "created_at": ts, "updated_at": ts,
                     "admin_graphql_api_id": gid("ProductImage", iid), "width": 1200, "height": 1200,
                     "src": f"https://cdn.shopify.com/s/files/1/0000/0001/files/{handle}-{pid % 10000}.jpg",
                     "variant_ids": []}
        return {
            "id": pid, "title": title,
            "body_html": f"<p>{title} &amp; more. <strong>Made to last.</strong></p>" if rnd.random() < 0.9 else None,
            "vendor": g.pick(pools.VENDORS), "product_type": ptype, "created_at": ts,
            "handle": f"{handle}-{pid % 100000}",
            "updated_at": ts, "published_at": None if status == "draft" else ts, "template_suffix": None,
            "published_scope": "global", "tags": "sale, summer" if rnd.random() < 0.3 else "", "status": status,
            "admin_graphql_api_id": gid("Product", pid), "variants": variants, "options": options,
            "images": [image] if image else [], "image": image,
        }

    def _variants(self, pid: int, ts: str, ptype: str) -> tuple[list[Record], list[Record]]:
        g, rnd = self.g, self.g.rnd
        n_options = 0 if rnd.random() < 0.35 else 1 if rnd.random() < 0.7 else 2
        chosen = g.rnd.sample(range(len(pools.OPTIONS)), n_options)
        combos: list[tuple[str, ...]] = [("Default Title",)]
        options: list[Record] = []
        if n_options:
            value_lists = [pools.OPTIONS[c][1][: 2 + int(rnd.random() * 2)] for c in chosen]
            combos = list(itertools.product(*value_lists))[: 1 + int(rnd.random() * 5)]
            for pos, c in enumerate(chosen, start=1):
                used = sorted({combo[pos - 1] for combo in combos}, key=pools.OPTIONS[c][1].index)
                options.append({"id": g.ids["option"].next(), "product_id": pid, "name": pools.OPTIONS[c][0],
                                "position": pos, "values": used})
        else:
            options.append({"id": g.ids["option"].next(), "product_id": pid, "name": "Title", "position": 1,
                            "values": ["Default Title"]})
        base = g.pick((1299, 2499, 3900, 4950, 7900, 12900, 19900, 24900))
        variants = []
        for pos, combo in enumerate(combos, start=1):
            vid = g.ids["variant"].next()
            price = base + (pos - 1) * 500
            grams = 100 + int(rnd.random() * 1900)
            qty = int(rnd.random() * 120) - 10  # oversold variants go negative, as in real shops
            variants.append({
                "id": vid, "product_id": pid, "title": " / ".join(combo), "price": dec(price), "position": pos,
                "inventory_policy": "deny" if rnd.random() < 0.8 else "continue",
                "compare_at_price": dec(price + 1000) if rnd.random() < 0.2 else None,
                "option1": combo[0], "option2": combo[1] if len(combo) > 1 else None,
                "option3": combo[2] if len(combo) > 2 else None, "created_at": ts, "updated_at": ts,
                "taxable": True, "barcode": f"{int(rnd.random() * 10**12):012d}" if rnd.random() < 0.6 else None,
                "fulfillment_service": "manual", "grams": grams, "inventory_management": "shopify",
                "requires_shipping": True, "sku": f"{ptype[:3].upper()}-{pid % 100000:05d}-{pos}",
                "weight": grams / 1000, "weight_unit": "kg", "inventory_item_id": g.ids["inventory_item"].next(),
                "inventory_quantity": qty, "old_inventory_quantity": qty,
                "admin_graphql_api_id": gid("ProductVariant", vid), "image_id": None,
            })
        return options, variants

    def _messy_skus(self) -> None:
        variants = [v for p in self.records for v in p["variants"]]
        kinds = self.g.assign(len(variants), {"sku_missing": 0.04, "sku_duplicate": 0.02})
        for i, kind in sorted(kinds.items()):
            v = variants[i]
            if kind == "sku_missing":
                v["sku"] = None if i % 2 else ""
                self.g.tag("variant", v["id"], "sku_missing")
                continue
            other = self.g.pick(variants)
            if other["product_id"] == v["product_id"] or not other["sku"]:
                continue
            v["sku"] = other["sku"]
            for w in (v, other):
                if "sku_duplicate" not in self.g.anomalies.get(f"variant:{w['id']}", []):
                    self.g.tag("variant", w["id"], "sku_duplicate")


class _Orders:
    def __init__(self, g: _Generator, people: _People, catalog: _Catalog) -> None:
        self.g = g
        self.people = people
        self.catalog = catalog

    def generate(self, n: int) -> tuple[list[Record], _Timeline]:
        g = self.g
        created = g.times(n, EPOCH_START, EPOCH_END)
        tl = _Timeline(created, [g.offset(t) for t in created])
        self.kinds = {
            "customer": g.assign(n, {"guest_checkout": 0.05, "guest_no_email": 0.015}),
            "life": g.assign(n, {"cancelled": 0.03, "refunded": 0.02, "partially_refunded": 0.04, "pending": 0.03,
                                 "authorized": 0.015}),
            "edit": g.assign(n, {"edited_after_creation": 0.08}),
            "note": g.assign(n, {"note_emoji": 0.04, "note_too_long": 0.001}),
            "line": g.assign(n, {"custom_item_no_variant": 0.02, "variant_deleted": 0.015, "product_deleted": 0.005,
                                 "title_too_long": 0.003}),
        }
        records = [self._order(i, tl) for i in range(n)]
        return records, tl

    def _order(self, i: int, tl: _Timeline) -> Record:
        g, rnd = self.g, self.g.rnd
        oid = g.ids["order"].next()
        created, off = tl.created[i], tl.offsets[i]
        customer, email, phone, address, tax_bp = self._buyer(i, oid, created)
        pres = USD
        if rnd.random() < 0.2:
            pres = g.pick(_PRESENTMENTS)
            g.tag("order", oid, "foreign_currency")
        life_kind = self.kinds["life"].get(i, "paid")
        if life_kind != "paid":
            g.tag("order", oid, life_kind)
        specs = self._lines(i)
        note = self._note(i, oid)
        order_in = OrderInput(
            id=oid, number=1001 + g.order_offset + i, created=created, offset=off, email=email, phone=phone,
            customer=customer, billing=address, shipping=address, lines=specs, presentment=pres, tax_bp=tax_bp,
            lifecycle=self._lifecycle(life_kind, created), note=note,
            tags=g.pick(pools.TAGS) if rnd.random() < 0.2 else "",
            discount_code="WELCOME10" if rnd.random() < 0.15 else None, gateway=g.pick(pools.GATEWAYS),
            token=f"{rnd.getrandbits(128):032x}",
        )
        order, latest = g.builder.build(order_in)
        updated = latest + 5 + int(rnd.random() * 300)
        if i in self.kinds["edit"]:
            updated = max(updated, created + 3600 + int(rnd.random() * 40 * DAY))
            g.tag("order", oid, "edited_after_creation")
        tl.updated[i] = updated
        order["_created_epoch"] = created  # consumed by _People.absorb_orders
        self._tag_lines(order, specs)
        return order

    def _buyer(self, i: int, oid: int, created: int
               ) -> tuple[Record | None, str | None, str | None, Record | None, int]:
        g, rnd = self.g, self.g.rnd
        kind = self.kinds["customer"].get(i)
        eligible = bisect.bisect_right(self.people.timeline.created, created)
        if kind is None and eligible:
            # Skewed: early customers have had longer to come back, and a few are very loyal.
            idx = int(eligible * rnd.random() ** 2.2)
            snap = self.people.snapshots[idx]
            known = self.people.order_address[idx]
            address, tax_bp = known if known is not None else g.address(
                snap["first_name"], snap["last_name"], snap["phone"])
            return snap, snap["email"], snap["phone"], address, tax_bp
        g.tag("order", oid, kind or "guest_checkout")
        _, (first, last, af, al) = g.script_name()
        n = i + g.order_offset
        email = None if kind == "guest_no_email" else f"{af}.{al}.guest{n}@{g.pick(pools.EMAIL_DOMAINS)}"
        phone = None if kind != "guest_no_email" else f"+1555{int(rnd.random() * 10**7):07d}"
        addr, tax_bp = g.address(first, last, phone)
        return None, email, phone, addr, tax_bp

    def _lifecycle(self, kind: str, created: int) -> Lifecycle:
        rnd = self.g.rnd
        ship = created + DAY + int(rnd.random() * 3 * DAY)
        if kind in ("pending", "authorized"):
            return Lifecycle(financial_status=kind)
        if kind == "cancelled":
            at = created + 3600 + int(rnd.random() * 3 * DAY)
            reason = self.g.pick(pools.CANCEL_REASONS)
            if rnd.random() < 0.5:
                return Lifecycle(financial_status="voided", cancelled_at=at, cancel_reason=reason, closed_at=at)
            return Lifecycle(financial_status="refunded", cancelled_at=at, cancel_reason=reason, closed_at=at,
                             refund_at=at + 60, refund_full=True)
        if kind in ("refunded", "partially_refunded"):
            return Lifecycle(financial_status=kind, fulfilled_at=ship, closed_at=ship,
                             refund_at=ship + 3 * DAY + int(rnd.random() * 20 * DAY), refund_full=kind == "refunded")
        if created + 5 * DAY > EPOCH_END or rnd.random() < 0.08:
            return Lifecycle()  # paid, not shipped yet
        partial = rnd.random() < 0.03
        closed = ship + int(rnd.random() * 2 * DAY) if not partial and rnd.random() < 0.75 else None
        return Lifecycle(fulfilled_at=ship, partially_fulfilled=partial, closed_at=closed)

    def _lines(self, i: int) -> list[LineSpec]:
        g, rnd = self.g, self.g.rnd
        catalog = self.catalog
        count = _LINE_COUNTS[int(rnd.random() * len(_LINE_COUNTS))]
        specs: list[LineSpec] = []
        if catalog.sellable:
            for _ in range(count):
                product, variant, price, grams = g.pick(catalog.sellable)
                specs.append(LineSpec("catalog", product["title"], price,
                                      _QUANTITIES[int(rnd.random() * len(_QUANTITIES))], product, variant, grams))
        forced = self.kinds["line"].get(i)
        if forced is not None or not specs:
            spec = self._special_line(forced or "custom_item_no_variant")
            specs[-1:] = [spec]
        return specs

    def _special_line(self, kind: str) -> LineSpec:
        g = self.g
        pool = {"variant_deleted": self.catalog.deleted_variants,
                "product_deleted": self.catalog.deleted_products}.get(kind)
        if pool:
            product, variant, price, grams = g.pick(pool)
            return LineSpec(kind, product["title"], price, 1, product, variant, grams)
        title = g.pick(pools.CUSTOM_ITEMS)
        if kind == "title_too_long":
            title = f"{title}: " + ", ".join(f"engrave '{g.pick(pools.NOUNS)}' on {g.pick(pools.PRODUCT_TYPES)}"
                                              for _ in range(12))
        return LineSpec("custom", title, 500 + int(g.rnd.random() * 30) * 100, 1)

    def _note(self, i: int, oid: int) -> str | None:
        kind = self.kinds["note"].get(i)
        if kind is not None:
            self.g.tag("order", oid, kind)
        if kind == "note_too_long":
            return pools.LONG_NOTE_PARAGRAPH * (32_000 // len(pools.LONG_NOTE_PARAGRAPH) + 2)
        if kind == "note_emoji":
            return self.g.pick(pools.ORDER_NOTES)
        return "Please deliver before Friday" if self.g.rnd.random() < 0.05 else None

    def _tag_lines(self, order: Record, specs: list[LineSpec]) -> None:
        tag: Callable[[str, int, str], None] = self.g.tag
        for spec, li in zip(specs, order["line_items"], strict=True):
            if spec.kind == "custom":
                tag("line_item", li["id"], "custom_item_no_variant")
            elif spec.kind != "catalog":
                tag("line_item", li["id"], spec.kind)
            if len(spec.title) > 255:
                tag("line_item", li["id"], "title_too_long")
        for addr_key in ("shipping_address",):
            addr = order[addr_key]
            if addr is None:
                continue
            if len(addr["city"] or "") > 40:
                tag("order", order["id"], "city_too_long")
            if len(addr["zip"] or "") > 20:
                tag("order", order["id"], "zip_too_long")
