"""`ferry run --distributed` whose reads and Bulk API 2.0 jobs run on `ferry worker`s (engine/distjobs.py), against
their own PostgreSQL and nats-server and the Shopify and Salesforce sandboxes over HTTP: every stream is read by a
worker (``ReadStream``), Order and OrderItem go through Bulk jobs run by one worker each (``JobLoad``), and the org
ends up equal to an embedded run's of the same pipeline. Then workers are SIGKILLed while they hold a read and
while a Bulk job is open: the read continues from its last staged page, the job is found again by the next worker
and never uploaded a second time, and every record lands once."""

from __future__ import annotations

import itertools
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from ferry.cli.exits import RUN_FINISHED
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.store.postgres import migrate
from ferry.store.postgres.lock import work_holders
from tests.bus.natsserver import NatsServer
from tests.distributed.test_workers import (
    EXAMPLE,
    _assert_drained,
    _distributed_env,
    _ferry,
    _once_per_key,
    _same_org,
    _stop,
)
from tests.store.postgres_server import PostgresServer
from tests.store.test_postgres_e2e import _org

BULK_THRESHOLD = 100  # Order (150) and OrderItem go through Bulk; Account, Contact, Product2... stay direct
SHOP_LATENCY_MS = 150  # each Shopify call: a read of 15 pages of orders takes seconds, long enough to kill in
JOB_LATENCY_MS = 300  # each Bulk ingest call: a job stays open for a second or two


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("shop")
    proc = start_sandbox("shopify", state, ["--customers", "60", "--products", "15", "--orders", "150", "--seed", "7",
                                            "--fault", f"latency:1,ms={SHOP_LATENCY_MS}"])
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example pipeline with Bulk forced from ``BULK_THRESHOLD`` records and pages of 10 source records."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["target"]["bulk_threshold"] = BULK_THRESHOLD
    # REST: a read of many small pages, so a kill lands between two staged pages and the next worker's read is
    # seen to resume (GraphQL, the default since h-gqlselect, reads a stream as one bulk operation and its pages
    # report no resume).
    spec["source"]["api"] = "rest"
    spec["source"]["page_size"] = 10
    path = tmp_path_factory.mktemp("pipeline") / "shopify-to-salesforce.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def expected(shop: SandboxProcess, pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The org and figures of an embedded run of the same pipeline (SQLite, one process, no bus)."""
    tmp = tmp_path_factory.mktemp("embedded")
    org = start_sandbox("salesforce", tmp / "org")
    try:
        env = _distributed_env(shop, org, f"sqlite:///{tmp / 'state.db'}", _NoBus(), tmp / "home")  # type: ignore[arg-type]
        env.pop("FERRY_BUS_URL")
        run = _ferry(["run", str(pipeline), "--json"], env)
        assert run.returncode in RUN_FINISHED, run.stderr[-3000:]
        return {"org": _org(org), "stats": json.loads(run.stdout)}
    finally:
        org.stop()


class _NoBus:
    url = "nats://unused"


def _ingest_jobs(org: SandboxProcess) -> list[dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(org.info["ca_file"]))
    with httpx.Client(verify=ctx, timeout=30) as client:
        jobs: list[dict[str, Any]] = client.get(f"{org.url}/__sandbox/bulk/ingest").json()
    return jobs


