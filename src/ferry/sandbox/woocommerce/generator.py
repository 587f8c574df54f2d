"""A seeded generator of a realistic, messy WooCommerce store.

Same seed and sizes give an identical store: all randomness comes from one ``random.Random(seed)``
and all times from a fixed epoch (records are created from 2026-01-01 to 2026-10-31; edits and refunds
may land weeks later). Nothing reads the wall clock. Names, places and bad values come from the Shopify
sandbox's word pools (``ferry.sandbox.shopify.pools``), so both stores are messy in the same ways.

WordPress facts the data keep: products, variations, coupons, orders and refunds are posts and share
one id sequence (with gaps); customers are users, with their own ids (1 is the admin, never a customer).
Guest orders have ``customer_id: 0``. One store currency, but an order carries its own ``currency``
(multi-currency plugins). Anomaly tags (``Store.anomalies``, keyed ``"<kind>:<id>"``):

customer
    ``script_<name>`` (names not in plain ASCII Latin), ``name_missing`` (registered at checkout without a
    name: ``""``), ``first_name_too_long``, ``last_name_too_long``, ``city_too_long``, ``postcode_too_long``,
    ``billing_email_malformed``, ``billing_email_other`` (billing email differs from the account's),
    ``billing_email_shared`` (billing email is another customer's account email), ``email_mixed_case``,
    ``phone_malformed``, ``no_address``, ``date_modified_null`` (never saved by WooCommerce: no
    ``last_update``), ``repeat_customer``, ``edited``.
product
    ``variable``, ``draft``, ``private``, ``name_too_long`` (> 255), ``name_non_latin``, ``sku_missing``,
    ``on_sale``, ``out_of_stock``.
variation
    ``sku_missing``, ``sku_duplicate`` (the same SKU as a variation of another product).
order
    ``guest`` (``customer_id: 0``), ``guest_email_of_customer`` (a guest order under a registered
    customer's email), ``status_<status>``, ``foreign_currency``, ``edited_after_creation``, ``refunded``,
    ``partially_refunded``, ``coupon``, ``note_emoji``, ``note_too_long``, ``billing_email_malformed``,
    ``product_deleted`` (a line whose product no longer exists), ``date_modified_shared`` (the same
    ``date_modified`` second as other orders, in a block crossing page boundaries).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ferry.sandbox.shopify import pools
from ferry.sandbox.woocommerce import records as rec
from ferry.sandbox.woocommerce.store import Record, Store
from ferry.sandbox.woocommerce.times import DEFAULT_TIMEZONE, EPOCH_END, EPOCH_START, StoreTime, parse_gmt

DAY = 86_400
BASE_URL = "https://shop.example"
ORDER_STATUSES = (("completed", 56), ("processing", 18), ("on-hold", 5), ("pending", 5), ("cancelled", 7),
                  ("refunded", 4), ("failed", 3), ("checkout-draft", 1), ("trash", 1))
# Order currencies other than the store's (a multi-currency plugin), with a rate from the store currency.
FOREIGN_CURRENCIES = (("USD", Decimal("1.08")), ("GBP", Decimal("0.85")), ("CHF", Decimal("0.96")))
PAYMENT_METHODS = (("stripe", "Credit Card (Stripe)"), ("ppcp-gateway", "PayPal"), ("bacs", "Direct bank transfer"),
                   ("cod", "Cash on delivery"))
REFUND_REASONS = ("Damaged in transit", "Customer changed their mind", "", "Wrong size",
                  "Réclamation — article manquant")
CATEGORIES = ((15, "Uncategorized", "uncategorized"), (21, "Clothing", "clothing"), (22, "Home", "home"),
              (23, "Outdoor", "outdoor"), (24, "Café & Tee", "cafe-tee"))


def generate_store(seed: int = 7, customers: int = 200, products: int = 40, orders: int = 400, *,
                   timezone: str = DEFAULT_TIMEZONE, currency: str = "EUR") -> Store:
    """Generate a messy store; deterministic in all arguments."""
    for name, n in (("customers", customers), ("products", products), ("orders", orders)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    return _Generator(seed, StoreTime(timezone), currency).run(customers, products, orders)


class _Generator:
    def __init__(self, seed: int, st: StoreTime, currency: str) -> None:
        self.rnd = random.Random(seed)
        self.st = st
        self.currency = currency
        self.anomalies: dict[str, list[str]] = {}
        self.next_post = 10  # WordPress's posts table: a few pages and the shop page come first
        self.next_user = 2
        self.next_item = 1  # order items (line, shipping, tax, coupon lines) have their own table
        self.next_meta = 100

    # -- helpers ---------------------------------------------------------------------------------------
    def tag(self, kind: str, ident: int | str, tag: str) -> None:
        self.anomalies.setdefault(f"{kind}:{ident}", []).append(tag)

    def post_id(self) -> int:
        # Autosaves, revisions and other post types take ids in between.
        self.next_post += 1 + (self.rnd.random() < 0.3) * self.rnd.randint(1, 4)
        return self.next_post

    def item_id(self) -> int:
        self.next_item += 1
        return self.next_item

    def meta(self, key: str, value: Any) -> Record:
        self.next_meta += self.rnd.randint(1, 9)
        return {"id": self.next_meta, "key": key, "value": value}

    def weighted(self, choices: Sequence[tuple[str, int]]) -> str:
        return self.rnd.choices([c for c, _ in choices], [w for _, w in choices])[0]

    def when(self, start: int, end: int) -> int:
        return self.rnd.randint(start, max(start, end))

    def run(self, n_customers: int, n_products: int, n_orders: int) -> Store:
        catalog = _Catalog(self, n_products)
        coupons = _coupons(self, max(3, n_orders // 60))
        people = _People(self, n_customers)
        orders, refunds = _Orders(self, people, catalog, coupons).generate(n_orders)
        return Store(customers=people.records, products=catalog.products, orders=orders, coupons=coupons,
                     variations=catalog.variations, refunds=refunds, anomalies=self.anomalies,
                     timezone=self.st.name, currency=self.currency)


def _coupons(g: _Generator, n: int) -> list[Record]:
    out = []
    for i in range(n):
        created = g.when(EPOCH_START, EPOCH_START + 60 * DAY)
        kind = ("percent", "fixed_cart", "fixed_product")[i % 3]
        amount = rec.money(g.rnd.choice((5, 10, 15, 20)) if kind == "percent" else g.rnd.choice((5, 10, 25)))
        expires = created + g.rnd.randint(30, 400) * DAY if g.rnd.random() < 0.5 else None
        code = g.rnd.choice(("summer", "welcome", "vip", "bfcm", "friends", "spring")) + str(10 + i)
        out.append(rec.coupon(g.st, g.post_id(), created, created + g.rnd.randint(0, 20) * DAY, code=code,
                              amount=amount, discount_type=kind, expires=expires, usage_count=0,
                              minimum=rec.money(g.rnd.choice((0, 0, 50))), emails=[]))
    return out


class _Catalog:
    def __init__(self, g: _Generator, n: int) -> None:
        self.g = g
        self.products: list[Record] = []
        self.variations: dict[int, list[Record]] = {}
        self.skus: list[str] = []
        for i in range(n):
            self._product(i)

    def _product(self, i: int) -> None:
        g = self.g
        pid = g.post_id()
        created = g.when(EPOCH_START - 120 * DAY, EPOCH_START + 30 * DAY)
        modified = created + (g.rnd.randint(1, 200) * DAY if g.rnd.random() < 0.4 else g.rnd.randint(0, 600))
        variable = i % 3 == 1 or g.rnd.random() < 0.15
        status = "publish"
        if i % 17 == 5:
            status = "draft"
        elif i % 29 == 11:
            status = "private"
        name = self._name(pid, i)
        slug = f"product-{pid}"
        sku = "" if i % 13 == 4 else f"WC-{pid:05d}"
        regular = rec.money(Decimal(g.rnd.randint(500, 25_000)) / 100)
        sale = rec.money(Decimal(regular) * Decimal("0.8")) if i % 7 == 3 else ""
        stock = None if variable else g.rnd.choice((None, None, 0, 3, 25, 140))
        category = CATEGORIES[i % len(CATEGORIES)]
        attrs: list[Record] = []
        if variable:
            name_opt = pools.OPTIONS[i % 2]
            attrs = [{"id": 0, "name": name_opt[0], "slug": name_opt[0].lower(), "position": 0, "visible": True,
                      "variation": True, "options": list(name_opt[1][:3])}]
        product = rec.product(
            g.st, pid, created, modified, name=name, slug=slug, ptype="variable" if variable else "simple",
            status=status, sku=sku, regular="" if variable else regular, sale="" if variable else sale,
            stock=stock, categories=[{"id": category[0], "name": category[1], "slug": category[2]}],
            attributes=attrs, meta=[g.meta("_wpcom_is_markdown", "1")] if i % 5 == 0 else [], base_url=BASE_URL)
        for tag, cond in (("variable", variable), (status, status != "publish"), ("sku_missing", not sku),
                          ("on_sale", bool(sale) and not variable), ("out_of_stock", stock == 0)):
            if cond:
                g.tag("product", pid, tag)
        self.products.append(product)
        if variable:
            self._variations(product, created, modified, regular, attrs[0])

    def _name(self, pid: int, i: int) -> str:
        g = self.g
        if i % 23 == 9:
            g.tag("product", pid, "name_too_long")
            return ("Ultimate " * 40).strip() + f" {pid}"
        if i % 11 == 6:
            g.tag("product", pid, "name_non_latin")
            return g.rnd.choice(pools.FOREIGN_TITLES)
        return f"{g.rnd.choice(pools.ADJECTIVES)} {g.rnd.choice(pools.NOUNS)} {g.rnd.choice(pools.PRODUCT_TYPES)}"

    def _variations(self, product: Record, created: int, modified: int, regular: str, attr: Record) -> None:
        g = self.g
        children = []
        for pos, option in enumerate(attr["options"]):
            vid = g.post_id()
            sku = f"{product['sku'] or 'VAR'}-{option[:3].upper()}"
            if g.rnd.random() < 0.08:
                sku = ""
                g.tag("variation", vid, "sku_missing")
            elif self.skus and g.rnd.random() < 0.05:
                sku = g.rnd.choice(self.skus)
                g.tag("variation", vid, "sku_duplicate")
            if sku:
                self.skus.append(sku)
            price = rec.money(Decimal(regular) + pos * 2)
            children.append(rec.variation(
                g.st, vid, product, created, modified + g.rnd.randint(0, 3600), sku=sku, regular=price, sale="",
                stock=g.rnd.choice((None, 0, 4, 40)),
                attributes=[{"id": 0, "name": attr["name"], "option": option}], menu_order=pos))
        product["variations"] = [v["id"] for v in children]
        prices = sorted(Decimal(v["price"]) for v in children)
        product["price"] = rec.money(prices[0]) if prices else ""
        self.variations[product["id"]] = children

    def sellable(self) -> list[tuple[Record, Record | None]]:
        """(product, variation or None) pairs an order line can be made of."""
        out: list[tuple[Record, Record | None]] = []
        for p in self.products:
            if p["type"] == "variable":
                out += [(p, v) for v in self.variations.get(p["id"], [])]
            else:
                out.append((p, None))
        return out


class _People:
    def __init__(self, g: _Generator, n: int) -> None:
        self.g = g
        self.records: list[Record] = []
        scripts = [s for s, _ in pools.SCRIPT_WEIGHTS]
        weights = [w for _, w in pools.SCRIPT_WEIGHTS]
        for i in range(n):
            self._customer(i, g.rnd.choices(scripts, weights)[0])
        self._share_billing_emails()

    def _customer(self, i: int, script: str) -> None:
        g = self.g
        cid = g.next_user
        g.next_user += 1 + (g.rnd.random() < 0.1)
        first, last, a_first, a_last = g.rnd.choice(pools.NAMES[script])
        if script != "latin":
            g.tag("customer", cid, f"script_{script}")
        email = f"{a_first}.{a_last}{cid}@{g.rnd.choice(pools.EMAIL_DOMAINS)}"
        username = f"{a_first}{a_last}{cid}"
        if i % 19 == 7:
            email = email[0].upper() + email[1:].replace("@", "@", 1).title().replace(".Com", ".COM")
            g.tag("customer", cid, "email_mixed_case")
        if i % 11 == 3:
            first, last = "", ""
            username = email.split("@")[0].lower()
            g.tag("customer", cid, "name_missing")
        elif i % 31 == 8:
            first = g.rnd.choice(pools.LONG_FIRST_NAMES)
            g.tag("customer", cid, "first_name_too_long")
        elif i % 37 == 9:
            last = g.rnd.choice(pools.LONG_LAST_NAMES)
            g.tag("customer", cid, "last_name_too_long")
        created = g.when(EPOCH_START - 200 * DAY, EPOCH_END - 20 * DAY)
        modified: int | None = created + g.rnd.randint(0, 120)
        if g.rnd.random() < 0.3:
            modified = created + g.rnd.randint(1, 150) * DAY + g.rnd.randint(0, DAY)
            g.tag("customer", cid, "edited")
        if i % 41 == 13:
            modified = None
            g.tag("customer", cid, "date_modified_null")
        bill, ship = self._addresses(cid, i, first, last, email)
        meta = [g.meta("wc_last_active", str(created + 3 * DAY))] if i % 4 == 0 else []
        self.records.append(rec.customer(g.st, cid, created, modified, email=email, first_name=first, last_name=last,
                                         username=username, bill=bill, ship=ship, meta=meta))

    def _addresses(self, cid: int, i: int, first: str, last: str, email: str) -> tuple[Record, Record]:
        g = self.g
        if i % 9 == 2:
            g.tag("customer", cid, "no_address")
            return rec.billing(), rec.shipping()
        country = g.rnd.choices(pools.COUNTRIES, pools.COUNTRY_WEIGHTS)[0]
        city, state_name, state, postcode = g.rnd.choice(country[2])
        del state_name
        phone = f"{country[3]}{g.rnd.randint(1_000_000, 9_999_999)}"
        if i % 23 == 5:
            phone = g.rnd.choice(pools.MALFORMED_PHONES)
            g.tag("customer", cid, "phone_malformed")
        if i % 29 == 10:
            city = g.rnd.choice(pools.LONG_CITIES)
            g.tag("customer", cid, "city_too_long")
        if i % 43 == 12:
            postcode = g.rnd.choice(pools.LONG_ZIPS)
            g.tag("customer", cid, "postcode_too_long")
        bill_email = email
        if i % 17 == 6:
            bill_email = g.rnd.choice(pools.MALFORMED_EMAILS)
            g.tag("customer", cid, "billing_email_malformed")
        elif i % 13 == 2:
            bill_email = f"billing+{cid}@{g.rnd.choice(pools.EMAIL_DOMAINS)}"
            g.tag("customer", cid, "billing_email_other")
        street = f"{g.rnd.randint(1, 400)} {g.rnd.choice(pools.STREETS)}"
        values = {"first_name": first, "last_name": last, "address_1": street, "city": city, "postcode": postcode,
                  "country": country[1], "state": state, "phone": phone}
        ship = rec.shipping(**values) if g.rnd.random() < 0.8 else rec.shipping()
        return rec.billing(**values, email=bill_email), ship

    def _share_billing_emails(self) -> None:
        """A few customers' billing email is another customer's account email (families, shared mailboxes)."""
        people = self.records
        for k in range(0, len(people) - 1, 47):
            a, b = people[k], people[k + 1]
            if b["billing"]["country"]:
                b["billing"]["email"] = a["email"]
                self.g.tag("customer", b["id"], "billing_email_shared")


class _Orders:
    def __init__(self, g: _Generator, people: _People, catalog: _Catalog, coupons: list[Record]) -> None:
        self.g = g
        self.people = people
        self.sellable = catalog.sellable()
        self.coupons = coupons
        self.deleted_product_id = 9_999_990  # a product that was deleted after it was sold

    def generate(self, n: int) -> tuple[list[Record], dict[int, list[Record]]]:
        g = self.g
        created = sorted(g.when(EPOCH_START, EPOCH_END - DAY) for _ in range(n))
        drafts = [self._order(i, t) for i, t in enumerate(created)]
        # Posts take ids in creation order: orders and the refunds made later interleave.
        events: list[tuple[int, int, Record, Record | None]] = []
        for k, (order, refunds) in enumerate(drafts):
            events.append((order["_created"], k, order, None))
            events += [(r["_created"], k, r, order) for r in refunds]
        refunds_by_order: dict[int, list[Record]] = {}
        for _, _, record, parent in sorted(events, key=lambda e: (e[0], e[1], e[3] is not None)):
            record["id"] = g.post_id()
            record.pop("_created")
            if parent is not None:
                refunds_by_order.setdefault(parent["id"], []).insert(0, record)  # newest first
        orders = [order for order, _ in drafts]
        for order in orders:
            order["number"] = str(order["id"])
            mine = refunds_by_order.get(order["id"], [])
            order["refunds"] = [{"id": r["id"], "reason": r["reason"], "total": f"-{r['amount']}"} for r in mine]
            self._retag(order)
        self._share_modified(orders)
        self._mark_paying(orders)
        return orders, refunds_by_order

    def _retag(self, order: Record) -> None:
        """Anomaly tags were collected on a placeholder key before the order had its id."""
        tags = self.g.anomalies.pop(f"order:draft-{order['order_key']}", [])
        if tags:
            self.g.anomalies[f"order:{order['id']}"] = tags

    def _order(self, i: int, created: int) -> tuple[Record, list[Record]]:
        g = self.g
        key = f"wc_order_{g.rnd.getrandbits(48):012x}"
        tag_key = f"draft-{key}"
        status = g.weighted(ORDER_STATUSES)
        g.tag("order", tag_key, f"status_{status}")
        cust, bill, ship = self._buyer(i, tag_key)
        currency, rate = self.g.currency, Decimal(1)
        if i % 9 == 4:
            currency, rate = FOREIGN_CURRENCIES[(i // 9) % len(FOREIGN_CURRENCIES)]
            g.tag("order", tag_key, "foreign_currency")
        tax_rate = Decimal(g.rnd.choice((0, 7, 19, 19, 20))) / 100
        lines, coupon_lines = self._lines(i, tag_key, rate, tax_rate)
        ship_total = rec.money(Decimal(g.rnd.choice((0, 4.9, 5.9, 9.9))) * rate)
        ship_tax = (Decimal(ship_total) * tax_rate).quantize(rec.CENT)
        totals = rec.order_totals(lines, Decimal(ship_total), ship_tax)
        paid = created + g.rnd.randint(5, 600) if status in ("completed", "processing", "refunded") else None
        completed = (paid or created) + g.rnd.randint(1, 10) * DAY if status in ("completed", "refunded") else None
        modified = max(t for t in (created + g.rnd.randint(1, 120), paid, completed) if t is not None)
        if g.rnd.random() < 0.2:
            modified += g.rnd.randint(1, 40) * DAY
            g.tag("order", tag_key, "edited_after_creation")
        method, method_title = g.rnd.choice(PAYMENT_METHODS)
        note = self._note(i, tag_key)
        order: Record = {
            "_created": created,
            "id": 0,
            "parent_id": 0,
            "status": status,
            "currency": currency,
            "version": rec.WC_VERSION,
            "prices_include_tax": False,
            **rec.dates(g.st, "date_created", created),
            **rec.dates(g.st, "date_modified", modified),
            **totals,
            "customer_id": cust,
            "order_key": key,
            "billing": bill,
            "shipping": ship,
            "payment_method": method,
            "payment_method_title": method_title,
            "transaction_id": f"ch_{g.rnd.getrandbits(64):016x}" if paid and method == "stripe" else "",
            "customer_ip_address": f"203.0.113.{g.rnd.randint(1, 254)}",
            "customer_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "created_via": g.rnd.choice(("checkout", "checkout", "checkout", "admin", "store-api")),
            "customer_note": note,
            **rec.dates(g.st, "date_completed", completed),
            **rec.dates(g.st, "date_paid", paid),
            "cart_hash": f"{g.rnd.getrandbits(128):032x}",
            "number": "",
            "meta_data": [g.meta("_wc_order_attribution_source_type", g.rnd.choice(("organic", "typein", "utm")))],
            "line_items": lines,
            "tax_lines": self._tax_lines(tax_rate, totals) if tax_rate else [],
            "shipping_lines": [{"id": g.item_id(), "method_title": "Flat rate", "method_id": "flat_rate",
                                "instance_id": "1", "total": ship_total, "total_tax": rec.money(ship_tax),
                                "taxes": [], "tax_status": "taxable", "meta_data": []}] if Decimal(ship_total) else [],
            "fee_lines": [],
            "coupon_lines": coupon_lines,
            "refunds": [],
            "payment_url": f"{BASE_URL}/checkout/order-pay/0/?pay_for_order=true&key={key}",
            "is_editable": status in ("pending", "on-hold", "checkout-draft"),
            "needs_payment": status in ("pending", "failed"),
            "needs_processing": True,
            "currency_symbol": rec.CURRENCY_SYMBOLS.get(currency, currency),
        }
        return order, self._refunds(order, status, paid, tag_key)

    def _buyer(self, i: int, tag_key: str) -> tuple[int, Record, Record]:
        g, people = self.g, self.people.records
        guest = not people or i % 4 == 1
        if not guest:
            # Some customers order again and again (a heavy tail); most order once or twice.
            person = people[min(len(people) - 1, int(g.rnd.paretovariate(1.2)) - 1)] if i % 3 == 0 \
                else g.rnd.choice(people)
            return person["id"], dict(person["billing"]), dict(person["shipping"])
        g.tag("order", tag_key, "guest")
        first, last, a_first, a_last = g.rnd.choice(pools.NAMES[g.rnd.choice(("latin", "latin_diacritics", "cjk"))])
        email = f"{a_first}.{a_last}.guest{i}@{g.rnd.choice(pools.EMAIL_DOMAINS)}"
        if people and i % 12 == 5:
            email = g.rnd.choice(people)["email"]
            g.tag("order", tag_key, "guest_email_of_customer")
        elif i % 25 == 9:
            email = g.rnd.choice(pools.MALFORMED_EMAILS)
            g.tag("order", tag_key, "billing_email_malformed")
        country = g.rnd.choices(pools.COUNTRIES, pools.COUNTRY_WEIGHTS)[0]
        city, _, state, postcode = g.rnd.choice(country[2])
        values = {"first_name": first, "last_name": last, "address_1": f"{g.rnd.randint(1, 99)} Market St",
                  "city": city, "postcode": postcode, "country": country[1], "state": state}
        return 0, rec.billing(**values, email=email, phone=""), rec.shipping(**values)

    def _lines(self, i: int, tag_key: str, rate: Decimal, tax_rate: Decimal) -> tuple[list[Record], list[Record]]:
        g = self.g
        n = g.rnd.choice((1, 1, 1, 1, 2, 2, 2, 3, 4))
        coupon = self.coupons[i % len(self.coupons)] if self.coupons and i % 8 == 2 else None
        lines = []
        for k in range(n):
            if not self.sellable:
                break
            product, var = g.rnd.choice(self.sellable)
            item = var or product
            unit = (Decimal(item["price"] or "9.99") * rate).quantize(rec.CENT)
            qty = g.rnd.choice((1, 1, 1, 1, 2, 3))
            discount = (unit * qty * Decimal("0.1")).quantize(rec.CENT) if coupon else Decimal(0)
            pid = product["id"]
            if i % 53 == 17 and k == 0:
                pid = self.deleted_product_id
                g.tag("order", tag_key, "product_deleted")
            meta = [g.meta(var["attributes"][0]["name"].lower(), var["attributes"][0]["option"])] if var else []
            lines.append(rec.line_item(
                g.item_id(), name=f"{product['name']} - {var['name']}" if var else product["name"], product_id=pid,
                variation_id=var["id"] if var else 0, quantity=qty, unit=unit, tax_rate=tax_rate, tax_rate_id=1,
                discount=discount, sku=item["sku"], meta=meta, parent_name=product["name"] if var else None))
        coupon_lines = []
        if coupon and lines:
            g.tag("order", tag_key, "coupon")
            disc = sum((Decimal(li["subtotal"]) - Decimal(li["total"]) for li in lines), Decimal(0))
            coupon["usage_count"] += 1
            coupon_lines.append({"id": g.item_id(), "code": coupon["code"], "discount": rec.money(disc),
                                 "discount_tax": "0.00", "discount_type": coupon["discount_type"],
                                 "nominal_amount": float(coupon["amount"]), "free_shipping": False, "meta_data": []})
        return lines, coupon_lines

    def _tax_lines(self, tax_rate: Decimal, totals: dict[str, str]) -> list[Record]:
        pct = int(tax_rate * 100)
        return [{"id": self.g.item_id(), "rate_code": f"TAX-{pct}", "rate_id": 1, "label": "VAT" if pct != 7 else "Tax",
                 "compound": False, "tax_total": totals["cart_tax"], "shipping_tax_total": totals["shipping_tax"],
                 "rate_percent": float(pct), "meta_data": []}]

    def _note(self, i: int, tag_key: str) -> str:
        g = self.g
        if i % 14 == 6:
            g.tag("order", tag_key, "note_emoji")
            return g.rnd.choice(pools.ORDER_NOTES)
        if i % 97 == 40:
            g.tag("order", tag_key, "note_too_long")
            return pools.LONG_NOTE_PARAGRAPH * 300
        return ""

    def _refunds(self, order: Record, status: str, paid: int | None, tag_key: str) -> list[Record]:
        g = self.g
        if paid is None or not order["line_items"]:
            return []
        full = status == "refunded"
        if not full and not (status == "completed" and g.rnd.random() < 0.06):
            return []
        total = Decimal(order["total"])
        amount = total if full else (total * Decimal(g.rnd.choice(("0.2", "0.5")))).quantize(rec.CENT)
        g.tag("order", tag_key, "refunded" if full else "partially_refunded")
        when = paid + g.rnd.randint(1, 30) * DAY
        order_modified = max(when, _epoch_of(g.st, order["date_modified_gmt"]))
        order.update(rec.dates(g.st, "date_modified", order_modified))
        li = order["line_items"][0]
        return [{
            "_created": when,
            "id": 0,
            **rec.dates(g.st, "date_created", when),
            "amount": rec.money(amount),
            "reason": g.rnd.choice(REFUND_REASONS),
            "refunded_by": 1,
            "refunded_payment": order["payment_method"] == "stripe",
            "meta_data": [],
            "line_items": [{**li, "id": g.item_id(), "quantity": -li["quantity"], "subtotal": f"-{li['subtotal']}",
                            "total": f"-{li['total']}", "meta_data": [g.meta("_refunded_item_id", str(li["id"]))],
                            "refund_total": float(li["total"])}] if full else [],
            "shipping_lines": [],
            "tax_lines": [],
            "fee_lines": [],
        }]

    def _share_modified(self, orders: list[Record]) -> None:
        """A block of consecutive orders (and a scattered few) saved in the same second: a bulk status edit."""
        if len(orders) < 30:
            return
        g = self.g
        start = len(orders) // 3
        block = orders[start:start + 14] + orders[start + 40::97][:4]
        newest = max(_epoch_of(g.st, o["date_modified_gmt"]) for o in block)
        for o in block:
            o.update(rec.dates(g.st, "date_modified", newest))
            self.g.tag("order", o["id"], "date_modified_shared")

    def _mark_paying(self, orders: list[Record]) -> None:
        counts: dict[int, int] = {}
        for o in orders:
            if o["customer_id"]:
                counts[o["customer_id"]] = counts.get(o["customer_id"], 0) + 1
        for person in self.people.records:
            n = counts.get(person["id"], 0)
            person["is_paying_customer"] = n > 0
            if n >= 2:
                self.g.tag("customer", person["id"], "repeat_customer")


def _epoch_of(st: StoreTime, gmt_text: str) -> int:
    del st  # the GMT twin needs no zone
    return parse_gmt(gmt_text)
