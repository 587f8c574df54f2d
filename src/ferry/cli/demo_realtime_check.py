"""The realtime demo's last check: the org that ``ferry serve`` kept current equals what a clean batch run of the
final shop makes.

A second Salesforce sandbox starts empty; the same Shopify -> Salesforce pipeline runs once against it (a full
read of the shop as it is now, into a fresh state store). Then each mapped object is compared record by record,
keyed by its external id, field by field over the fields the mapping writes. Ids differ between the two orgs,
so a reference is compared by the external id of the record it points at, and a query constant (the standard
price book) is left out. What differs is listed: a record missing on one side, or a field with two values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ferry.cli.demo import salesforce_env
from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.engine.runner import Runner
from ferry.mapping.spec import QueryExpr, RefExpr
from ferry.store import Store

MAX_LISTED = 10  # differences shown in the report; all are counted


def compare_with_clean_run(pipeline_file: Path, env: Mapping[str, str], live_org: Any, tmp: Path) -> dict[str, Any]:
    """Run ``pipeline_file`` once into a new, empty org sandbox and compare it with ``live_org``."""
    from ferry.sandbox.salesforce import SalesforceSandbox
    from ferry.sandbox.serve import start_in_thread

    clean = SalesforceSandbox(tmp / "clean-org")
    running = start_in_thread(clean.app, tmp / "clean-org")
    store = Store(tmp / "clean.db")
    try:
        info = {**clean.credentials(running.url), "ca_file": str(running.ca_file)}
        spec = load_pipeline(pipeline_file, {**env, **salesforce_env(info)})
        spec = spec.model_copy(update={"webhooks": None, "schedule": None})
        stats = asyncio.run(Runner(spec, store).run())
        if stats.status != "succeeded":
            return {"equal": False, "run": stats.status, "error": stats.error, "differences": -1, "listed": []}
        return {"run": stats.status, **_compare(spec, _Org(live_org), _Org(clean))}
    finally:
        running.stop()
        store.close()


class _Org:
    """An org sandbox's records, read in-process: by object, and each record's external id by its Id."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox

    def rows(self, obj: str) -> list[dict[str, Any]]:
        return org_rows(self.sandbox, obj)


def org_rows(sandbox: Any, obj: str) -> list[dict[str, Any]]:
    """The records of an org sandbox's ``obj`` table, copied while the org's thread serves requests."""
    for _ in range(5):
        try:
            return list(dict(sandbox.state.store.table(obj).rows).values())
        except RuntimeError:  # the org's thread changed the table while it was copied
            continue
    raise RuntimeError(f"could not copy the org's {obj} table")


def _compare(spec: PipelineSpec, live: _Org, clean: _Org) -> dict[str, Any]:
    external = {m.name: m.external_id for m in spec.objects}
    # Each org's Ids -> the external id of the record (per parent object a reference points at).
    ids = {side: {obj: {str(r["Id"]): str(r.get(ext)) for r in org.rows(obj)} for obj, ext in external.items()}
           for side, org in (("live", live), ("clean", clean))}
    differences: list[dict[str, Any]] = []
    per_object: dict[str, dict[str, int]] = {}
    for mapping in spec.objects:
        fields = {name: expr for name, expr in mapping.fields.items() if not isinstance(expr, QueryExpr)}
        live_rows = {str(r.get(mapping.external_id)): r for r in live.rows(mapping.name)}
        clean_rows = {str(r.get(mapping.external_id)): r for r in clean.rows(mapping.name)}
        per_object[mapping.name] = {"live": len(live_rows), "clean": len(clean_rows)}
        for key in sorted(set(live_rows) | set(clean_rows)):
            a, b = live_rows.get(key), clean_rows.get(key)
            if a is None or b is None:
                differences.append({"object": mapping.name, "key": key,
                                    "missing_in": "live org" if a is None else "clean batch run"})
                continue
            for name, expr in fields.items():
                left, right = a.get(name), b.get(name)
                if isinstance(expr, RefExpr):
                    left = ids["live"].get(expr.ref, {}).get(str(left), left)
                    right = ids["clean"].get(expr.ref, {}).get(str(right), right)
                if _value(left) != _value(right):
                    differences.append({"object": mapping.name, "key": key, "field": name,
                                        "live": left, "clean": right})
    return {"equal": not differences, "differences": len(differences), "listed": differences[:MAX_LISTED],
            "records": per_object}


def _value(v: Any) -> Any:
    """Numbers as the org stores them may come back as 12 or 12.0: compared as numbers."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        return float(v)
    return v
