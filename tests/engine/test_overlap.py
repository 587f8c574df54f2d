"""engine/overlap.py: when each object of a batch run may load, against the Shopify -> Salesforce example's graph.

The steps are timed stand-ins (the order is the schedule's only job; what each step makes durable is the
runner's, proven by tests/engine/test_crash_resume.py and the chaos suite over real sandboxes)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from ferry.connectors.shopify.normalize import STREAM_ENTITIES
from ferry.engine.overlap import Steps, parents_of, read_plan_load, streams_feeding
from ferry.engine.plan import ObjectPlan, ParentRef

STREAMS = ("customers", "products", "orders")
READ_SECONDS = {"customers": 0.02, "products": 0.02, "orders": 0.15}  # orders: the long read (GraphQL refunds)
LOAD_SECONDS = 0.05


def _plan(name: str, entity: str, *parents: str) -> ObjectPlan:
    refs = [ParentRef(p, f"{p}Id", f"{p}.Ext__c") for p in parents]
    return ObjectPlan(name, entity, "Ext__c", cast(Any, None), cast(Any, None), refs)


PLANS = [  # the example pipeline's objects, in its file order
    _plan("Account", "customer"),
    _plan("Contact", "customer", "Account"),
    _plan("Product2", "product_variant"),
    _plan("PricebookEntry", "product_variant", "Product2"),
    _plan("Order", "order", "Account"),
    _plan("OrderItem", "order_line", "Order", "PricebookEntry"),
]


class _Declaring:
    streams = STREAMS

    def stream_entities(self, stream: str) -> Sequence[str]:
        return STREAM_ENTITIES[stream]


class _Silent:
    streams = STREAMS


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []
        self.t0 = asyncio.get_running_loop().time()

    def note(self, what: str) -> None:
        self.events.append((asyncio.get_running_loop().time() - self.t0, what))

    def at(self, what: str) -> float:
        return next(t for t, w in self.events if w == what)

    def steps(self, fail: str | None = None) -> Steps:
        async def read(stream: str) -> None:
            self.note(f"read {stream} start")
            await asyncio.sleep(READ_SECONDS[stream])
            self.note(f"read {stream} end")

        def plan() -> None:
            self.note("plan")

        async def load(plan: ObjectPlan) -> None:
            self.note(f"load {plan.name} start")
            await asyncio.sleep(LOAD_SECONDS)
            if plan.name == fail:
                raise RuntimeError(f"{plan.name} failed")
            self.note(f"load {plan.name} end")

        return Steps(read, plan, load)


def _check_parents_first(log: _Log) -> None:
    for child, parents in parents_of(PLANS).items():
        for parent in parents:
            assert log.at(f"load {parent} end") <= log.at(f"load {child} start"), (parent, child)


async def test_an_object_loads_once_its_streams_are_read_while_other_streams_are_read() -> None:
    log = _Log()
    feeding = streams_feeding(cast(Any, _Declaring()), PLANS)
    assert feeding["Product2"] == {"products"} and feeding["Account"] == {"customers", "orders"}
    await read_plan_load(STREAMS, PLANS, feeding, log.steps())

    orders_read = log.at("read orders end")
    # Products and their price book entries are written while the orders are still being read...
    assert log.at("load Product2 start") < log.at("load PricebookEntry end") < orders_read
    # ...but customers also come from orders (guests): Accounts wait for that read and its plan.
    assert log.at("load Account start") >= orders_read
    _check_parents_first(log)
    # Every load starts after a plan that followed the reads of its streams.
    plans = [t for t, w in log.events if w == "plan"]
    for p in PLANS:
        read_end = max(log.at(f"read {s} end") for s in feeding[p.name])
        assert any(read_end <= t <= log.at(f"load {p.name} start") for t in plans), p.name
    # Independent objects load together: Contact and Order both wait for Account only.
    assert abs(log.at("load Contact start") - log.at("load Order start")) < LOAD_SECONDS / 2


async def test_a_source_that_does_not_declare_its_entities_has_every_object_wait_for_every_read() -> None:
    log = _Log()
    feeding = streams_feeding(cast(Any, _Silent()), PLANS)
    assert all(f == set(STREAMS) for f in feeding.values())
    await read_plan_load(STREAMS, PLANS, feeding, log.steps())
    last_read = log.at("read orders end")
    assert all(log.at(f"load {p.name} start") >= last_read for p in PLANS)
    _check_parents_first(log)
    # Still in waves: Account and Product2 at the same time.
    assert abs(log.at("load Account start") - log.at("load Product2 start")) < LOAD_SECONDS / 2


async def test_a_failed_load_stops_the_run_with_its_own_error_and_nothing_after_it_starts() -> None:
    log = _Log()
    feeding = streams_feeding(cast(Any, _Declaring()), PLANS)
    with pytest.raises(RuntimeError, match="Product2 failed"):
        await read_plan_load(STREAMS, PLANS, feeding, log.steps(fail="Product2"))
    started = {w for _, w in log.events}
    assert "load PricebookEntry start" not in started and "load OrderItem start" not in started
    assert "read orders end" not in started  # the read still under way was cancelled


class _Parts(_Log):
    """The steps with ``load_part``: a part is sent for every call (the runner's choice of rows is its own test)."""

    def steps(self, fail: str | None = None) -> Steps:
        base = super().steps(fail)

        def load_part(plan: ObjectPlan, streams: frozenset[str]) -> Any:
            self.note(f"part {plan.name} chosen {'+'.join(sorted(streams))}")
            if plan.name == "OrderItem":
                return None  # the runner finds no row ready (no Order written yet): nothing goes ahead

            async def send() -> None:
                self.note(f"part {plan.name} start")
                await asyncio.sleep(LOAD_SECONDS)
                self.note(f"part {plan.name} end")

            return send()

        return Steps(base.read, base.plan, base.load, load_part)


async def test_an_object_fed_by_several_streams_sends_each_streams_rows_once_that_stream_is_read() -> None:
    log = _Parts()
    feeding = streams_feeding(cast(Any, _Declaring()), PLANS)
    await read_plan_load(STREAMS, PLANS, feeding, log.steps())
    orders_read = log.at("read orders end")
    # Rule 3: the customers stream's Accounts go while the orders are read, then their Contacts (after the
    # Accounts' part: a Contact row is ready only once its Account is written)...
    assert log.at("read customers end") <= log.at("part Account chosen customers")
    assert log.at("part Account end") <= log.at("part Contact chosen customers") < log.at("part Contact end")
    assert log.at("part Contact end") < orders_read
    # ...and the rest of each (the guests the orders bring) after the orders, parts first.
    assert log.at("part Account end") < orders_read <= log.at("load Account start")
    assert log.at("part Contact end") < log.at("load Contact start")
    # Rule 4: Orders whose Account is written go at once, beside the guests' Accounts; the rest of the Orders
    # after every Account; OrderItem (nothing ready) after every Order, the part's included.
    assert orders_read <= log.at("part Order start") < log.at("load Account end")
    assert log.at("load Account end") <= log.at("load Order start")
    assert "part Order chosen customers+orders+products" in {w for _, w in log.events}
    assert max(log.at("part Order end"), log.at("load Order end")) <= log.at("load OrderItem start")
    assert "part OrderItem start" not in {w for _, w in log.events}
    # An object fed by one stream with no parents has no part: it loads whole, as before.
    assert not any(w.startswith(("part Product2", "part Account chosen orders")) for _, w in log.events)
    _check_parents_first(log)


async def test_a_failed_part_stops_the_run_with_its_own_error() -> None:
    log = _Parts()

    def failing(plan: ObjectPlan, streams: frozenset[str]) -> Any:
        async def send() -> None:
            raise RuntimeError(f"part {plan.name} failed")

        return send() if plan.name == "Order" else None

    base = log.steps()
    with pytest.raises(RuntimeError, match="part Order failed"):
        await read_plan_load(STREAMS, PLANS, streams_feeding(cast(Any, _Declaring()), PLANS),
                             Steps(base.read, base.plan, base.load, failing))
    # At once: not after the rest of the Orders has waited for the guests' Accounts.
    assert not {"load Order start", "load OrderItem start"} & {w for _, w in log.events}



class _SlowParentPart(_Log):
    """The runner's judgement in small: an Order part is ready only once the Account part (the customers' Accounts,
    still being sent when the orders' read ends) has ended and written its rows."""

    def steps(self, fail: str | None = None) -> Steps:
        base = super().steps(fail)
        account_part_over = False

        def load_part(plan: ObjectPlan, streams: frozenset[str]) -> Any:
            nonlocal account_part_over
            self.note(f"part {plan.name} chosen")
            if plan.name not in ("Account", "Order") or (plan.name == "Order" and not account_part_over):
                return None  # the runner: a parent owes more than it wrote, no row judged ready

            async def send() -> None:
                nonlocal account_part_over
                self.note(f"part {plan.name} start")
                # The customers' Accounts outlast the orders' read; the Orders' part is a Bulk job, longer still.
                await asyncio.sleep(0.25 if plan.name == "Account" else 3 * LOAD_SECONDS)
                account_part_over = account_part_over or plan.name == "Account"
                self.note(f"part {plan.name} end")

            return send()

        return Steps(base.read, base.plan, base.load, load_part)


async def test_ready_rows_are_judged_again_when_a_parent_part_still_being_sent_ends() -> None:
    log = _SlowParentPart()
    await read_plan_load(STREAMS, PLANS, streams_feeding(cast(Any, _Declaring()), PLANS), log.steps())
    orders_read = log.at("read orders end")
    assert log.at("part Account start") < orders_read < log.at("part Account end")
    # At the orders' end nothing of the Orders was ready (the Account part still in flight): judged again when it
    # ended, the Orders it made ready go at once, beside the guests' Accounts, not after them.
    chosen = [t for t, w in log.events if w == "part Order chosen"]
    assert len(chosen) == 2 and chosen[0] >= orders_read and chosen[1] >= log.at("part Account end")
    assert log.at("part Account end") <= log.at("part Order start") < log.at("load Account end")
    assert log.at("load Account end") <= log.at("load Order start")
    assert max(log.at("part Order end"), log.at("load Order end")) <= log.at("load OrderItem start")
    _check_parents_first(log)


async def test_rows_still_not_ready_after_the_parent_part_ends_go_with_the_whole() -> None:
    """Judged again once per parent part that ends, never in a loop: still nothing ready, the whole goes."""
    log = _Log()
    base = log.steps()
    calls: list[str] = []

    def load_part(plan: ObjectPlan, streams: frozenset[str]) -> Any:
        calls.append(plan.name)
        if plan.name != "Account":
            return None

        async def send() -> None:  # outlasts the orders' read
            log.note("part Account start")
            await asyncio.sleep(0.25)
            log.note("part Account end")

        return send()

    await read_plan_load(STREAMS, PLANS, streams_feeding(cast(Any, _Declaring()), PLANS),
                         Steps(base.read, base.plan, base.load, load_part))
    assert log.at("read orders end") < log.at("part Account end")
    assert calls.count("Order") == 2  # at the orders' end, and once more when the Account part ended
    assert log.at("load Account end") <= log.at("load Order start")
    _check_parents_first(log)

def test_a_declared_entity_list_covers_what_the_shopify_normalizer_yields() -> None:
    """The declaration is what lets Product2 load before the orders are read: it must not miss an entity."""
    import json
    from pathlib import Path

    from ferry.connectors.shopify.normalize import normalize

    fixtures = Path(__file__).resolve().parents[1] / "connectors" / "shopify" / "fixtures"
    seen: dict[str, set[str]] = {s: set() for s in STREAMS}
    for path in sorted(fixtures.glob("*.json")):
        stream = next((s for s in STREAMS if path.name.startswith(s.rstrip("s"))), None)
        if stream is None:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for raw in data if isinstance(data, list) else [data]:
            seen[stream].update(entity for entity, _ in normalize(stream, raw))
    assert seen["orders"] >= {"customer", "order", "order_line", "refund"}  # a guest order is among them
    for stream, entities in seen.items():
        assert entities and entities <= set(STREAM_ENTITIES[stream]), stream


def test_an_object_chooses_its_strategy_against_the_budget_the_ones_loading_alongside_have_not_spent() -> None:
    from ferry.engine.loader import Loader, RetryBudget
    from ferry.engine.stats import RunStats

    class Sink:
        api_calls = {"Account": 4, "Product2": 9}

        def budget_left(self) -> int:
            return 100

    loader = Loader(cast(Any, None), "p", 1, RunStats(run_id=1, pipeline="p"), RetryBudget())
    sink = cast(Any, Sink())
    assert loader._budget_left(sink) == 100
    # Account chose 10 calls and has made 4 since; Product2 chose 3 and has made them all (and more: retries).
    loader._in_flight = {"Account": (10, 0), "Product2": (3, 5)}
    assert loader._budget_left(sink) == 94
    loader._in_flight = {"Account": (200, 0)}
    assert loader._budget_left(sink) == 0
