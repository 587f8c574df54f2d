"""The distributed load row by row (engine/distflow.py), against the sandboxes over HTTP with a `ferry worker`:
a child row goes out as soon as the parent rows it references are written, not after its parents' whole
objects, and never before its own parents. One Account's write is held up 4 s in the org (a latency fault on
the one call that carries it): the Contacts and Orders of every other customer are written meanwhile, the held
customer's own Contact and Orders only after it."""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ferry.cli.exits import RUN_FINISHED
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.store.postgres import migrate
from tests.bus.natsserver import NatsServer
from tests.distributed.test_workers import (
    EXAMPLE,
    _assert_drained,
    _distributed_env,
    _ferry,
    _once_per_key,
    _start_workers,
    _stop,
)
from tests.store.postgres_server import PostgresServer
from tests.store.test_postgres_e2e import _org

HELD_SECONDS = 4.0


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("shop")
    proc = start_sandbox("shopify", state, ["--customers", "40", "--products", "8", "--orders", "80", "--seed", "11"])
    yield proc
    proc.stop()


def _tls(proc: SandboxProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proc.info["ca_file"]))


def _a_customer_with_orders(shop: SandboxProcess) -> str:
    """A customer id of the shop with at least one order (read from the Shopify sandbox's REST Admin API)."""
    with httpx.Client(verify=_tls(shop), timeout=30) as http:
        reply = http.get(f"{shop.url}/admin/api/2026-10/orders.json", params={"limit": 250, "status": "any"},
                         headers={"X-Shopify-Access-Token": str(shop.info["access_token"])})
        reply.raise_for_status()
    ids = [str(o["customer"]["id"]) for o in reply.json()["orders"] if o.get("customer")]
    assert ids, "the seeded shop has orders of customers"
    return ids[0]


def _recorded(url: str) -> dict[tuple[str, str], str]:
    """When each written row's answer was recorded (the version map's stamp, by the worker that wrote it)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT object, key, updated_at FROM versions WHERE target_id IS NOT NULL").fetchall()
    return {(obj, key): str(at) for obj, key, at in rows}


def _payload_refs(org: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, str, str]]:
    """(child object, child key, parent object, parent key) for every Contact and Order (``_org`` gives each
    reference as the external id of the record it points at)."""
    refs = [("Contact", c["Shopify_Customer_Id__c"], "Account", c["AccountId"]) for c in org["Contact"]]
    return refs + [("Order", o["Shopify_Order_Id__c"], "Account", o["AccountId"]) for o in org["Order"]]


@pytest.mark.timeout(300)
def test_children_go_as_their_own_parents_are_written_not_after_the_whole_parent_object(
    small_shop: SandboxProcess, pg_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    held = _a_customer_with_orders(small_shop)
    url = pg_server.fresh_database()
    migrate(url)
    org = start_sandbox("salesforce", tmp_path / "org")
    try:
        # The first call carrying the held customer's id is its Account's (its children wait for it): 4 s late.
        with httpx.Client(verify=_tls(org), timeout=30) as http:
            http.post(f"{org.url}/__sandbox/faults", json={"rules": [
                {"kind": "latency", "latency_ms": int(HELD_SECONDS * 1000), "body": held, "count": 1}]}
            ).raise_for_status()
        env = {**_distributed_env(small_shop, org, url, nats_server, tmp_path / "home"), "FERRY_WORK_BATCH": "10"}
        workers = _start_workers(1, env, tmp_path)
        try:
            run = _ferry(["run", str(EXAMPLE), "--json"], env)
            assert run.returncode in RUN_FINISHED, run.stderr[-3000:]
            assert _stop(workers) == [0]
        finally:
            _stop(workers)
        with httpx.Client(verify=_tls(org), timeout=30) as http:
            assert http.get(f"{org.url}/__sandbox/faults").json()["injected"] == {"latency": 1}
        got = _org(org)
    finally:
        org.stop()
    _once_per_key(got)
    _assert_drained(url)
    recorded = _recorded(url)
    refs = _payload_refs(got)
    # Never before its own parent: each child's answer is recorded after its Account's.
    early = [(c, k) for c, k, p, pk in refs if recorded[(c, k)] <= recorded[(p, pk)]]
    assert not early, early[:5]
    # Not after the whole parent object: the other customers' children were written while one Account was held.
    held_at = recorded[("Account", held)]
    meanwhile = [(c, k) for c, k, p, pk in refs if pk != held and recorded[(c, k)] < held_at]
    assert len(meanwhile) >= 10, (held_at, sorted(recorded.values())[:3])
    own = [(c, k) for c, k, p, pk in refs if pk == held]
    assert own and all(recorded[(c, k)] > held_at for c, k in own)


if __name__ == "__main__":
    sys.exit(pytest.main([os.fspath(Path(__file__)), "-q"]))
