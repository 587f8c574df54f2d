"""The write planner: which Salesforce API a batch goes through, and why, in words a human reads.

Inputs: how many records, whether latency matters (a webhook-driven change vs a nightly load), the
calls left in the budget (this pipeline's ``api_budget`` share and the org's ``Sforce-Limit-Info``),
and whether the org accepts Composite. Costs, in API calls:

=================  ===================================  ============================================
strategy           calls for n records                  when
=================  ===================================  ============================================
single             n (one sObject call each)            one record: the lowest latency
collections        ceil(n / 200)                        Composite off or refused, or n <= 200
composite          ceil(n / 1,000) (5 x 200 per call)   below ``bulk_threshold`` (unset: while it
                                                        needs no more calls than Bulk, ~7,000)
bulk               4 for one job (5 a job when several  ``bulk_threshold`` or more (unset: when
                   or ``bulk_success_results``) + 3     fewer calls), or when the budget left
                   polls + 1 per 40,000 (one job per    cannot pay for the REST path
                   100 MB of CSV)
=================  ===================================  ============================================

Bulk is cheapest in calls but slowest to start (a job queues for seconds to minutes), so a
latency-sensitive batch stays on REST unless the budget forces Bulk. Calls of the REST paths run in
parallel, up to ``max_concurrency`` in flight (never more than the org's long-running limit).
"""

from __future__ import annotations

import math

from ferry.connectors.salesforce.composite import RECORDS_PER_CALL
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.strategy import Strategy
from ferry.core.writes import StrategyChoice

COLLECTION_SIZE = 200
BULK_CALLS_PER_JOB = 5  # create, upload, UploadComplete, successfulResults, failedResults (skipped if none failed)
# A stream's only job is answered by its counts (bulk.counts_prove_success), without successfulResults.
BULK_CALLS_ONE_JOB = BULK_CALLS_PER_JOB - 1
BULK_JOB_RECORDS_ESTIMATE = 500_000  # ~100 MB of CSV at ~200 bytes a row
# Polls of one job, as measured with polls aimed at the job's end (bulk_pace.JobPace; bench/RESULTS.md,
# latency real): 3 for 10,000-22,000 records, 5-6 for 100,000, ~15 for 500,000 (the backoff cap rules there).
BULK_POLLS_BASE = 3
BULK_RECORDS_PER_EXTRA_POLL = 40_000


def bulk_polls(records_in_job: int) -> int:
    return BULK_POLLS_BASE + records_in_job // BULK_RECORDS_PER_EXTRA_POLL


def bulk_calls(count: int, *, success_results: bool = False) -> int:
    jobs = max(1, math.ceil(count / BULK_JOB_RECORDS_ESTIMATE))
    per_job = BULK_CALLS_ONE_JOB if jobs == 1 and not success_results else BULK_CALLS_PER_JOB
    return jobs * per_job + sum(bulk_polls(part) for part in _job_sizes(count, jobs))


def _job_sizes(count: int, jobs: int) -> list[int]:
    base, extra = divmod(max(count, 0), jobs)
    return [base + (1 if i < extra else 0) for i in range(jobs)]


def rest_calls(strategy: Strategy, count: int, batch_size: int = COLLECTION_SIZE) -> int:
    if strategy is Strategy.SINGLE:
        return count
    if strategy is Strategy.COMPOSITE:
        return math.ceil(count / RECORDS_PER_CALL)
    return math.ceil(count / batch_size)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


class WritePlanner:
    def __init__(self, config: SalesforceConfig) -> None:
        self.config = config

    def choose(
        self,
        sobject: str,
        count: int,
        *,
        remaining_calls: int | None = None,
        latency_sensitive: bool = False,
        composite_refused: str | None = None,
    ) -> StrategyChoice:
        if count <= 0:
            return StrategyChoice(Strategy.COLLECTIONS, "nothing to write", 0)
        if count == 1:
            return StrategyChoice(
                Strategy.SINGLE, f"1 {sobject} record: one sObject upsert call, the lowest latency", 1
            )
        rest, rest_why = self._rest_strategy(count, composite_refused)
        rest_cost = rest_calls(rest, count, self.config.collections_batch_size)
        bulk_cost = bulk_calls(count, success_results=self.config.bulk_success_results)
        threshold = self.config.bulk_threshold
        budget_note = f"; {_plural(remaining_calls, 'call')} left in the budget" if remaining_calls is not None else ""
        if threshold is not None:
            size_says_bulk = count >= threshold
            size_why = f"{count:,} {sobject} records >= bulk_threshold {threshold:,}"
            rest_size_why = f"{count:,} {sobject} records < bulk_threshold {threshold:,}"
        else:
            size_says_bulk = bulk_cost < rest_cost
            size_why = f"{count:,} {sobject} records: Bulk needs fewer calls than {rest.value}"
            rest_size_why = (
                f"{count:,} {sobject} records: {rest.value} needs no more calls than Bulk and has no job queue"
            )
        if size_says_bulk and not latency_sensitive:
            return StrategyChoice(
                Strategy.BULK,
                f"{size_why}: Bulk API 2.0, one job "
                f"(~{bulk_cost} API calls with backed-off polls, vs {rest_cost:,} on {rest.value}){budget_note}",
                bulk_cost,
            )
        if remaining_calls is not None and rest_cost > remaining_calls and bulk_cost < rest_cost:
            return StrategyChoice(
                Strategy.BULK,
                f"{count:,} {sobject} records: {rest.value} would need {rest_cost:,} API calls but only "
                f"{remaining_calls:,} are left in the budget; Bulk API 2.0 needs ~{bulk_cost}",
                bulk_cost,
            )
        why = rest_why
        if size_says_bulk:
            why += "; not Bulk because latency matters"
            rest_size_why = f"{count:,} {sobject} records"
        return StrategyChoice(
            rest,
            f"{rest_size_why}: {why} "
            f"({_plural(rest_cost, 'call')}, up to {self.config.max_concurrency} in flight){budget_note}",
            rest_cost,
        )

    def _rest_strategy(self, count: int, composite_refused: str | None) -> tuple[Strategy, str]:
        size = self.config.collections_batch_size
        if count <= size:
            return Strategy.COLLECTIONS, f"sObject Collections (one call of <= {size})"
        if not self.config.composite:
            return Strategy.COLLECTIONS, f"sObject Collections of <= {size} (composite: false in the config)"
        if composite_refused:
            return Strategy.COLLECTIONS, f"sObject Collections of <= {size} (Composite refused: {composite_refused})"
        return Strategy.COMPOSITE, (
            f"Composite carrying 5 Collections subrequests (<= {RECORDS_PER_CALL:,} records a call)"
        )
