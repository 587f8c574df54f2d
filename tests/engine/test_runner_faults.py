"""The engine against a misbehaving org: lock errors, 5xx, 429 and an expiring session change nothing in the outcome.

A clean run and a faulty run of the same store must end with the same records in Salesforce and the
same dead letters; no transient error may end up in the dead-letter queue.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import demo_env
from ferry.engine.pipeline import load_pipeline
from ferry.engine.runner import Runner
from ferry.engine.stats import RunStats
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox, generate_store
from ferry.store import LetterFilter, Store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"
OBJECTS = ("Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem")
EXT_IDS = {
    "Account": "Shopify_Customer_Id__c",
    "Contact": "Shopify_Customer_Id__c",
    "Product2": "Shopify_Product_Id__c",
    "PricebookEntry": "Shopify_Variant_Id__c",
    "Order": "Shopify_Order_Id__c",
    "OrderItem": "Shopify_Line_Item_Id__c",
}
TRANSIENT_CODES = {
    "UNABLE_TO_LOCK_ROW",
    "SERVER_UNAVAILABLE",
    "UNKNOWN_EXCEPTION",
    "REQUEST_LIMIT_EXCEEDED",
    "RETRIES_EXHAUSTED",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShopifySandbox, RunningSandbox]]:
    state = tmp_path_factory.mktemp("shop")
    sandbox = ShopifySandbox(state, store=generate_store(seed=5, customers=80, products=25, orders=300))
    running = start_in_thread(sandbox.app, state)
    yield sandbox, running
    running.stop()


async def _sync(
    shop: tuple[ShopifySandbox, RunningSandbox], state: Path, faults: dict[str, Any] | None, ttl: float
) -> tuple[RunStats, dict[str, set[str]], Store, str, int]:
    shop_sb, shop_run = shop
    org_sb = SalesforceSandbox(state, session_ttl_seconds=ttl)
    if faults:
        org_sb.faults.configure(faults)
    org_run = start_in_thread(org_sb.app, state)
    try:
        env = demo_env(
            {**shop_sb.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)},
            {**org_sb.credentials(org_run.url), "ca_file": str(org_run.ca_file)},
        )
        spec = load_pipeline(EXAMPLE, env)
        # Bulk for OrderItem, Collections for the rest: faults hit both paths.
        spec = spec.model_copy(update={"target": spec.target.model_copy(update={"bulk_threshold": 500})})
        store = Store(state / "ferry.db")
        stats = await Runner(spec, store).run()
        ctx = ssl.create_default_context(cafile=str(org_run.ca_file))
        held = {}
        async with httpx.AsyncClient(verify=ctx) as client:
            for obj in OBJECTS:
                rows = (await client.get(f"{org_run.url}/__sandbox/records/{obj}")).json()
                keys = [r[EXT_IDS[obj]] for r in rows if r.get(EXT_IDS[obj])]
                assert len(keys) == len(set(keys)), f"{obj}: duplicated external ids"
                held[obj] = set(keys)
        return stats, held, store, spec.name, sum(org_sb.faults.injected.values())
    finally:
        org_run.stop()


async def test_faults_change_nothing_in_the_outcome(
    shop: tuple[ShopifySandbox, RunningSandbox], tmp_path: Path
) -> None:
    clean_stats, clean_held, clean_store, name, _ = await _sync(shop, tmp_path / "clean", None, 7200)
    faults = {
        "seed": 3,
        "lock_row_rate": 0.05,
        "rules": [
            {"status": 503, "rate": 0.15, "path": "composite", "count": 6},
            {"status": 500, "rate": 0.1, "path": "jobs/ingest", "method": "GET", "count": 2},
            {"status": 429, "rate": 1.0, "retry_after": 1, "path": "composite", "count": 1},
        ],
    }
    # A 2 s session expires mid-run; every 401 INVALID_SESSION_ID must be recovered by one re-login.
    faulty_stats, faulty_held, faulty_store, _, fired = await _sync(shop, tmp_path / "faulty", faults, 2.0)

    assert fired >= 3, f"only {fired} call-level faults fired: the test would prove nothing"

    assert faulty_stats.status == "succeeded", faulty_stats.error
    # Locked rows are resent by the sink itself (smaller serial batches) or by the runner's next attempt.
    assert sum(s.retried for s in faulty_stats.objects.values()) > 0 or sum(
        s.api_calls for s in faulty_stats.objects.values()
    ) > sum(s.api_calls for s in clean_stats.objects.values()), "lock errors were injected but nothing was retried"
    for obj in OBJECTS:
        missing = clean_held[obj] - faulty_held[obj]
        assert not missing, f"{obj}: lost under faults: {sorted(missing)[:10]}"
        assert faulty_held[obj] == clean_held[obj], obj
    letters = faulty_store.find_dead_letters(LetterFilter(pipeline=name), 100_000)
    transient = [(d.object, d.record_key, d.error_code) for d in letters if d.error_code in TRANSIENT_CODES]
    assert not transient, f"transient errors dead-lettered: {transient[:10]}"
    clean = clean_store.find_dead_letters(LetterFilter(pipeline=name), 100_000)
    clean_letters = {(d.object, d.record_key) for d in clean}
    assert {(d.object, d.record_key) for d in letters} == clean_letters
