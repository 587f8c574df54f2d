"""A batch run sends an object's ready rows ahead of the rest (engine/overlap.py rules 3 and 4), over the sandboxes.

The example pipeline: Accounts and Contacts come from the customers stream and (guests) from the orders stream.
The customers' Accounts and Contacts must be in the org while the orders are still read; no child may reach the
org before the parent it names; a run killed in the middle of a part is finished by the next, once per record.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.core.contracts import Source
from ferry.engine.intake import Intake
from ferry.engine.loader import Loader
from ferry.engine.runner import Runner
from ferry.store import LetterFilter, Store
from tests.engine.world import EXT_IDS, World, world

REFS = {"Contact": ("AccountId", "Account"), "Order": ("AccountId", "Account"), "OrderItem": ("OrderId", "Order")}


class _Crash(Exception):
    pass


def _org_count(w: World, obj: str) -> int:
    ctx = ssl.create_default_context(cafile=str(w.org_run.ca_file))
    return len(httpx.get(f"{w.org_run.url}/__sandbox/records/{obj}", verify=ctx, timeout=30).json())


def _hold_orders_until(monkeypatch: pytest.MonkeyPatch, w: World, wanted: dict[str, int], seen: dict[str, int],
                       timeout: float = 20.0) -> None:
    """The orders stream's read starts only once the org holds ``wanted`` records per object (or ``timeout``
    passes): a slow orders read, made slow by what the org holds rather than by a guess at how long loads take."""
    read_stream = Intake.read_stream

    async def held(self: Intake, source: Source, stream: str) -> int:
        if stream == "orders":
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                counts = {obj: await asyncio.to_thread(_org_count, w, obj) for obj in wanted}
                seen.update(counts)
                if all(counts[obj] >= n for obj, n in wanted.items()):
                    break
                await asyncio.sleep(0.1)
        return await read_stream(self, source, stream)

    monkeypatch.setattr(Intake, "read_stream", held)


def _by_id(w: World, obj: str) -> dict[str, dict[str, Any]]:
    return {r["Id"]: r for r in w.records(obj)}


def _check_every_record_once_and_children_after_parents(w: World, stats: Any) -> None:
    for obj in EXT_IDS:
        keys = w.keys(obj)
        assert len(keys) == len(set(keys)), f"{obj}: a record was written twice"
        s = stats.objects[obj]
        assert len(keys) == s.written > 0, (obj, len(keys), s)
    for child, (field, parent) in REFS.items():
        parents = _by_id(w, parent)
        for record in w.records(child):
            named = parents[record[field]]
            assert named["CreatedDate"] <= record["CreatedDate"], (child, record[EXT_IDS[child]], parent)


async def test_the_customers_accounts_and_contacts_are_written_while_the_orders_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with world(tmp_path, customers=30, products=4, orders=40, shopify_api="rest") as w:
        registered = 30  # the store's customers: guests are not among them
        seen: dict[str, int] = {}
        # Before: nothing loads until the orders (which bring guests) are read: the hold times out at 0 Accounts.
        _hold_orders_until(monkeypatch, w, {"Account": 1, "Contact": 1}, seen)
        store = Store(tmp_path / "ferry.db")
        stats = await Runner(w.spec(w.pipeline_file("waves")), store).run()
        assert stats.status == "succeeded", stats.error
        assert seen["Account"] > 0 and seen["Contact"] > 0, f"nothing was written while the orders waited: {seen}"
        assert seen["Account"] <= registered  # no guest among them: guests come with the orders
        # The guests' Accounts and Contacts, and the Orders, went after: every object is whole and parents first.
        assert _org_count(w, "Account") > seen["Account"]
        _check_every_record_once_and_children_after_parents(w, stats)
        assert "; then " in stats.objects["Account"].reason, stats.objects["Account"]
        # Rule 4: the registered customers' Orders went beside the guests' Accounts, the guests' Orders after.
        assert "; then " in stats.objects["Order"].reason, stats.objects["Order"]
        letters = store.find_dead_letters(LetterFilter(pipeline="waves"), 10_000)
        # The org never refused a child for want of its parent (what a child sent too early would get); the
        # letters are the mapping's own (too long, required, the orphans of those) as in any run of this store.
        assert letters and not [d for d in letters if "Foreign key external ID" in str(d.errors)]
        assert {d.error_code for d in letters} <= {"STRING_TOO_LONG", "REQUIRED_FIELD_MISSING",
                                                   "INVALID_EMAIL_ADDRESS", "PARENT_DEAD_LETTERED"}, letters
        assert store.outbox_count("waves") == 0


async def test_a_run_killed_in_the_middle_of_a_part_is_finished_by_the_next_once_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with world(tmp_path, customers=30, products=4, orders=40, shopify_api="rest") as w:
        spec = w.spec(w.pipeline_file("killed"))
        store = Store(tmp_path / "ferry.db")
        reconcile = Loader.reconcile
        calls = {"n": 0}

        def dies_on_the_first_account_answer(self: Loader, plan: Any, rows: Any, results: Any, **kw: Any) -> int:
            if plan.name == "Account":
                calls["n"] += 1
                if calls["n"] == 1:
                    raise _Crash("killed with the customers' Accounts in the org, their answers not recorded")
            return reconcile(self, plan, rows, results, **kw)

        with monkeypatch.context() as m:
            m.setattr(Loader, "reconcile", dies_on_the_first_account_answer)
            with pytest.raises(_Crash):
                await Runner(spec, store).run()
        assert store.outbox_count("killed", "Account") > 0
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        for obj in EXT_IDS:
            keys = w.keys(obj)
            assert len(keys) == len(set(keys)) > 0, obj
        assert store.outbox_count("killed") == 0
        # No Account answer was recorded before the kill: the next run wrote (again, by upsert) every one.
        assert len(w.keys("Account")) == stats.objects["Account"].written
