"""The write planner's choices (the sink's write costs through the engine's choose_write), the budget guard's
arithmetic, api_budget validation, the call gate."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.connectors.salesforce import SalesforceConfig
from ferry.connectors.salesforce.budget import BudgetGuard
from ferry.connectors.salesforce.config import parse_api_budget
from ferry.connectors.salesforce.gate import CallGate
from ferry.connectors.salesforce.planner import WritePlanner
from ferry.connectors.salesforce.strategy import Strategy
from ferry.core.writes import StrategyChoice, choose_write, per_record_write
from ferry.errors import BudgetExhausted


def _cfg(**kw: Any) -> SalesforceConfig:
    base = {"system": "salesforce", "login_url": "https://login.salesforce.com", "client_id": "id",
            "auth": "client_credentials", "client_secret": "s"}
    return SalesforceConfig.model_validate(base | kw)


def _choose(
    cfg: SalesforceConfig, count: int, *, composite_refused: str | None = None, **kw: Any
) -> StrategyChoice:
    return choose_write(WritePlanner(cfg).costs("Contact", count, composite_refused=composite_refused), **kw)


@pytest.mark.parametrize(
    ("count", "kw", "strategy", "calls"),
    [
        (1, {}, Strategy.SINGLE, 1),
        (150, {}, Strategy.COLLECTIONS, 1),
        (1999, {}, Strategy.COMPOSITE, 2),
        (7_000, {}, Strategy.COMPOSITE, 7),  # no threshold: Composite while it is no dearer than Bulk
        (7_001, {}, Strategy.BULK, 7),  # one job: 4 calls (no successfulResults) + 3 polls
        (8_000, {"bulk_success_results": True}, Strategy.COMPOSITE, 8),
        (8_001, {"bulk_success_results": True}, Strategy.BULK, 8),  # 5 calls + 3 polls
        (1401, {"composite": False}, Strategy.BULK, 7),  # Collections would need 8 calls
        (1400, {"composite": False}, Strategy.COLLECTIONS, 7),
        (1999, {"bulk_threshold": 2000}, Strategy.COMPOSITE, 2),
        (2000, {"bulk_threshold": 2000}, Strategy.BULK, 7),
        (100_000, {}, Strategy.BULK, 9),  # 4 + 5 polls: "at most 10 calls per 100,000 records"
        (100_000, {"bulk_success_results": True}, Strategy.BULK, 10),
        (1_000_000, {}, Strategy.BULK, 40),  # two jobs of 500,000: 2 x (5 + 15 polls)
    ],
)
def test_strategy_by_volume(count: int, kw: dict[str, Any], strategy: Strategy, calls: int) -> None:
    choice = _choose(_cfg(**kw), count)
    assert choice.strategy == strategy and choice.estimated_calls == calls
    # The reason says how many records, by what, at how many calls, and why.
    assert f"{count:,} Contact record" in choice.reason and str(calls) in choice.reason
    assert ("fewest API calls" in choice.reason) != ("bulk_threshold" in choice.reason)
    assert choice.remote_job == (strategy is Strategy.BULK)


def test_latency_keeps_a_large_batch_on_rest_unless_the_budget_forbids() -> None:
    cfg = _cfg(bulk_threshold=2000)
    fast = _choose(cfg, 5000, latency_sensitive=True)
    assert fast.strategy == Strategy.COMPOSITE and "latency matters" in fast.reason and "5 calls" in fast.reason
    poor = _choose(cfg, 50_000, latency_sensitive=True, remaining_calls=20)
    assert poor.strategy == Strategy.BULK and "only 20 are left" in poor.reason
    refused = _choose(cfg, 900, composite_refused="LIMIT_EXCEEDED")
    assert refused.strategy == Strategy.COLLECTIONS and "LIMIT_EXCEEDED" in refused.reason
    # Below the threshold REST is the configuration's choice, unless the budget cannot pay for it.
    below = _choose(_cfg(bulk_threshold=100_000), 50_000)
    assert below.strategy == Strategy.COMPOSITE and "< bulk_threshold 100,000" in below.reason
    short = _choose(_cfg(bulk_threshold=100_000), 50_000, remaining_calls=20)
    assert short.strategy == Strategy.BULK and "composite would need 50 API calls but only 20" in short.reason
    assert _choose(cfg, 0).reason == "nothing to write"


def test_retries_and_replays_take_the_cheapest_per_record_strategy() -> None:
    assert per_record_write(WritePlanner(_cfg()).costs("Contact", 900)).strategy == Strategy.COMPOSITE
    assert per_record_write(WritePlanner(_cfg(composite=False)).costs("Contact", 9000)).strategy == Strategy.COLLECTIONS
    assert per_record_write(WritePlanner(_cfg()).costs("Contact", 1)).strategy == Strategy.SINGLE


@pytest.mark.parametrize(("value", "calls", "fraction"), [("20%", None, 0.2), (3000, 3000, None), ("150", 150, None)])
def test_api_budget_parses(value: object, calls: int | None, fraction: float | None) -> None:
    budget = _cfg(api_budget=value).api_budget
    assert budget is not None and budget.calls == calls and budget.fraction == fraction


@pytest.mark.parametrize("value", ["0%", "120%", "lots", 0, -5, True, "12.5"])
def test_bad_api_budget_is_a_clear_error(value: object) -> None:
    with pytest.raises(ValidationError, match="api_budget"):
        _cfg(api_budget=value)


def test_concurrency_may_not_exceed_the_long_running_limit() -> None:
    with pytest.raises(ValidationError, match="Developer Edition"):
        _cfg(max_concurrency=8, long_running_limit=5)
    assert _cfg(long_running_limit=5).max_concurrency == 5  # Developer Edition: the default follows
    assert _cfg().max_concurrency == 10


def test_guard_uses_the_stricter_of_its_share_and_the_org() -> None:
    guard = BudgetGuard(parse_api_budget("10%"), clock=lambda: 1_000_000.0)
    guard.spend()  # the org's allocation is not known yet: the first call may go
    guard.observe((500, 1000))  # others already spent 500; our share is 100
    assert guard.remaining() == 99
    for _ in range(99):
        guard.spend()
    with pytest.raises(BudgetExhausted) as info:
        guard.spend()
    # Every call fell in the minute from 13:46:00; the last of them ages out 24 h after 13:47:00.
    assert info.value.resume_after == "1970-01-13T13:47:00Z"
    assert guard.spent == 100  # the refused call was not counted
    org_full = BudgetGuard(None, clock=lambda: 1_000_000.0)
    org_full.observe((999, 1000))
    org_full.spend()
    with pytest.raises(BudgetExhausted, match="org's daily API allocation") as info:
        org_full.spend()
    assert info.value.resume_after == "1970-01-13T13:46:40Z"  # others' calls unseen: 24 h from now at the latest


def test_resume_time_is_when_enough_of_the_oldest_calls_age_out() -> None:
    now = [1_000_000.0]
    guard = BudgetGuard(parse_api_budget(10), clock=lambda: now[0])
    for i, calls in enumerate((4, 3, 2, 1)):  # 4, 3, 2, 1 calls, 10 minutes apart
        now[0] = 1_000_000.0 + 600 * i
        guard.spend(calls)
    # Full (10 of 10). One more call needs the oldest bucket (4 calls, minute of 13:46) to age out.
    with pytest.raises(BudgetExhausted) as info:
        guard.spend()
    assert info.value.resume_after == "1970-01-13T13:47:00Z"
    # Six at once need the 4 and the 3 (minute of 13:56) gone: 24 h after 13:57.
    assert guard.share_resumes_at(now[0], 6) == (16666 + 10 + 1) * 60 + 86400
    # Once the clock passes the first age-out, the window holds 6 and 4 more fit.
    now[0] = 1_000_020.0 + 86400
    assert guard.remaining() == 4
    guard.spend(4)
    with pytest.raises(BudgetExhausted):
        guard.spend()


async def test_gate_never_admits_more_than_its_limit_and_counts_long_calls() -> None:
    now = [0.0]
    gate = CallGate(3, 3, long_after=20.0, clock=lambda: now[0])
    running = 0
    peak = 0

    async def call() -> None:
        nonlocal running, peak
        await gate.acquire()
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        now[0] += 25.0  # each call "takes" 25 s of the fake clock
        running -= 1
        gate.release(None)

    await asyncio.gather(*(call() for _ in range(10)))
    assert peak == 3 and gate.peak_in_flight == 3 and gate.long_calls == 10 and gate.in_flight == 0
