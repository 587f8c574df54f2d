"""The distributed flow's look at parent rows (engine/distflow.py) against a real PostgreSQL outbox: a child row
goes out once the parent rows it references have left the outbox, and a look asks about a bounded number of
parent keys (the parent rows handed to the workers, in turn), not about every key a child waits on. The run
side (``FlowHost``) is a stand-in for the coordinator: it keeps the items it is given, and the test answers
them as a worker does (``record_results``), out of order, some only after a wait."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from ferry.core.ports import PlannedRow, Written
from ferry.engine import distflow
from ferry.engine.distflow import LoadFlow
from ferry.engine.plan import ObjectPlan, ParentRef
from ferry.store.postgres import PostgresStore
from tests.store.conftest import pg_server, pg_url

__all__ = ["pg_server", "pg_url"]

PIPELINE = "flow-look"
PARENTS = 300
CHILDREN = 600
EARLIER = 20  # children whose parent key is in no outbox (written by an earlier run): asked about once
BATCH = 20


class AskingStore(PostgresStore):
    """The PostgreSQL store, noting how many keys each ``queued_keys`` asks about (what a look costs) and how
    many items the bus held then."""

    asked: list[tuple[str, int]]
    depths: list[int]
    host: Host

    def queued_keys(self, pipeline: str, obj: str, keys: Sequence[str]) -> dict[str, bool]:
        self.asked.append((obj, len(keys)))
        self.depths.append(self.host.depth)
        return super().queued_keys(pipeline, obj, keys)


@dataclass
class Host:
    """What ``LoadFlow`` asks of its run: items kept in ``items`` for the test's worker."""

    store: Any
    pipeline: str = PIPELINE
    in_flight: int = 50  # what the workers hold at once: more than the Account items (15), no backlog
    items: asyncio.Queue[tuple[str, list[tuple[str, str]]]] = field(default_factory=asyncio.Queue)
    on_bus: dict[str, int] = field(default_factory=dict)
    published_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def strategy(self, plan: ObjectPlan, total: int) -> str:
        return "composite"

    def by_job(self, obj: str) -> bool:
        return False

    def opened(self, plan: ObjectPlan, strategy: str, total: int) -> Any:
        return None

    def closed(self, progress: Any) -> None:
        return None

    async def publish(self, obj: str, strategy: str, rows: Sequence[tuple[str, str]], attempt: int, *,
                      exact: bool) -> None:
        for key, _ in rows:
            self.published_at[(obj, key)] = time.monotonic()
        self.on_bus[obj] = self.on_bus.get(obj, 0) + 1
        await self.items.put((obj, list(rows)))

    async def object_depths(self) -> dict[str, int]:
        self.depth = sum(self.on_bus.values())
        return dict(self.on_bus)

    depth: int = 0  # items on the bus at the last look at it

    def keep_lock(self) -> None:
        return None

    def check_paused(self) -> None:
        return None

    async def finish(self, plan: ObjectPlan, strategy: str) -> int:
        return int(self.store.outbox_count(self.pipeline, plan.name))


def _plan(name: str, parents: list[ParentRef]) -> ObjectPlan:
    # The flow reads a plan's name and parents only (mapping and validation ran when the outbox was filled).
    return ObjectPlan(name, name.lower(), "Ext__c", cast(Any, None), cast(Any, None), parents)


async def _worker(host: Host, store: PostgresStore, answered_at: dict[tuple[str, str], float]) -> None:
    """Answers items as ``ferry worker`` does (written: out of the outbox), in a shuffled order, each after a
    short wait: answers come back out of publication order, as from several workers."""
    rng = random.Random(7)
    while True:
        first = await host.items.get()
        await asyncio.sleep(0.05)
        batch = [first]
        while not host.items.empty():
            batch.append(host.items.get_nowait())
        rng.shuffle(batch)
        for obj, rows in batch:
            written = [Written(key, version, f"id-{key}") for key, version in rows]
            await asyncio.to_thread(store.record_results, PIPELINE, obj, None, written, [], rows)
            now = time.monotonic()
            for key, _ in rows:
                answered_at[(obj, key)] = now
            host.on_bus[obj] -= 1
            await asyncio.sleep(0.1)  # several looks while the parent's items are answered


