"""The org's API budget: DailyApiRequests counted per API call, plus per-endpoint stats."""

from __future__ import annotations

from collections import Counter
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
}


class ApiBudget:
    def __init__(self, daily_max: int) -> None:
        self.max = daily_max
        self.used = 0
        self.by_endpoint: Counter[str] = Counter()
        self.bulk_batches = 0

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
            remaining = value - self.bulk_batches if name == "DailyBulkApiBatches" else value
            body[name] = {"Max": value, "Remaining": max(remaining, 0)}
        return dict(sorted(body.items()))

    def reset(self) -> None:
        self.used = 0
        self.by_endpoint.clear()
        self.bulk_batches = 0
