"""The strategy of a load over workers (``choose_for_workers``): direct batches that spread over the workers, a
remote job only when the pipeline forces one or the budget cannot pay for the direct calls. The costs are the
Salesforce sink's own (its planner, ``connectors/salesforce/planner.py``), for the record counts of a backfill."""

from __future__ import annotations

from typing import Any

from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.planner import WritePlanner
from ferry.core.writes import WriteCost
from ferry.engine.distjobs import choose_for_workers


class _Costs:
    """What ``choose_for_workers`` asks of a sink: its costs for n records and the budget left."""

    def __init__(self, config: SalesforceConfig, left: int | None) -> None:
        self.config = config
        self.left = left

    def write_costs(self, obj: str, count: int) -> list[WriteCost]:
        return WritePlanner(self.config).costs(obj, count)

    def budget_left(self) -> int | None:
        return self.left


def _config(**extra: Any) -> SalesforceConfig:
    return SalesforceConfig.model_validate({
        "system": "salesforce", "login_url": "https://login.example", "client_id": "x", "username": "u@example.com",
        "private_key_file": "/dev/null", **extra,
    })


def test_a_backfill_is_spread_over_workers_although_a_job_takes_fewer_calls() -> None:
    choice = choose_for_workers(_Costs(_config(), None), "OrderItem", 30_000)  # type: ignore[arg-type]
    assert (choice.strategy, choice.remote_job) == ("composite", False)
    assert "instead of one bulk job" in choice.reason


def test_bulk_threshold_makes_it_one_job() -> None:
    choice = choose_for_workers(_Costs(_config(bulk_threshold=100), None), "OrderItem", 300)  # type: ignore[arg-type]
    assert (choice.strategy, choice.remote_job) == ("bulk", True)


def test_a_budget_too_small_for_the_direct_calls_makes_it_one_job() -> None:
    choice = choose_for_workers(_Costs(_config(), 12), "OrderItem", 30_000)  # type: ignore[arg-type]
    assert (choice.strategy, choice.remote_job) == ("bulk", True)
