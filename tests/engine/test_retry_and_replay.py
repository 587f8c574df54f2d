"""Retry budget and dead-letter replay against the sandboxes.

* Past its attempt budget a transient error dead-letters the record with every attempt's errors, and
  the run completes.
* `replay` reads the record again from the source, applies the current mapping and writes it; the
  second replay changes nothing.
* Fixing the mapping of a parent and replaying it brings its PARENT_DEAD_LETTERED children along.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ferry.connectors.salesforce.budget import SYSTEM
from ferry.engine.replay import Replayer
from ferry.engine.runner import Runner
from ferry.errors import BudgetExhausted
from ferry.store import LetterFilter, Store
from tests.engine.world import world


async def test_retries_past_the_budget_dead_letter_with_history_then_replay_writes_them(tmp_path: Path) -> None:
    with world(tmp_path, customers=20, products=4, orders=10) as w:
        spec = w.spec(
            w.pipeline_file("budget", lambda s: s.update(retry={"max_attempts": 3, "backoff_max_seconds": 0}))
        )
        store = Store(tmp_path / "ferry.db")
        w.org.faults.configure({"lock_row_rate": 1.0})  # every record save loses its row lock, every time
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        exhausted = store.find_dead_letters(LetterFilter(pipeline="budget", code="RETRIES_EXHAUSTED"), 10_000)
        accounts = [d for d in exhausted if d.object == "Account"]
        assert accounts, "no Account ran out of retries"
        for d in accounts:
            assert [h["attempt"] for h in d.history] == [1, 2, 3], d.history
            assert all(h["errors"][0]["code"] == "UNABLE_TO_LOCK_ROW" for h in d.history)
            assert d.attempts == 3 and "gave up after 3 attempts" in d.message
            assert d.stream in ("customers", "orders") and d.source_key
        assert not w.keys("Account"), "a record was written although every save failed"

        w.org.faults.clear()
        used, counted = w.org.state.budget.used, _ledger(store)
        report = await Replayer(spec, store).replay(LetterFilter(code="RETRIES_EXHAUSTED"))
        # The replay's calls spend the pipeline's share like a run's: the same ledger counts them all.
        assert _ledger(store) - counted == w.org.state.budget.used - used > 0
        counts = report.counts()
        assert counts.get("replayed", 0) >= len(accounts), counts
        assert all(o.source == "source" for o in report.outcomes), {o.source for o in report.outcomes}
        held = Counter(w.keys("Account"))
        assert {d.record_key for d in accounts} <= set(held) and max(held.values()) == 1
        assert not store.find_dead_letters(LetterFilter(pipeline="budget", code="RETRIES_EXHAUSTED"), 10_000)
        resolved = store.get_dead_letter(accounts[0].id)
        assert resolved is not None and resolved.status == "resolved" and resolved.resolution == "replayed"

        again = await Replayer(spec, store).replay(LetterFilter(ids=[accounts[0].id]))
        assert not again.outcomes and again.skipped == [(accounts[0].id, "already resolved (replayed)")]
        writes = dict(w.org.state.budget.by_endpoint)
        await Replayer(spec, store).replay(LetterFilter(code="RETRIES_EXHAUSTED"))
        assert dict(w.org.state.budget.by_endpoint) == writes, "a second replay called the org"


def _ledger(store: Store) -> int:
    return sum(n for _, n in store.api_call_buckets("budget", SYSTEM, 0))


def _truncate_account_text(spec: dict[str, Any]) -> None:
    account = next(o for o in spec["objects"] if o["name"] == "Account")
    for name, expr in list(account["fields"].items()):
        if name in ("Name", "Phone") or name.startswith("Billing"):
            expr = dict(expr) if isinstance(expr, dict) else {"path": expr}
            expr["on_too_long"] = "truncate"
            account["fields"][name] = expr


async def test_fixing_a_parent_mapping_and_replaying_it_brings_its_children_along(tmp_path: Path) -> None:
    with world(tmp_path, seed=11, customers=120, products=40, orders=300) as w:
        store = Store(tmp_path / "ferry.db")
        stats = await Runner(w.spec(w.pipeline_file("fix")), store).run()
        assert stats.status == "succeeded"
        too_long = store.find_dead_letters(LetterFilter(pipeline="fix", object="Account", code="STRING_TOO_LONG"), 1000)
        assert too_long, "the generated store has no Account with a too-long field"
        orphans = [
            d
            for d in store.find_dead_letters(LetterFilter(pipeline="fix", code="PARENT_DEAD_LETTERED"), 10_000)
            if d.object in ("Contact", "Order")
            and (d.mapped_payload or {}).get("Account.Shopify_Customer_Id__c") in {a.record_key for a in too_long}
        ]
        assert orphans, "no child was dead-lettered because of its Account"

        fixed = w.spec(w.pipeline_file("fix", _truncate_account_text))  # same pipeline, fixed mapping
        dry = await Replayer(fixed, store, dry_run=True).replay(LetterFilter(object="Account", code="STRING_TOO_LONG"))
        assert {o.outcome for o in dry.outcomes if o.object == "Account"} == {"would_replay"}
        assert set(w.keys("Account")).isdisjoint(a.record_key for a in too_long), "a dry run wrote"

        report = await Replayer(fixed, store).replay(LetterFilter(object="Account", code="STRING_TOO_LONG"))
        by_id = {o.letter_id: o for o in report.outcomes}
        assert all(by_id[a.id].outcome == "replayed" for a in too_long), [by_id[a.id] for a in too_long]
        for child in orphans:
            outcome = by_id.get(child.id)
            assert outcome is not None, f"{child.object} {child.record_key} was not brought along"
            assert outcome.as_child_of and outcome.as_child_of.startswith("Account ")
            # A child is written unless it is invalid itself (e.g. a bad email on a Contact).
            assert outcome.outcome in ("replayed", "still_invalid"), outcome
        in_sf = {o: Counter(w.keys(o)) for o in ("Account", "Contact", "Order")}
        assert all(max(c.values()) == 1 for c in in_sf.values()), "replay duplicated a record"
        assert {a.record_key for a in too_long} <= set(in_sf["Account"])
        replayed_orders = [o for o in report.outcomes if o.object == "Order" and o.outcome == "replayed"]
        assert {o.record_key for o in replayed_orders} <= set(in_sf["Order"])
        # Lines of those orders came along too (grandchildren), unless invalid themselves.
        assert any(o.object == "OrderItem" for o in report.outcomes) or not replayed_orders
        assert not store.find_dead_letters(LetterFilter(pipeline="fix", object="Account", code="STRING_TOO_LONG"), 1000)


def _drop_contact_email(spec: dict[str, Any]) -> None:
    contact = next(o for o in spec["objects"] if o["name"] == "Contact")
    del contact["fields"]["Email"]


async def test_replay_falls_back_to_the_stored_payload_when_the_source_lost_the_record(tmp_path: Path) -> None:
    with world(tmp_path, seed=11, customers=200, products=4, orders=20) as w:
        store = Store(tmp_path / "ferry.db")
        assert (await Runner(w.spec(w.pipeline_file("gone")), store).run()).status == "succeeded"
        with_orders = {(o.get("customer") or {}).get("id") for o in w.shop.store.orders}
        letter = next(
            d
            for d in store.find_dead_letters(
                LetterFilter(pipeline="gone", object="Contact", code="INVALID_EMAIL_ADDRESS"), 1000
            )
            if d.stream == "customers" and int(d.record_key) not in with_orders and d.fields == ["Email"]
        )
        with w.shopify() as shop:
            assert shop.delete(f"/customers/{letter.record_key}.json").status_code == 200
            assert shop.get(f"/customers/{letter.record_key}.json").status_code == 404

        fixed = w.spec(w.pipeline_file("gone", _drop_contact_email))
        report = await Replayer(fixed, store).replay(LetterFilter(ids=[letter.id]))
        (outcome,) = report.outcomes
        assert outcome.outcome == "replayed", outcome
        assert outcome.source == f"stored payload (the source no longer has customers {letter.record_key})"
        assert letter.record_key in w.keys("Contact")


class _Phases:
    """What a progress bar is told: each phase with its total, and how far each got."""

    def __init__(self) -> None:
        self.phases: list[list[Any]] = []

    def phase(self, name: str, total: int | None) -> None:
        self.phases.append([name, total, 0])

    def advance(self, n: int) -> None:
        self.phases[-1][2] += n


def _employees_from_text(spec: dict[str, Any]) -> None:
    account = next(o for o in spec["objects"] if o["name"] == "Account")
    account["fields"]["NumberOfEmployees"] = {"template": "n{key}"}  # text into an int: every Account fails


async def test_replay_reads_the_source_in_batches_and_writes_through_the_run_planner(tmp_path: Path) -> None:
    with world(tmp_path, seed=4, customers=700, products=10, orders=300) as w:
        store = Store(tmp_path / "ferry.db")
        # `ferry plan` sees the template cannot fill an int field; forced, the run dead-letters every Account.
        stats = await Runner(w.spec(w.pipeline_file("batch", _employees_from_text)), store, force=True).run()
        assert stats.status == "succeeded", stats.error
        letters = store.find_dead_letters(LetterFilter(pipeline="batch"), 100_000)
        accounts = [d for d in letters if d.object == "Account"]
        assert len(accounts) == stats.objects["Account"].read > 700 and not w.keys("Account")

        fixed = w.spec(w.pipeline_file("batch"))  # the mapping fixed: NumberOfEmployees no longer mapped
        before, calls = dict(w.shop.stats.by_endpoint), dict(w.org.state.budget.by_endpoint)
        progress = _Phases()
        report = await Replayer(fixed, store, progress=progress).replay(LetterFilter(object="Account"))

        # Every letter (the Accounts and, brought along, their children) is accounted for, none left open
        # but the ones still invalid on their own.
        open_left = store.find_dead_letters(LetterFilter(pipeline="batch"), 100_000)
        assert {o.letter_id for o in report.outcomes} | {d.id for d in open_left} >= {d.id for d in letters}
        by_outcome = Counter(o.outcome for o in report.outcomes if o.object == "Account")
        assert set(by_outcome) <= {"replayed", "still_invalid"} and by_outcome["replayed"] > 0.9 * len(accounts)
        replayed = [o.record_key for o in report.outcomes if o.object == "Account" and o.outcome == "replayed"]
        assert Counter(w.keys("Account")) == Counter(replayed)  # each once
        # The source was read by ids, a page of 250 at a time: a few calls, not one per letter.
        source_calls = {k: n - before.get(k, 0) for k, n in w.shop.stats.by_endpoint.items() if n != before.get(k)}
        assert all("{id}" not in k for k in source_calls), source_calls
        streams = {d.stream for d in letters if d.stream}
        assert sum(source_calls.values()) <= sum(
            -(-len({d.source_key for d in letters if d.stream == s}) // 250) for s in streams
        ), source_calls
        # Written as a run writes them: Composite (1,000 records a call) for the Accounts, never a Bulk job.
        writes = {k: n - calls.get(k, 0) for k, n in w.org.state.budget.by_endpoint.items() if n != calls.get(k)}
        assert "POST /services/data/vXX.X/composite" in writes and not any("jobs/ingest" in k for k in writes)
        assert progress.phases[0][0].startswith("replay Account (composite)")
        assert all(total == done for _, total, done in progress.phases), progress.phases
        summary = {(obj, outcome): n for obj, outcome, _, n in report.summary()}
        assert summary[("Account", "replayed")] == len(replayed)


async def test_a_replay_stopped_by_the_budget_raises_the_budget_error_itself(tmp_path: Path) -> None:
    """Objects and batches are replayed in task groups: a write refused by the API budget reaches the caller as
    BudgetExhausted (`ferry dlq replay` exits 5, try later), not as an ExceptionGroup, and what was written is
    recorded."""
    with world(tmp_path, seed=4, customers=40, products=4, orders=30) as w:
        store = Store(tmp_path / "ferry.db")
        used = w.org.state.budget.used
        stats = await Runner(w.spec(w.pipeline_file("budget", _employees_from_text)), store, force=True).run()
        assert stats.objects["Account"].dead_lettered == stats.objects["Account"].read > 0
        run_calls = w.org.state.budget.used - used
        # The run's calls, the replay's describes (one Composite) and one write: the next write is refused.
        share = run_calls + 2
        fixed = w.spec(w.pipeline_file("budget", lambda s: s["target"].update(api_budget=share)))
        with pytest.raises(BudgetExhausted):
            await Replayer(fixed, store).replay(LetterFilter())
        assert w.org.state.budget.used - used <= share
        resolved = store.find_dead_letters(LetterFilter(pipeline="budget", status="resolved"), 100_000)
        landed = {o: set(w.keys(o)) for o in ("Account", "Contact", "Order", "OrderItem")}
        assert all(d.record_key in landed[d.object] for d in resolved)  # recorded as resolved = written


async def test_a_two_way_pipeline_s_replayed_writes_are_remembered_for_echo_suppression(tmp_path: Path) -> None:
    # A replayed write comes back through the other direction like any other: its digest is kept, so that
    # echo is dropped instead of written again (engine/twoway.py).
    def broken(spec: dict[str, Any]) -> None:
        _employees_from_text(spec)
        spec["two_way"] = {"conflict": "source_wins"}

    with world(tmp_path, seed=4, customers=12, products=2, orders=2) as w:
        store = Store(tmp_path / "ferry.db")
        stats = await Runner(w.spec(w.pipeline_file("tw", broken)), store, force=True).run()
        assert stats.status == "succeeded", stats.error
        assert not w.keys("Account")  # every Account a dead letter
        fixed = w.spec(w.pipeline_file("tw", lambda s: s.update(two_way={"conflict": "source_wins"})))
        report = await Replayer(fixed, store).replay(LetterFilter(object="Account"))
        replayed = [o.record_key for o in report.outcomes if o.object == "Account" and o.outcome == "replayed"]
        assert replayed and set(store.written_digests("tw", "Account", replayed)) == set(replayed)
