"""Latency profiles: `SalesforceSandbox(..., latency="real")` answers with the timings of a typical org.

`off` (the default) adds nothing. `real` adds, per API call, a delay that depends on the endpoint and on
how much work the call carried (records in a Collections call, subrequests in a Composite call, bytes in a
Bulk upload), and slows Bulk ingest processing per chunk. Every delay is an `asyncio.sleep`, so the event
loop keeps serving other requests. Each delay is multiplied by a jitter factor in [0.8, 1.2) drawn from a
`random.Random(seed)`, so a run with the same seed and call order sees the same delays.

Where each figure comes from is in docs/sandbox/salesforce.md ("Latency profile").
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

PROFILES = ("off", "real")
JITTER = (0.8, 1.2)


@dataclass(frozen=True)
class Timings:
    """Seconds. Names follow the rows of the docs table."""

    rest: float = 0.0  # one sObject / describe / limits / job status or results call
    collections_call: float = 0.0  # per sObject Collections call
    collections_write_record: float = 0.0  # plus, per record created/updated/upserted/deleted
    collections_read_record: float = 0.0  # plus, per record retrieved
    composite_call: float = 0.0  # per Composite or Composite batch call
    composite_subrequest: float = 0.0  # plus, per subrequest
    query_page: float = 0.0  # per query / queryAll / nextRecordsUrl page
    bulk_create: float = 0.0  # POST jobs/ingest, POST jobs/query
    bulk_upload: float = 0.0  # PUT .../batches
    bulk_upload_per_mb: float = 0.0  # plus, per MB uploaded
    bulk_close: float = 0.0  # PATCH {"state": "UploadComplete" | "Aborted"}
    bulk_queue: float = 0.0  # from UploadComplete until the first chunk starts
    bulk_chunk_10k: float = 0.0  # processing time per 10,000 rows (scaled to the chunk's size)
    bulk_query_base: float = 0.0  # a Bulk query job, from creation until JobComplete
    bulk_query_10k: float = 0.0  # plus, per 10,000 rows of its result


REAL = Timings(
    rest=0.15,
    collections_call=0.2,
    collections_write_record=0.004,
    collections_read_record=0.001,
    composite_call=0.2,
    composite_subrequest=0.05,
    query_page=0.2,
    bulk_create=0.3,
    bulk_upload=0.4,
    bulk_upload_per_mb=0.05,
    bulk_close=0.3,
    bulk_queue=2.0,
    bulk_chunk_10k=1.8,
    bulk_query_base=1.5,
    bulk_query_10k=0.2,
)


class LatencyProfile:
    def __init__(self, name: str = "off", seed: int = 0) -> None:
        if name not in PROFILES:
            raise ValueError(f"unknown latency profile {name!r}: choose one of {', '.join(PROFILES)}")
        self.name = name
        self.timings = REAL if name == "real" else Timings()
        self.enabled = name != "off"
        self._rng = random.Random(seed)

    def _jitter(self, seconds: float) -> float:
        if seconds <= 0:
            return 0.0
        return seconds * self._rng.uniform(*JITTER)

    def call_delay(self, method: str, template: str, request_bytes: int, reply_body: Any) -> float:
        """Seconds to add to one API call, from its route template and what it carried."""
        if not self.enabled:
            return 0.0
        return self._jitter(self.base_delay(method, template, request_bytes, reply_body))

    def base_delay(self, method: str, template: str, request_bytes: int, reply_body: Any) -> float:
        t = self.timings
        parts = template.lower().split("/")
        head = parts[0]
        if head == "composite":
            if len(parts) > 1 and parts[1] == "sobjects":
                n = len(reply_body) if isinstance(reply_body, list) else 0
                per = t.collections_read_record if method == "GET" or (method == "POST" and len(parts) == 3) \
                    else t.collections_write_record
                return t.collections_call + per * n
            subs: Any = None
            if isinstance(reply_body, dict):
                subs = reply_body.get("compositeResponse", reply_body.get("results"))
            return t.composite_call + t.composite_subrequest * (len(subs) if isinstance(subs, list) else 0)
        if head in ("query", "queryall"):
            return t.query_page
        if head == "jobs":
            if method == "POST" and len(parts) == 2:
                return t.bulk_create
            if method == "PUT":
                return t.bulk_upload + t.bulk_upload_per_mb * request_bytes / 1_000_000
            if method == "PATCH":
                return t.bulk_close
        return t.rest

    def bulk_queue_delay(self) -> float:
        return self._jitter(self.timings.bulk_queue) if self.enabled else 0.0

    def bulk_query_delay(self, rows: int) -> float:
        """Seconds a Bulk query job stays InProgress before its result set is JobComplete."""
        if not self.enabled:
            return 0.0
        return self._jitter(self.timings.bulk_query_base + self.timings.bulk_query_10k * rows / 10_000)

    def bulk_chunk_delay(self, rows: int) -> float:
        return self._jitter(self.timings.bulk_chunk_10k * rows / 10_000) if self.enabled else 0.0