def _uploaded_twice(jobs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(object, external id) carried by more than one job the org took data for and did not abort."""
    carried = Counter((j["object"], k) for j in jobs if j["state"] not in ("Aborted", "Open") for k in j["keys"])
    return [key for key, n in carried.items() if n > 1]


def _journaled_jobs(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM bulk_jobs").fetchone()
    return int(row[0]) if row else 0


def _bus_letters(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM dlq WHERE object LIKE 'bus:%'").fetchone()
    return int(row[0]) if row else 0


def _start_workers(n: int, env: dict[str, str], logs: Path, pipeline: Path) -> list[subprocess.Popen[bytes]]:
    """Workers logging their progress (``-v``) as JSON lines, one log file each (worker-<pid>.log)."""
    procs = []
    for _ in range(n):
        out = (logs / f"worker-{len(list(logs.glob('worker-*.log')))}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ferry", "-v", "--log-format", "json", "worker", str(pipeline),
             "--concurrency", "4"],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT))
    return procs


def _worker_events(logs: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for log in sorted(logs.glob("worker-*.log")):
        for line in log.read_text().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                out.append(json.loads(line))
    return out


def test_workers_read_every_stream_and_run_the_bulk_jobs(
    shop: SandboxProcess, pipeline: Path, expected: dict[str, Any], pg_server: PostgresServer,
    nats_server: NatsServer, tmp_path: Path,
) -> None:
    url = pg_server.fresh_database()
    migrate(url)
    org = start_sandbox("salesforce", tmp_path / "org")
    env = _distributed_env(shop, org, url, nats_server, tmp_path / "home")
    workers = _start_workers(2, env, tmp_path, pipeline)
    try:
        run = _ferry(["run", str(pipeline), "--json"], env)
        assert run.returncode in RUN_FINISHED, run.stderr[-3000:]
        stats = json.loads(run.stdout)
        strategies = {k: o["strategy"] for k, o in stats["objects"].items()}
        assert strategies["Order"] == strategies["OrderItem"] == "bulk (workers)", strategies
        assert strategies["Account"] != "bulk (workers)", strategies  # below the threshold: direct, spread
        # The coordinator read nothing itself: every stream by a worker, as many records as the embedded run read.
        assert stats["source_records"] == expected["stats"]["source_records"], stats["source_records"]
        reads = _worker_events(tmp_path, "worker.read_done")
        assert sorted(e["stream"] for e in reads) == ["customers", "orders", "products"], reads
        assert sum(e["records"] for e in reads) == sum(expected["stats"]["source_records"].values())
        # One stream after the other: the coordinator plans each stream once its read is done, and publishes the
        # next stream's item only then (no read in flight while it plans: engine/distjobs.py).
        starts: dict[str, str] = {}
        for e in _worker_events(tmp_path, "worker.read"):
            starts[e["stream"]] = min(starts.get(e["stream"], e["timestamp"]), e["timestamp"])
        ends = {e["stream"]: e["timestamp"] for e in reads}
        order = sorted(starts, key=lambda stream: starts[stream])
        for before, after in itertools.pairwise(order):
            assert ends[before] <= starts[after], (before, ends[before], after, starts[after])
        jobs_done = _worker_events(tmp_path, "worker.job_done")  # Order, OrderItem: one job item each
        assert sorted(e["object"] for e in jobs_done) == ["Order", "OrderItem"], jobs_done
        figures = {k: (o["written"], o["dead_lettered"]) for k, o in stats["objects"].items()}
        assert figures == {k: (o["written"], o["dead_lettered"]) for k, o in expected["stats"]["objects"].items()}
        assert _stop(workers) == [0, 0]
        got = _org(org)
        _once_per_key(got)
        _same_org(got, expected["org"])
        jobs = _ingest_jobs(org)
        assert sorted(j["object"] for j in jobs) == ["Order", "OrderItem"], jobs
        assert not _uploaded_twice(jobs)
        _assert_drained(url)
        assert _journaled_jobs(url) == 0  # every job's results recorded
    finally:
        _stop(workers)
        org.stop()


def _holders(url: str) -> list[tuple[str, int]]:
    """(what, pid) of each worker holding a work lock: "read orders", "bulk Order"..."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = work_holders(conn)
    out = []
    for name in names:
        what, _, rest = name.removeprefix("ferry worker ").partition(": pid ")
        out.append((what, int(rest.split()[0])))
    return out


def _staged(url: str, stream: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM staging WHERE stream = %s", (stream,)).fetchone()
    return int(row[0]) if row else 0


# ~65 s (three workers, two kills, the ack wait twice): behind -m slow (`make chaos`); the distributed chaos short run
# in the default suite kills workers during reads and open Bulk jobs too.
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workers_killed_holding_a_read_and_an_open_bulk_job_lose_nothing_and_upload_nothing_twice(
    shop: SandboxProcess, pipeline: Path, expected: dict[str, Any], pg_server: PostgresServer,
    nats_server: NatsServer, tmp_path: Path,
) -> None:
    url = pg_server.fresh_database()
    migrate(url)
    org = start_sandbox("salesforce", tmp_path / "org", ["--fault", f"latency:1,path=jobs/ingest,ms={JOB_LATENCY_MS}"])
    env = _distributed_env(shop, org, url, nats_server, tmp_path / "home")
    workers = _start_workers(3, env, tmp_path, pipeline)
    killed: dict[str, str] = {}  # kind -> what the killed worker held
    coordinator = subprocess.Popen([sys.executable, "-m", "ferry", "run", str(pipeline), "--json"],
                                   env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while coordinator.poll() is None and time.monotonic() < deadline:
            for what, pid in _holders(url):
                kind = what.split()[0]
                if kind in killed:
                    continue
                if kind == "read" and _staged(url, what.split()[1]) == 0:
                    continue  # killed after a page is staged: the next worker must continue after it
                if kind == "bulk" and not any(j["state"] in ("Open", "UploadComplete", "InProgress")
                                              for j in _ingest_jobs(org)):
                    continue  # killed while the org holds its job open
                victim = next((w for w in workers if w.pid == pid and w.poll() is None), None)
                if victim is None:
                    continue
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=30)
                killed[kind] = what
                workers += _start_workers(1, env, tmp_path, pipeline)
            time.sleep(0.03)
        out, err = coordinator.communicate(timeout=60)
        assert coordinator.returncode in RUN_FINISHED, err.decode()[-3000:]
        stats = json.loads(out)
        assert stats["status"] == "succeeded", stats
        assert set(killed) == {"read", "bulk"}, killed
        assert _stop([w for w in workers if w.poll() is None]) == [0, 0, 0]
        # The killed read went on from its last staged page (the next worker's intake saw a resumed read).
        assert any(e["resumed"] for e in _worker_events(tmp_path, "worker.read_done")), killed
        got = _org(org)
        _once_per_key(got)
        _same_org(got, expected["org"])
        assert not _uploaded_twice(_ingest_jobs(org))
        _assert_drained(url)
        assert _journaled_jobs(url) == 0
        assert _bus_letters(url) == 0
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
        _stop(workers)
        org.stop()


def _spec_and_store(shop: SandboxProcess, pipeline: Path, pg_server: PostgresServer, tmp_path: Path) -> Any:
    """The pipeline's spec (its target settings from an org started only for them: nothing is written) and a
    store on a fresh, migrated database."""
    from ferry.cli.demo import demo_env
    from ferry.engine.pipeline import load_pipeline
    from ferry.store.postgres import PostgresStore

    url = pg_server.fresh_database()
    migrate(url)
    org = start_sandbox("salesforce", tmp_path / "org")
    env = demo_env({k: str(v) for k, v in shop.info.items()}, {k: str(v) for k, v in org.info.items()})
    org.stop()
    return load_pipeline(pipeline, {**os.environ, **env}), PostgresStore(url)


def test_a_read_item_of_a_run_that_is_over_stages_nothing_and_one_of_a_running_run_reads_once(
    shop: SandboxProcess, pipeline: Path, pg_server: PostgresServer, tmp_path: Path,
) -> None:
    """``ReadAndJobWork.read`` in this process against PostgreSQL: an item left on the bus by a coordinator that
    was killed (its run since closed as died by the next run) must not stage pages while the next run plans; the
    running run's item reads the stream to its end and marks it, and a second delivery of it reads nothing."""
    import asyncio

    from ferry.bus.work import ReadStream
    from ferry.engine.distjobs import ReadAndJobWork, read_mark
    from ferry.engine.distributed import LoadWork

    spec, store = _spec_and_store(shop, pipeline, pg_server, tmp_path)
    try:
        died = store.start_run(spec.name)
        store.close_abandoned_runs(spec.name)  # what the next coordinator does first: `died` is over
        running = store.start_run(spec.name)
        work = ReadAndJobWork({spec.name: spec}, store, LoadWork({spec.name: spec}, store, lease_seconds=4.0))

        async def reads() -> list[int]:
            try:
                return [await work.read(ReadStream(spec.name, died, "products")),
                        await work.read(ReadStream(spec.name, running, "products")),
                        await work.read(ReadStream(spec.name, running, "products"))]
            finally:
                await work.close()

        stale, first, again = asyncio.run(reads())
        assert stale == 0 and not store.get_mark(spec.name, read_mark(died, "products"))
        assert first > 0 and store.get_mark(spec.name, read_mark(running, "products")) == first + 1
        assert again == 0  # the stream is marked read for this run: a redelivery does not read it again
        assert store.staged_count(spec.name) == first
    finally:
        store.close()


def test_a_stale_reader_cannot_overwrite_the_read_state_of_the_run_that_took_over(
    shop: SandboxProcess, pipeline: Path, pg_server: PostgresServer, tmp_path: Path,
) -> None:
    """The race, made deterministic: a worker reads ``orders`` for run A and is held after its first staged page;
    meanwhile A's coordinator is gone and run B starts, closes A as died and prepares the stream (a source that
    starts its reads together saves each stream's new state, ``Intake.prepare``). When the stale reader goes on,
    its next page must neither move B's read state nor stage anything: it stops, and B's own read then reads the
    stream from B's state to its end."""
    import asyncio

    from ferry.bus.work import ReadStream
    from ferry.engine.distjobs import ReadAndJobWork, read_mark
    from ferry.engine.distributed import LoadWork

    spec, store = _spec_and_store(shop, pipeline, pg_server, tmp_path)
    b_state = {"cursor": None}  # B's prepare: the stream read afresh (a new bulk operation, for Shopify GraphQL)
    try:
        run_a = store.start_run(spec.name)
        work = ReadAndJobWork({spec.name: spec}, store, LoadWork({spec.name: spec}, store, lease_seconds=4.0))

        async def race() -> tuple[int, int, int]:
            try:
                source = await work._source(spec.name)
                held, go_on = asyncio.Event(), asyncio.Event()
                read = source.read

                async def held_after_the_first_page(stream: str, state: Any) -> Any:
                    async for n, page in _numbered(read(stream, state)):
                        if n == 1 and not go_on.is_set():  # page 0 is staged; page 1 waits here
                            held.set()
                            await go_on.wait()
                        yield page

                source.read = held_after_the_first_page  # type: ignore[method-assign]
                stale = asyncio.create_task(work.read(ReadStream(spec.name, run_a, "orders")))
                await asyncio.wait_for(held.wait(), 60)
                staged_by_a = store.staged_count(spec.name)
                assert staged_by_a > 0 and store.read_state(spec.name, "orders") != b_state
                store.close_abandoned_runs(spec.name)  # B's coordinator: A is over
                run_b = store.start_run(spec.name)
                store.stage(spec.name, "orders", run_b, [], b_state)  # what B's Intake.prepare saves
                go_on.set()
                from_a = await asyncio.wait_for(stale, 60)
                assert store.read_state(spec.name, "orders") == b_state  # not moved by A's reader
                assert store.staged_count(spec.name) == staged_by_a  # A's next page refused whole
                from_b = await work.read(ReadStream(spec.name, run_b, "orders"))
                return from_a, from_b, run_b
            finally:
                await work.close()

        from_a, from_b, run_b = asyncio.run(race())
        assert from_a == 0 and not store.get_mark(spec.name, read_mark(run_a, "orders"))
        assert from_b > 0 and store.get_mark(spec.name, read_mark(run_b, "orders")) == from_b + 1
        assert store.read_state(spec.name, "orders") != b_state  # B's read moved it on, to its end
    finally:
        store.close()


async def _numbered(pages: Any) -> Any:
    n = 0
    async for page in pages:
        yield n, page
        n += 1
