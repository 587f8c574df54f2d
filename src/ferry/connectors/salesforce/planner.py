"""What each Salesforce write API would cost a batch, in API calls, and why, in words a human reads.

The sink offers these as ``WriteCost``s (``SalesforceSink.write_costs``); the engine's planner
(``ferry.core.writes.choose_write``) picks one with the budget left and whether latency matters.
Inputs here: how many records, the pipeline's configuration (``bulk_threshold``, ``composite``) and
whether the org accepts Composite. Costs, in API calls:

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

Bulk is cheapest in calls but slowest to start (a job queues for seconds to minutes): it is a remote job,
so a latency-sensitive batch stays on REST unless the budget forces Bulk. A ``bulk_threshold`` forces Bulk
at that size and REST below it (unless the budget left cannot pay for REST). Calls of the REST paths run in
parallel, up to ``max_concurrency`` in flight (never more than the org's long-running limit).
"""

from __future__ import annotations

import math
from dataclasses import replace

from ferry.connectors.salesforce.composite import RECORDS_PER_CALL
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.strategy import Strategy
from ferry.core.writes import WriteCost

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

    def costs(self, sobject: str, count: int, *, composite_refused: str | None = None) -> list[WriteCost]:
        """Every strategy's cost for ``count`` records of ``sobject``, lowest latency first."""
        if count <= 0:
            return [WriteCost(Strategy.COLLECTIONS, 0, 0, note="nothing to write")]
        size = self.config.collections_batch_size
        rest, _ = self._rest_strategy(count, composite_refused)
        rest_cost = rest_calls(rest, count, size)
        bulk_cost = bulk_calls(count, success_results=self.config.bulk_success_results)
        records = f"{count:,} {sobject} record{'' if count == 1 else 's'}"
        in_flight = f"up to {self.config.max_concurrency} in flight"
        single = WriteCost(
            Strategy.SINGLE, count, count,
            note=f"{records}: "
            + ("one sObject upsert call, the lowest latency" if count == 1 else "one sObject call each"),
        )
        collections_cost = rest_calls(Strategy.COLLECTIONS, count, size)
        collections = WriteCost(
            Strategy.COLLECTIONS, collections_cost, count,
            note=f"{records}: {self._collections_words(count, composite_refused)} "
            f"({_plural(collections_cost, 'call')}, {in_flight})",
        )
        composite_cost = rest_calls(Strategy.COMPOSITE, count, size)
        composite = WriteCost(
            Strategy.COMPOSITE, composite_cost, count,
            note=f"{records}: Composite carrying 5 Collections subrequests (<= {RECORDS_PER_CALL:,} records a call) "
            f"({_plural(composite_cost, 'call')}, {in_flight})",
            unavailable=self._composite_unavailable(composite_refused),
        )
        bulk = WriteCost(
            Strategy.BULK, bulk_cost, count, remote_job=True, per_record=False,
            note=f"{records}: Bulk API 2.0, one job per ~{BULK_JOB_RECORDS_ESTIMATE:,} records "
            f"(~{bulk_cost} API calls with backed-off polls, vs {rest_cost:,} on {rest.value})",
        )
        costs = [single, collections, composite, bulk]
        threshold = self.config.bulk_threshold
        if threshold is not None and count > 1:
            # The configuration decides by size; only the budget (choose_write) may override it.
            if count >= threshold:
                bulk = replace(bulk, forced=f"{count:,} {sobject} records >= bulk_threshold {threshold:,}")
                costs[3] = bulk
            else:
                below = f"{count:,} {sobject} records < bulk_threshold {threshold:,}"
                i = costs.index(composite if rest is Strategy.COMPOSITE else collections)
                costs[i] = replace(costs[i], forced=below)
        return costs

    def _collections_words(self, count: int, composite_refused: str | None) -> str:
        size = self.config.collections_batch_size
        if count <= size:
            return f"sObject Collections (one call of <= {size})"
        why = self._composite_unavailable(composite_refused)
        return f"sObject Collections of <= {size}" + (f" ({why})" if why else "")

    def _composite_unavailable(self, composite_refused: str | None) -> str | None:
        if not self.config.composite:
            return "composite: false in the config"
        if composite_refused:
            return f"Composite refused: {composite_refused}"
        return None

    def _rest_strategy(self, count: int, composite_refused: str | None) -> tuple[Strategy, str]:
        size = self.config.collections_batch_size
        if count <= size or self._composite_unavailable(composite_refused):
            return Strategy.COLLECTIONS, self._collections_words(count, composite_refused)
        return Strategy.COMPOSITE, "Composite"
