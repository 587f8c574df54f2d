"""The org's API budget: DailyApiRequests counted per API call, the concurrent long-running request limit,
plus per-endpoint stats.

What counts as one of the DailyApiRequests: every authenticated call under /services/data/vXX.X/ (REST,
Collections, Composite as one call, each Composite batch subrequest, every Bulk API 2.0 request: create,
upload, close, poll, results). Not counted: the OAuth token endpoint, the versions list (no session), calls
refused for an invalid session or by the concurrent-request limit, the admin routes, and Bulk processing
itself (it is not a request).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ferry.sandbox.salesforce.errors import ApiError

# Static allocations shown by GET /limits next to the one we really count.
_STATIC_LIMITS: dict[str, int] = {
    "DailyAsyncApexExecutions": 250000, "DailyBulkApiBatches": 15000, "DailyBulkV2QueryFileStorageMB": 976562,
    "DailyBulkV2QueryJobs": 10000, "DailyDurableStreamingApiEvents": 1000000,
    "DailyStandardVolumePlatformEvents": 50000,
    "DataStorageMB": 1024, "FileStorageMB": 1024, "DurableStreamingApiConcurrentClients": 1000,
    "HourlyPublishedPlatformEvents": 250000, "MassEmail": 5000, "SingleEmail": 5000,
    "ConcurrentAsyncGetReportInstances": 200, "HourlyTimeBasedWorkflow": 1000,
    # The next ones as in the documented example body of GET /limits (REST API guide, "List Org Limits").
    "ConcurrentSyncReportRuns": 20, "DailyDurableGenericStreamingApiEvents": 10000,
    "DailyGenericStreamingApiEvents": 10000, "DailyStreamingApiEvents": 10000, "DailyWorkflowEmails": 390,
}

DEFAULT_CONCURRENT_LIMIT = 25  # production orgs and sandboxes; Developer Edition and Trial orgs: 5
LONG_RUNNING_SECONDS = 20.0
CONCURRENT_MESSAGE = "ConcurrentRequests (Concurrent API Requests) Limit exceeded."


class LongRunningGate:
    """The org-wide limit on concurrent long-running requests.

    A request is long-running once it has run `threshold` seconds (20 s on an org). While `limit` of them are
    running, the org refuses every new request with 403 REQUEST_LIMIT_EXCEEDED; requests shorter than the
    threshold are not limited at all.
    """

    def __init__(self, limit: int = DEFAULT_CONCURRENT_LIMIT, threshold: float = LONG_RUNNING_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or threshold <= 0:
            raise ValueError("the concurrent long-running limit needs limit >= 1 and threshold > 0")
        self.limit = limit
        self.threshold = threshold
        self._clock = clock
        self._started: dict[int, float] = {}
        self._tickets = itertools.count()
        self.refused = 0
        self.peak_long_running = 0

    def enter(self) -> int:
        ticket = next(self._tickets)
        self._started[ticket] = self._clock()
        return ticket

    def leave(self, ticket: int) -> None:
        self._started.pop(ticket, None)

    def long_running(self) -> int:
        cutoff = self._clock() - self.threshold
        return sum(1 for started in self._started.values() if started <= cutoff)

    def in_flight(self) -> int:
        return len(self._started)

    def check(self) -> None:
        """Refuse a new request the way the org does while `limit` requests run long."""
        running = self.long_running()
        self.peak_long_running = max(self.peak_long_running, running)
        if running >= self.limit:
            self.refused += 1
            raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", CONCURRENT_MESSAGE)


class ApiBudget:
    def __init__(self, daily_max: int, concurrent_limit: int = DEFAULT_CONCURRENT_LIMIT,
                 long_running_seconds: float = LONG_RUNNING_SECONDS) -> None:
        self.max = daily_max
        self.used = 0
        self.by_endpoint: Counter[str] = Counter()
        self.subrequests: Counter[str] = Counter()  # Composite subrequests by endpoint (admin stats only)
        self.bulk_batches = 0
        self.bulk_query_jobs = 0
        self.long_running = LongRunningGate(concurrent_limit, long_running_seconds)

    def charge(self, endpoint: str) -> None:
        """Count one API call, or refuse it the way the org does once the daily allocation is spent."""
        if self.used >= self.max:
            raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.used += 1
        self.by_endpoint[endpoint] += 1

    def header(self) -> str:
        return f"api-usage={self.used}/{self.max}"

    def limits_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"DailyApiRequests": {"Max": self.max, "Remaining": max(self.max - self.used, 0)}}
        for name, value in _STATIC_LIMITS.items():
            used = {"DailyBulkApiBatches": self.bulk_batches, "DailyBulkV2QueryJobs": self.bulk_query_jobs}
            remaining = value - used.get(name, 0)
            body[name] = {"Max": value, "Remaining": max(remaining, 0)}
        return dict(sorted(body.items()))

    def reset(self) -> None:
        self.used = 0
        self.by_endpoint.clear()
        self.subrequests.clear()
        self.bulk_batches = 0
        self.bulk_query_jobs = 0
        self.long_running.refused = 0
