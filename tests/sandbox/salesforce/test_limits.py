"""The org's limits as a client meets them: DailyApiRequests accounting, Sforce-Limit-Info, /limits, and the
concurrent long-running request limit."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceRefusedRequest

from .conftest import Org, start_org

API = "/services/data/v62.0"


def http(org: Org, **kwargs: object) -> httpx.Client:
    token = org.token().json()["access_token"]
    return httpx.Client(base_url=org.url, verify=ssl.create_default_context(cafile=str(org.running.ca_file)),
                        headers={"Authorization": f"Bearer {token}"}, **kwargs)  # type: ignore[arg-type]


def used(org: Org) -> int:
    return int(org.admin("stats")["daily_api_requests"]["used"])


def test_what_counts_as_an_api_request(org: Org, sf: Salesforce) -> None:
    with http(org) as c:
        before = used(org)
        assert c.get("/services/data/").status_code == 200  # versions: no session, not counted
        org.token()  # OAuth: not counted
        assert c.get(f"{API}/sobjects/Account/001000000000000AAA").status_code == 404  # errors count
        assert used(org) == before + 1
        job = c.post(f"{API}/jobs/ingest", json={"object": "Account", "operation": "insert"}).json()
        c.put(f"{API}/jobs/ingest/{job['id']}/batches", content=b"Name\nA\nB\n", headers={"Content-Type": "text/csv"})
        c.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
        for _ in range(100):
            if c.get(f"{API}/jobs/ingest/{job['id']}").json()["state"] == "JobComplete":
                break
            time.sleep(0.05)
        results = c.get(f"{API}/jobs/ingest/{job['id']}/successfulResults")
        polls = used(org) - before - 1 - 4  # create, upload, close, results
        assert polls >= 1  # every Bulk request counts, each poll too
        batch = c.post(f"{API}/composite/batch", json={"batchRequests": [
            {"method": "GET", "url": "v62.0/limits"}, {"method": "GET", "url": "v62.0/sobjects"}]})
        assert batch.status_code == 200
        composite = c.post(f"{API}/composite", json={"compositeRequest": [
            {"method": "GET", "url": f"{API}/limits", "referenceId": "a"},
            {"method": "GET", "url": f"{API}/sobjects", "referenceId": "b"}]})
        assert composite.status_code == 200
        # composite/batch: the call plus each subrequest; composite: one call for the whole series
        assert used(org) == before + 1 + 4 + polls + 3 + 1
        # every REST response carries the usage, Bulk CSV results and errors too
        assert results.headers["content-type"].startswith("text/csv")
        for response in (results, batch, composite):
            assert response.headers["sforce-limit-info"].startswith("api-usage=")
        last = c.get(f"{API}/limits")
        assert last.headers["sforce-limit-info"] == f"api-usage={used(org)}/1000000"


def test_limits_resource_shape(org: Org, sf: Salesforce) -> None:
    limits = sf.limits()
    for name in ("DailyApiRequests", "DailyBulkApiBatches", "DailyBulkV2QueryJobs", "DailyBulkV2QueryFileStorageMB",
                 "ConcurrentAsyncGetReportInstances", "ConcurrentSyncReportRuns", "DataStorageMB",
                 "DailyDurableStreamingApiEvents"):
        assert set(limits[name]) == {"Max", "Remaining"}, name
    assert list(limits) == sorted(limits)
    jobs = limits["DailyBulkV2QueryJobs"]["Remaining"]
    list(sf.bulk2.Account.query("SELECT Id FROM Account"))
    assert sf.limits()["DailyBulkV2QueryJobs"]["Remaining"] == jobs - 1


@pytest.fixture
def small_org(tmp_path: Path) -> Iterator[Org]:
    yield from start_org(tmp_path, concurrent_long_running_limit=2, long_running_seconds=0.4)


def test_concurrent_long_running_limit(small_org: Org) -> None:
    org = small_org
    sf = org.client()
    # Two calls that run long: held 2.5 s by a timeout fault (then dropped).
    org.sandbox.faults.configure({"rules": [{"kind": "timeout", "path": "limits", "count": 2, "hold_seconds": 2.5}]})
    outcomes: list[str] = []

    def long_call() -> None:
        with http(org, timeout=10) as c:
            try:
                c.get(f"{API}/limits")
                outcomes.append("answered")
            except httpx.TransportError:
                outcomes.append("dropped")

    threads = [threading.Thread(target=long_call) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2.0
    while org.admin("stats")["concurrent_long_running"]["long_running"] < 2:
        assert time.monotonic() < deadline, "the held calls never became long-running"
        time.sleep(0.05)
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.describe()
    assert exc.value.content == [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                                  "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    for t in threads:
        t.join(10)
    assert outcomes == ["dropped", "dropped"]
    assert sf.describe()["sobjects"]  # below the limit again
    stats = org.admin("stats")["concurrent_long_running"]
    assert stats["refused"] == 1 and stats["peak"] == 2 and stats["limit"] == 2


def test_short_requests_are_not_limited(small_org: Org) -> None:
    org = small_org
    statuses: list[int] = []

    def burst() -> None:
        with http(org, timeout=10) as c:
            statuses.extend(c.get(f"{API}/limits").status_code for _ in range(5))

    threads = [threading.Thread(target=burst) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 30
