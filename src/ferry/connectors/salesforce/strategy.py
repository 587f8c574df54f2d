"""Salesforce's write APIs, as the sink names them in its write costs (``ferry.core.writes``)."""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    SINGLE = "single"  # one sObject call per record: lowest latency for one record
    COLLECTIONS = "collections"  # sObject Collections, <= 200 records a call
    COMPOSITE = "composite"  # Composite carrying up to 5 Collections subrequests: <= 1,000 records a call
    BULK = "bulk"  # a Bulk API 2.0 ingest job
