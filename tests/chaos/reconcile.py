"""Full reconciliation of the target against the source, record by record, for the chaos suite.

Where every source record must end up, and what the written fields must hold, comes from the e2e
fidelity test's independent derivation (tests/e2e/test_sync_fidelity.py: raw Shopify JSON in, no ferry
normalizer or mapping code); this module turns it into figures instead of assertions, so a chaos run
can print what it found before it fails.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ferry.store import DeadLetter
from tests.e2e.test_sync_fidelity import (
    EXTERNAL_ID,
    OBJECTS,
    Expected,
    _a,
    _customer_key,
    _t,
    _utc,
    _variant_name,
)


@dataclass
class ObjectFigures:
    source: int = 0
    in_target: int = 0
    lost: int = 0  # neither in the target nor dead-lettered
    duplicated: int = 0  # external ids held more than once
    extra: int = 0  # in the target with no source record
    wrong: int = 0  # a field differs from what the newest source version says
    stale: int = 0  # ... and it is a record edited during the run (an older version won)
    wrongly_dead_lettered: int = 0  # valid records in the dead-letter queue
    invalid: int = 0  # records the source makes invalid
    invalid_right_reason: int = 0  # ... dead-lettered with exactly the expected (code, field) reasons
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


@dataclass
class Reconciliation:
    objects: dict[str, ObjectFigures]

    def total(self, name: str) -> int:
        return sum(getattr(o, name) for o in self.objects.values())

    @property
    def clean(self) -> bool:
        bad = ("lost", "duplicated", "extra", "wrong", "stale", "wrongly_dead_lettered")
        return all(self.total(n) == 0 for n in bad) and self.total("invalid") == self.total("invalid_right_reason")

    def totals(self) -> dict[str, int]:
        """The figures a chaos result reports: each kind of mismatch, summed over the objects."""
        return {
            "lost": self.total("lost"),
            "duplicated": self.total("duplicated"),
            "extra": self.total("extra"),
            "wrong_or_stale": self.total("wrong"),
            "stale": self.total("stale"),
            "valid_wrongly_dead_lettered": self.total("wrongly_dead_lettered"),
            "invalid": self.total("invalid"),
            "invalid_dead_lettered_right_reason": self.total("invalid_right_reason"),
        }

    def problems(self) -> dict[str, list[str]]:
        return {k: o.examples for k, o in self.objects.items() if o.examples}


def reconcile(
    exp: Expected, records: dict[str, list[dict[str, Any]]], letters: list[DeadLetter], edited: set[str]
) -> Reconciliation:
    open_letters = [d for d in letters if d.status == "open"]
    by_key = {o: {r[EXTERNAL_ID[o]]: r for r in records[o]} for o in OBJECTS}
    wants = _expected_values(exp, by_key)
    out: dict[str, ObjectFigures] = {}
    for obj in OBJECTS:
        f = out[obj] = ObjectFigures()
        counts = Counter(r[EXTERNAL_ID[obj]] for r in records[obj])
        dead = {d.record_key: d for d in open_letters if d.object == obj}
        source = exp.keys[obj]
        f.source, f.in_target = len(source), len(counts)
        f.duplicated = sum(1 for n in counts.values() if n > 1)
        lost = source - set(counts) - set(dead)
        f.lost, f.extra = len(lost), len(set(counts) - source)
        for k in sorted(lost)[:3]:
            f.note(f"lost {k}")
        invalid = exp.errors[obj]
        f.invalid = len(invalid)
        for key, want in invalid.items():
            d = dead.get(key)
            got = {(e["code"], fl) for e in d.errors for fl in e.get("fields") or [""]} if d else set()
            if got == want and key not in counts:
                f.invalid_right_reason += 1
            else:
                f.note(f"invalid {key}: expected {sorted(want)}, dead letter {sorted(got)}, in target {key in counts}")
        wrongly = set(dead) - set(invalid)
        f.wrongly_dead_lettered = len(wrongly)
        for k in sorted(wrongly)[:3]:
            f.note(f"valid {k} dead-lettered: {dead[k].error_code} {dead[k].message[:120]}")
        for key, want in wants[obj].items():
            got = by_key[obj][key]
            diff = [(n, v, got.get(n)) for n, v in want.items() if got.get(n) != v]
            if diff:
                f.wrong += 1
                if _customer_of(obj, key, exp) in edited:
                    f.stale += 1
                f.note(f"{key}: (field, want, got) {diff[:3]}")
    return Reconciliation(out)


def _customer_of(obj: str, key: str, exp: Expected) -> str:
    if obj in ("Account", "Contact"):
        return key
    if obj == "Order" and key in exp.orders:
        return _customer_key(exp.orders[key])
    return ""


def _expected_values(exp: Expected, by_key: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """What each record in the target must hold, from the newest source version (fields as the e2e test checks)."""
    accounts, contacts = by_key["Account"], by_key["Contact"]
    products, entries = by_key["Product2"], by_key["PricebookEntry"]
    orders, items = by_key["Order"], by_key["OrderItem"]
    out: dict[str, dict[str, Any]] = {o: {} for o in OBJECTS}
    for k in accounts:
        if k in exp.people:
            out["Account"][k] = exp.people[k].account_fields()
    for k in contacts:
        if k in exp.people:
            c = exp.people[k].contact_fields()
            out["Contact"][k] = {
                "FirstName": c["FirstName"],
                "LastName": c["LastName"],
                "Email": c["Email"],
                "MailingCity": c["MailingCity"],
                "AccountId": accounts[k]["Id"] if k in accounts else "<no account>",
            }
    for k in products:
        if k in exp.variants:
            product, variant = exp.variants[k]
            out["Product2"][k] = {
                "Name": _variant_name(product, variant),
                "ProductCode": _t(variant.get("sku")),
                "IsActive": str(product.get("status") or "").lower() == "active",
            }
    for k in entries:
        if k in exp.variants:
            _, variant = exp.variants[k]
            out["PricebookEntry"][k] = {
                "UnitPrice": float(variant["price"]),
                "Product2Id": products[k]["Id"] if k in products else "<no product>",
            }
    for k in orders:
        if k in exp.orders:
            raw = exp.orders[k]
            customer = _customer_key(raw)
            out["Order"][k] = {
                "AccountId": accounts[customer]["Id"] if customer in accounts else "<no account>",
                "Name": _t(raw.get("name")),
                "EffectiveDate": _utc(raw.get("processed_at") or raw["created_at"]).date().isoformat(),
                "Shopify_Total_Price__c": float(raw["total_price"]),
                "BillingCity": _a(raw.get("billing_address"), "city"),
            }
    for k in items:
        if k in exp.lines:
            line, order_key = exp.lines[k]
            variant = str(line["variant_id"])
            out["OrderItem"][k] = {
                "Quantity": float(line["quantity"]),
                "UnitPrice": float(line["price"]),
                "OrderId": orders[order_key]["Id"] if order_key in orders else "<no order>",
                "PricebookEntryId": entries[variant]["Id"] if variant in entries else "<no entry>",
            }
    return out


# ----------------------------------------------------------------------------- against a clean run


def reconcile_with_reference(
    keys: dict[str, set[str]],
    external_id: dict[str, str],
    fields: dict[str, list[str]],
    records: dict[str, list[dict[str, Any]]],
    letters: list[DeadLetter],
    clean: tuple[dict[str, list[dict[str, Any]]], list[DeadLetter]],
    newest: dict[str, dict[str, dict[str, Any]]],
    touched: dict[str, set[str]],
) -> Reconciliation:
    """The org against the source's final state, record by record, with a clean run as the judge of values.

    ``keys`` (per object) are derived from the source's raw records alone: each must be in the org once or
    in the dead-letter queue. A clean run (never killed, fault-free, over the final state, into a new org)
    says which records are invalid and for which (code, field) reasons, and what each mapped field
    (``fields``) of a written record holds; references (``...Id``) are compared by the external id of the
    record they point at, since the two orgs give different Ids. ``newest`` adds what the source itself says
    some fields must hold (object -> key -> field -> value): the edits made while ferry ran. A wrong value
    on a record in ``touched`` (object -> keys whose source changed during the run) counts as stale.
    """
    clean_records, clean_letters = clean
    ours, theirs = _external_keys(records, external_id), _external_keys(clean_records, external_id)
    out: dict[str, ObjectFigures] = {}
    for obj in OBJECTS:
        f = out[obj] = ObjectFigures()
        ext = external_id[obj]
        counts = Counter(r[ext] for r in records[obj])
        written = {r[ext]: r for r in records[obj]}
        clean_written = {r[ext]: r for r in clean_records[obj]}
        dead = {d.record_key: d for d in letters if d.status == "open" and d.object == obj}
        invalid = {d.record_key: _reasons(d) for d in clean_letters if d.status == "open" and d.object == obj}
        source = keys[obj]
        f.source, f.in_target = len(source), len(counts)
        f.duplicated = sum(1 for n in counts.values() if n > 1)
        lost = source - set(counts) - set(dead)
        f.lost, f.extra = len(lost), len(set(counts) - source)
        for k in sorted(lost)[:3]:
            f.note(f"lost {k}")
        unexplained = source - set(clean_written) - set(invalid)
        f.lost += len(unexplained - lost)  # the clean run lost it: the reference itself is wrong
        for k in sorted(unexplained)[:3]:
            f.note(f"{k}: neither written nor dead-lettered by the clean run")
        f.invalid = len(invalid)
        for key, want in invalid.items():
            got = _reasons(dead[key]) if key in dead else set()
            if got == want and key not in counts:
                f.invalid_right_reason += 1
            else:
                f.note(f"invalid {key}: expected {sorted(want)}, dead letter {sorted(got)}, in target {key in counts}")
        wrongly = set(dead) - set(invalid)
        f.wrongly_dead_lettered = len(wrongly)
        for k in sorted(wrongly)[:3]:
            f.note(f"valid {k} dead-lettered: {dead[k].error_code} {dead[k].message[:120]}")
        for key, row in written.items():
            clean_row = clean_written.get(key, {})
            holds = {n: theirs.get(v, v) for n, v in clean_row.items() if n in fields[obj]}
            holds |= newest.get(obj, {}).get(key, {})
            diff = [(n, v, ours.get(row.get(n), row.get(n))) for n, v in holds.items()
                    if ours.get(row.get(n), row.get(n)) != v]
            if diff:
                f.wrong += 1
                f.stale += key in touched.get(obj, set())
                f.note(f"{key}: (field, want, got) {diff[:3]}")
    return Reconciliation(out)


def _reasons(letter: DeadLetter) -> set[tuple[str, str]]:
    return {(e["code"], fl) for e in letter.errors for fl in e.get("fields") or [""]}


def _external_keys(records: dict[str, list[dict[str, Any]]], external_id: dict[str, str]) -> dict[Any, str]:
    """Salesforce Id -> "<object>:<external id>", to compare references across two orgs."""
    return {r["Id"]: f"{obj}:{r.get(external_id[obj])}" for obj, rows in records.items() for r in rows}
