"""Chaos: a sync of a generated store through faulty sandboxes while `ferry run` is SIGKILLed and restarted.

Each pair (Shopify -> Salesforce, WooCommerce -> Salesforce, Shopify -> QuickBooks Online: ``pairs.PAIRS``;
the QuickBooks one through ``quickbooks.BooksChaos``, judged against a clean run's books) runs it. The short version
runs with the normal suite; `make chaos` runs the long one (the demo-sized store, more kills) and prints
the figures. Both end with a full reconciliation: nothing lost, nothing duplicated, no
wrong or stale value, no valid record dead-lettered, every invalid record dead-lettered for the right reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from ferry.cli.exits import RUN_FINISHED
from tests.chaos.harness import Chaos, ChaosConfig, ChaosResult
from tests.chaos.quickbooks import BooksChaos, BooksChaosResult


def _check(result: ChaosResult) -> None:
    figures = result.figures()
    print("\nchaos figures:\n" + json.dumps(figures, indent=2))  # `make chaos` shows them (pytest -s)
    out = os.environ.get("FERRY_CHAOS_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    assert len(result.kills) >= result.config.kills, figures
    assert sum(1 for k in result.kills if k.kill_phase.startswith("bulk")) >= result.config.bulk_kills, figures
    assert result.lives[-1].exit_code in RUN_FINISHED and (result.final_run or {}).get("status") == "succeeded", figures
    assert sum(result.faults.values()) > 0, "no fault was injected: the run proves nothing"
    assert result.faults.get("salesforce:session_expired", 0) > 0, result.faults
    r = result.reconciliation
    for name in ("lost", "duplicated", "extra", "wrong", "stale", "wrongly_dead_lettered"):
        assert r.total(name) == 0, (name, r.problems(), figures)
    assert r.total("invalid") > 0, "the store has no invalid record: the reasons are not tested"
    assert r.total("invalid_right_reason") == r.total("invalid"), (r.problems(), figures)
    assert result.bulk_reuploads == 0, figures
    # Kills land anywhere, calls in flight included: the ledger (a call counted before it is sent) never
    # holds fewer Salesforce calls than the org counted.
    assert result.ledger_calls >= result.api_calls["salesforce"] > 0, figures
    assert result.resume_seconds(), "no restart after a kill was timed"


# The short version of each pair (in `make test`). Shopify's is the original one; WooCommerce's is smaller
# (3+ kills, one of them during a Bulk job) so that both together stay within ~1.5x of Shopify's alone.
SHORT = {
    # A small store makes few API calls (~60 with Bulk): the session expires every 25 of them, not 500, to be
    # seen at all.
    "shopify": ChaosConfig(
        pair="shopify",
        seed=3,
        customers=80,
        products=15,
        orders=160,
        kills=10,
        bulk_kills=2,
        max_seconds=200,
        page_size=20,
        bulk_threshold=100,  # Order and OrderItem go through Bulk API 2.0
        bulk_queue_seconds=0.8,
        expire_session_every=25,
    ),
    "woocommerce": ChaosConfig(
        pair="woocommerce",
        seed=3,
        customers=30,
        products=8,
        orders=60,
        kills=2,  # at random, plus at least one while a Bulk job is in flight (a life of its own if need be)
        bulk_kills=1,
        max_seconds=200,
        page_size=20,
        bulk_threshold=50,  # OrderItem (and Order, once orders are touched) go through Bulk API 2.0
        kill_after=(0.0, 0.8),
        bulk_queue_seconds=0.3,
        bulk_poll_max_interval=0.3,  # a job is looked at every 0.3 s, not after 1 s: the short run's time
        expire_session_every=12,
    ),
}
LONG = {
    "shopify": ChaosConfig(
        pair="shopify",
        seed=13,  # its fault draws include every kind (seed 11's first few hundred calls draw no Shopify timeout)
        customers=1000,
        products=200,
        orders=2000,
        kills=30,
        bulk_kills=5,
        max_lives=200,
        max_seconds=3000,
        page_size=100,
        bulk_threshold=500,  # every object goes through Bulk API 2.0: a kill during a job for each
        kill_after=(0.0, 8.0),
        edits_per_life=2,
        # Bulk API keeps a 10,000-record sync to a few hundred calls: at every 500 calls the session would
        # expire once at most, so it expires every 100 (the figures print both the setting and the calls).
        expire_session_every=100,
    ),
}
LONG["woocommerce"] = dataclasses.replace(LONG["shopify"], pair="woocommerce")


# QuickBooks: kills land at random and while a batch call is in flight (``bulk_kills`` counts those here;
# ``bulk_queue_seconds`` is how soon after the call is seen the kill lands: inside its ~150 ms).
QUICKBOOKS_SHORT = ChaosConfig(
    pair="shopify-to-quickbooks",
    seed=5,
    customers=60,
    products=12,
    orders=150,
    kills=5,
    bulk_kills=3,
    max_seconds=240,
    page_size=20,  # and batches of 10
    kill_after=(0.0, 1.0),
    bulk_queue_seconds=0.12,
)
QUICKBOOKS_LONG = dataclasses.replace(
    QUICKBOOKS_SHORT, seed=13, customers=400, products=80, orders=800, kills=25, bulk_kills=10, max_lives=200,
    max_seconds=3000, page_size=60, kill_after=(0.0, 6.0), edits_per_life=2,
)


def _check_books(result: BooksChaosResult) -> None:
    figures = result.figures()
    print("\nchaos figures:\n" + json.dumps(figures, indent=2))
    out = os.environ.get("FERRY_CHAOS_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    assert len(result.kills) >= result.config.kills, figures
    assert figures["kills_during_batch_call"] >= result.config.bulk_kills, figures
    assert result.lives[-1].exit_code in RUN_FINISHED and (result.final_run or {}).get("status") == "succeeded", figures
    assert result.faults.get("quickbooks:commit_then_reset", 0) > 0, figures
    # Creates committed by a killed life (or whose answer was lost) were found again, not made twice.
    assert result.found_by_source_key + result.found_after_duplicate > 0, figures
    r = result.reconciliation
    for name in ("duplicated", "lost", "extra", "wrong", "letters_differ"):
        assert r.total(name) == 0, (name, r.problems(), figures)
    assert sum(result.dead_letters.values()) > 0, "no record was dead-lettered: the reasons are not compared"
    # The refresh token rotated under the run, the newest is in the token file, and none was ever printed.
    assert result.rotations > 0 and result.token_file_is_newest, figures
    assert result.tokens_in_output == 0 and result.tokens_in_store == 0, figures


@pytest.mark.parametrize("pair", SHORT)
def test_chaos_short(tmp_path: Path, pair: str) -> None:
    with Chaos(tmp_path, SHORT[pair]) as chaos:
        _check(chaos.run())


# Behind -m slow to keep the suite inside its 15 minutes (~45 s here); PostgreSQL's crash safety stays in CI through
# tests/store (contract suite on both backends, a server restart mid-use) and tests/distributed (a SIGKILLed worker).
@pytest.mark.slow
def test_chaos_short_with_state_in_postgresql(tmp_path: Path) -> None:
    """The same short chaos run with the state in PostgreSQL (a server of the test's own): every SIGKILL leaves
    the shared state resumable, the org equals the clean embedded run's. `make chaos` runs it."""
    from ferry.store.postgres import migrate
    from tests.store.postgres_server import start_server

    server = start_server()
    try:
        url = server.fresh_database()
        migrate(url)
        with Chaos(tmp_path, SHORT["shopify"], state_url=url) as chaos:
            _check(chaos.run())
    finally:
        server.cleanup()


def test_chaos_short_quickbooks(tmp_path: Path) -> None:
    with BooksChaos(tmp_path, QUICKBOOKS_SHORT) as chaos:
        _check_books(chaos.run())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_chaos_long_quickbooks(tmp_path: Path) -> None:
    with BooksChaos(tmp_path, QUICKBOOKS_LONG) as chaos:
        _check_books(chaos.run())


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("pair", LONG)
def test_chaos_long(tmp_path: Path, pair: str) -> None:
    with Chaos(tmp_path, LONG[pair]) as chaos:
        _check(chaos.run())