@dataclass
class Outcome:
    host: Host
    store: AskingStore
    children: list[PlannedRow]
    answered_at: dict[tuple[str, str], float]
    asked_in_flow: int  # looks at Accounts while the Account rows were still in the flow (not settled)


def _flow(pg_url: str, tmp_path: Path, in_flight: int) -> Outcome:
    """300 Accounts and 620 Contacts queued, through the flow with the test's worker answering the items."""
    store = AskingStore(pg_url, lock_dir=tmp_path)
    store.asked, store.depths = [], []
    parent_keys = [f"a{i:04d}" for i in range(PARENTS)]
    store.put_outbox(PIPELINE, "Account", [PlannedRow(k, "1", {"Ext__c": k}) for k in parent_keys])
    children = [PlannedRow(f"c{i:04d}", "1", {"Ext__c": f"c{i:04d}", "Account.Ext__c": parent_keys[i % PARENTS]})
                for i in range(CHILDREN)]
    children += [PlannedRow(f"e{i:04d}", "1", {"Ext__c": f"e{i:04d}", "Account.Ext__c": f"old{i}"})
                 for i in range(EARLIER)]
    store.put_outbox(PIPELINE, "Contact", children)
    plans = [_plan("Account", []), _plan("Contact", [ParentRef("Account", "AccountId", "Account.Ext__c")])]
    host = store.host = Host(store, in_flight=in_flight)
    answered_at: dict[tuple[str, str], float] = {}
    in_flow: list[int] = []

    async def scenario() -> None:
        flow = LoadFlow(host, plans, BATCH, outage_seconds=5.0)
        flow.open(["Account", "Contact"])
        worker = asyncio.create_task(_worker(host, store, answered_at))

        async def settled() -> None:
            await flow.objects["Account"].settled.wait()
            in_flow.append(len(store.asked))

        try:
            await asyncio.gather(flow.run(), settled())
        finally:
            worker.cancel()

    try:
        asyncio.run(scenario())
        assert store.outbox_count(PIPELINE) == 0
    finally:
        store.close()
    return Outcome(host, store, children, answered_at, in_flow[0])


def _children_after_parents(run: Outcome) -> None:
    """Every child went out in the flow (not left to rounds), each after the parent row it references was
    answered."""
    contacts = {k: at for (obj, k), at in run.host.published_at.items() if obj == "Contact"}
    assert len(contacts) == CHILDREN + EARLIER
    early = [r.key for r in run.children[:CHILDREN]
             if contacts[r.key] < run.answered_at[("Account", str(r.payload["Account.Ext__c"]))]]
    assert not early, early[:5]


@pytest.mark.timeout(120)
def test_children_go_once_their_parents_are_answered_and_a_look_asks_a_bounded_number_of_keys(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distflow, "LOOK_KEYS", 50)
    run = _flow(pg_url, tmp_path, in_flight=50)
    _children_after_parents(run)
    # While the Accounts are in the flow, a look asks about the next LOOK_KEYS Account rows handed out (plus,
    # once, the keys of no Account row), not about every Account key the Contacts wait on (300 at first).
    looks = [n for obj, n in run.store.asked[:run.asked_in_flow] if obj == "Account"]
    assert len(looks) >= 3, run.store.asked
    assert max(looks) <= 50 + EARLIER and looks[0] == 50 + EARLIER, looks
    assert max(looks[1:]) <= 50, looks


@pytest.mark.timeout(120)
def test_no_look_at_parents_while_the_bus_holds_a_backlog(pg_url: str, tmp_path: Path) -> None:
    # Workers that hold 3 items at once: the 15 Account items are 5 rounds. No look (rows made ready would
    # only queue behind them) until fewer than BACKLOG_ROUNDS rounds are on the bus; nothing is left to rounds.
    run = _flow(pg_url, tmp_path, in_flight=3)
    _children_after_parents(run)
    assert run.store.depths, "the flow looked at the Accounts"
    assert max(run.store.depths) < distflow.BACKLOG_ROUNDS * 3, run.store.depths
