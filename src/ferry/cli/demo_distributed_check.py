"""The check at the end of `ferry demo --workers N`: every record of the demo store is in the org exactly once, or
in the dead-letter queue with its reason.

What *should* be there comes from the source sandbox itself, not from ferry's state: every raw record of the store
(``/__sandbox/records/<resource>``, outside the API, all of them at once), made canonical by the Shopify
normalizer; an object's expected keys are the keys of the entity it is mapped from (its external id is the key).
What *is* there comes from the org (``/__sandbox/records/<object>``, every row, counted by external id) and from
the shared state's open dead letters of the demo's pipeline. A key expected and found in neither is missing; an
external id on two rows is a duplicate; a key in the org and in an open dead letter at once, or one nobody
expected, is reported too.

The sandbox org's external id fields are unique (as a real org's should be), so a record sent twice cannot become
a second row: the second send is an update (an upsert, harmless), or, had it been sent as an insert, the org
refuses it with DUPLICATE_VALUE. Such a letter is counted as a duplicate too: a second insert was attempted.
"""

from __future__ import annotations

import ssl
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import httpx

from ferry.cli.sandboxes import SandboxProcess
from ferry.connectors.shopify import normalize as shopify_normalize
from ferry.engine.pipeline import PipelineSpec
from ferry.errors import ConfigError, FerryError
from ferry.mapping.spec import PathExpr
from ferry.store import LetterFilter

DUPLICATE_INSERT = "DUPLICATE_VALUE"  # Salesforce's answer to an insert of an external id a row already has


@dataclass(slots=True)
class ObjectCheck:
    expected: int = 0
    landed: int = 0  # expected keys on exactly one or more org rows
    dead_lettered: int = 0  # expected keys in an open dead letter
    duplicates: int = 0  # org rows beyond the first of an external id, and inserts refused as DUPLICATE_VALUE
    missing: int = 0  # expected keys neither in the org nor dead-lettered
    unexpected: int = 0  # org rows or open letters of keys the store does not have
    both: int = 0  # keys in the org and in an open dead letter at once


@dataclass(slots=True)
class OrgCheck:
    objects: dict[str, ObjectCheck] = field(default_factory=dict)
    dead_letter_codes: dict[str, int] = field(default_factory=dict)
    letters_without_reason: int = 0

    def total(self) -> ObjectCheck:
        out = ObjectCheck()
        for o in self.objects.values():
            for f in fields(ObjectCheck):
                setattr(out, f.name, getattr(out, f.name) + getattr(o, f.name))
        return out

    @property
    def problems(self) -> list[str]:
        found = []
        for name, o in self.objects.items():
            if o.duplicates:
                found.append(f"{name}: {o.duplicates} duplicate(s): a second row of an external id, or a second "
                             "insert the org refused")
            if o.missing:
                found.append(f"{name}: {o.missing} record(s) neither in the org nor dead-lettered")
            if o.unexpected:
                found.append(f"{name}: {o.unexpected} row(s) or letter(s) of keys the store does not have")
            if o.both:
                found.append(f"{name}: {o.both} record(s) in the org and in an open dead letter")
        if self.letters_without_reason:
            found.append(f"{self.letters_without_reason} dead letter(s) without a reason")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "objects": {name: asdict(o) for name, o in self.objects.items()},
            "totals": asdict(self.total()),
            "duplicates": self.total().duplicates,
            "missing": self.total().missing,
            "dead_letters": sum(self.dead_letter_codes.values()),
            "dead_letter_codes": self.dead_letter_codes,
        }


def check_org(shop: SandboxProcess, org: SandboxProcess, store: Any, spec: PipelineSpec) -> OrgCheck:
    streams = list(getattr(spec.source, "streams", None) or shopify_normalize.STREAMS)
    expected = expected_keys(_records(shop, streams), spec)
    letters = store.find_dead_letters(LetterFilter(pipeline=spec.name, status="open"), None)
    check = OrgCheck()
    for mapping in spec.objects:
        in_org = _org_keys(org, mapping.name, mapping.external_id)
        lettered = {d.record_key for d in letters if d.object == mapping.name}
        refused = sum(1 for d in letters if d.object == mapping.name and d.error_code == DUPLICATE_INSERT)
        check.objects[mapping.name] = judge(expected[mapping.name], in_org, lettered, refused)
    check.dead_letter_codes = dict(Counter(d.error_code or "(none)" for d in letters).most_common())
    check.letters_without_reason = sum(1 for d in letters if not (d.error_code and d.message))
    return check


def judge(expected: set[str], in_org: Counter[str], lettered: set[str], refused_inserts: int = 0) -> ObjectCheck:
    landed = {k for k in expected if in_org[k] > 0}
    return ObjectCheck(
        expected=len(expected),
        landed=len(landed),
        dead_lettered=len(expected & lettered),
        duplicates=sum(n - 1 for n in in_org.values() if n > 1) + refused_inserts,
        missing=len(expected - landed - lettered),
        unexpected=len(set(in_org) - expected) + len(lettered - expected),
        both=len(landed & lettered),
    )


def expected_keys(raw: dict[str, list[dict[str, Any]]], spec: PipelineSpec) -> dict[str, set[str]]:
    """Per target object, the keys of the canonical records it is mapped from (its external id is the key)."""
    by_entity: dict[str, set[str]] = {}
    for stream, records in raw.items():
        for record in records:
            for entity, canonical in shopify_normalize.normalize(stream, record):
                by_entity.setdefault(entity, set()).add(str(canonical.key))
    out: dict[str, set[str]] = {}
    for mapping in spec.objects:
        expr = mapping.fields[mapping.external_id]
        if not (isinstance(expr, PathExpr) and expr.path == "key"):
            raise ConfigError(f"{mapping.name}: the demo's check needs {mapping.external_id} mapped from key")
        out[mapping.name] = by_entity.get(mapping.from_, set())
    return out


def _client(sandbox: SandboxProcess) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(sandbox.info["ca_file"])), timeout=120)


def _records(shop: SandboxProcess, streams: list[str]) -> dict[str, list[dict[str, Any]]]:
    try:
        return _all_records(shop, streams)
    except httpx.HTTPError as exc:
        raise FerryError(f"the demo's check cannot read the Shopify sandbox's records: {exc}") from None


def _all_records(shop: SandboxProcess, streams: list[str]) -> dict[str, list[dict[str, Any]]]:
    with _client(shop) as client:
        return {s: _json_list(client.get(f"{shop.url}/__sandbox/records/{s}")) for s in streams}


def _org_keys(org: SandboxProcess, obj: str, external_id: str) -> Counter[str]:
    try:
        with _client(org) as client:
            rows = _json_list(client.get(f"{org.url}/__sandbox/records/{obj}"))
    except httpx.HTTPError as exc:
        raise FerryError(f"the demo's check cannot read the org's {obj} records: {exc}") from None
    return Counter(str(r[external_id]) for r in rows if r.get(external_id) not in (None, ""))


def _json_list(response: httpx.Response) -> list[dict[str, Any]]:
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, list):
        raise ConfigError(f"{response.url}: expected a list of records")
    return body
