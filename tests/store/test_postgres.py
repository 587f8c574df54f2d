"""What only the PostgreSQL adapter needs: many workers claiming one pipeline's work, leases that run out,
compare-and-set under concurrent writers, a server restart mid-use. Against a server the session starts."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ferry.core.ports import JournalEntry, PlannedRow, StagedRow, Written
from ferry.errors import PipelineBusy
from ferry.store.postgres import PostgresStore, StateUnavailable, migrate
from ferry.store.postgres.migrate import migrations
from tests.store.postgres_server import PostgresServer, start_server


@pytest.fixture
def open_store(pg_url: str, tmp_path) -> Iterator[Callable[[], PostgresStore]]:  # type: ignore[no-untyped-def]
    handles: list[PostgresStore] = []

    def opener() -> PostgresStore:
        handles.append(PostgresStore(pg_url, lock_dir=tmp_path))
        return handles[-1]

    yield opener
    for h in handles:
        h.close()


def _run_threads(n: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_senders_never_claim_the_same_outbox_rows(open_store: Callable[[], PostgresStore]) -> None:
    first = open_store()
    first.put_outbox("p", "Contact", [PlannedRow(f"k{i:04}", "v1", {"n": i}) for i in range(600)])
    workers = [open_store() for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in workers]

    def send(i: int) -> None:
        store = workers[i]
        while True:
            claim = store.claim_outbox("p", "Contact", 25, lease_seconds=60)
            if not claim.rows:
                return
            claimed[i] += [r.key for r in claim.rows]
            # The row leaves at the version sent, as the loader records a batch's answers.
            store.record_results(
                "p",
                "Contact",
                None,
                [Written(r.key, r.version) for r in claim.rows],
                [],
                [(r.key, r.version) for r in claim.rows],
            )

    _run_threads(len(workers), send)
    every = [k for keys in claimed for k in keys]
    assert len(every) == len(set(every)) == 600
    assert sum(1 for keys in claimed if keys) >= 2  # the work was actually shared
    assert first.outbox_count("p") == 0


def test_a_claim_by_keys_takes_its_own_rows_then_fills_up_in_key_order(
    open_store: Callable[[], PostgresStore],
) -> None:
    a, b = open_store(), open_store()
    a.put_outbox("p", "Contact", [PlannedRow(f"k{i}", "v1", {"n": i}) for i in range(8)])
    mine = a.claim_outbox("p", "Contact", 3, lease_seconds=60, keys=["k5", "k6", "k7"])
    assert sorted(mine.fences) == ["k5", "k6", "k7"] and [r.payload["n"] for r in mine.rows] == [5, 6, 7]
    # k6 is held by the claim above and k9 is not queued: the two missing rows come from the others, once each.
    other = b.claim_outbox("p", "Contact", 3, lease_seconds=60, keys=["k6", "k4", "k9"])
    assert sorted(other.fences) == ["k0", "k1", "k4"]
    rest = b.claim_outbox("p", "Contact", 10, lease_seconds=60, keys=["k5"])
    assert sorted(rest.fences) == ["k2", "k3"]


def test_a_claim_without_fill_takes_only_the_rows_it_names(open_store: Callable[[], PostgresStore]) -> None:
    a, b = open_store(), open_store()
    a.put_outbox("p", "OrderItem", [PlannedRow(f"k{i}", "v1", {"n": i}) for i in range(6)])
    held = a.claim_outbox("p", "OrderItem", 2, lease_seconds=60, keys=["k1", "k2"], fill=False)
    assert sorted(held.fences) == ["k1", "k2"]
    # k2 is held and k9 is not queued: an exact item gets k3 alone, never a neighbour whose parent may still wait.
    exact = b.claim_outbox("p", "OrderItem", 3, lease_seconds=60, keys=["k2", "k3", "k9"], fill=False)
    assert sorted(exact.fences) == ["k3"] and [r.payload["n"] for r in exact.rows] == [3]


def test_an_expired_outbox_lease_is_reclaimed_and_a_live_one_is_not(open_store: Callable[[], PostgresStore]) -> None:
    a, b = open_store(), open_store()
    a.put_outbox("p", "Contact", [PlannedRow("k1", "v1", {}), PlannedRow("k2", "v1", {})])
    dead = a.claim_outbox("p", "Contact", 10, lease_seconds=0.5, owner="worker-a")
    assert sorted(dead.fences) == ["k1", "k2"]
    assert b.claim_outbox("p", "Contact", 10, lease_seconds=30, owner="worker-b").rows == []  # still leased
    time.sleep(0.7)  # worker-a died: its lease runs out on the database's clock
    taken = b.claim_outbox("p", "Contact", 10, lease_seconds=30, owner="worker-b")
    assert sorted(r.key for r in taken.rows) == ["k1", "k2"]
    assert a.release_outbox("p", "Contact", dead) == 0  # the old claim's fence no longer holds


def test_a_newer_version_queued_during_a_send_clears_the_lease_and_stays(
    open_store: Callable[[], PostgresStore],
) -> None:
    a = open_store()
    a.put_outbox("p", "Contact", [PlannedRow("k", "v1", {"x": 1})])
    claim = a.claim_outbox("p", "Contact", 10, lease_seconds=60)
    a.put_outbox("p", "Contact", [PlannedRow("k", "v2", {"x": 2})])  # read and planned again mid-send
    a.record_results("p", "Contact", None, [Written("k", "v1")], [], [("k", "v1")])
    (row,) = a.claim_outbox("p", "Contact", 10, lease_seconds=60).rows  # goes out next, lease or not
    assert (row.version, row.payload) == ("v2", {"x": 2}) and claim.rows[0].version == "v1"


def test_concurrent_planners_claim_each_staged_record_once(open_store: Callable[[], PostgresStore]) -> None:
    first = open_store()
    first.stage("p", "orders", 1, [StagedRow(f"{i:04}", "v1", b"{}") for i in range(400)], None)
    planners = [open_store() for _ in range(3)]
    planned: list[list[str]] = [[] for _ in planners]

    def plan(i: int) -> None:
        store = planners[i]
        while True:
            claim = store.claim_staged("p", ["orders"], 30, lease_seconds=60)
            if not claim.records:
                return
            rows = [PlannedRow(r.key, r.version, {"k": r.key}, r.seq) for r in claim.records]
            assert store.commit_claimed("p", None, {"Order": rows}, [], claim)
            planned[i] += [r.key for r in claim.records]

    _run_threads(len(planners), plan)
    every = [k for keys in planned for k in keys]
    assert len(every) == len(set(every)) == 400
    assert first.outbox_count("p", "Order") == 400


def test_a_planner_whose_lease_was_taken_over_commits_nothing(open_store: Callable[[], PostgresStore]) -> None:
    a, b = open_store(), open_store()
    a.stage("p", "orders", 1, [StagedRow("1", "v1", b"{}"), StagedRow("2", "v1", b"{}")], None)
    slow = a.claim_staged("p", ["orders"], 10, lease_seconds=0.3, owner="planner-a")
    time.sleep(0.5)  # planner-a paused past its lease (a GC pause, a stopped VM)
    fast = b.claim_staged("p", ["orders"], 10, lease_seconds=60, owner="planner-b")
    assert sorted(fast.fences) == sorted(slow.fences)
    rows = [PlannedRow(r.key, r.version, {"by": "a"}, r.seq) for r in slow.records]
    assert a.commit_claimed("p", None, {"Order": rows}, [], slow) is False
    assert a.outbox_count("p") == 0  # nothing of the stale claim was written
    rows = [PlannedRow(r.key, r.version, {"by": "b"}, r.seq) for r in fast.records]
    assert b.commit_claimed("p", None, {"Order": rows}, [], fast) is True
    assert {r.payload["by"] for chunk in a.outbox("p", "Order") for r in chunk} == {"b"}


def test_the_version_map_only_moves_forward_whatever_the_order_of_writers(
    open_store: Callable[[], PostgresStore],
) -> None:
    writers = [open_store() for _ in range(4)]
    keys = [f"k{i:03}" for i in range(50)]
    versions = [f"2026-12-0{d}T00:00:00Z" for d in range(1, 9)]

    def write(i: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            batch = [Written(k, rng.choice(versions), f"id-{k}") for k in rng.sample(keys, 20)]
            writers[i].record_written("p", "Contact", batch)

    # Every writer also writes the newest version of every key once, somewhere in the middle.
    def newest(i: int) -> None:
        write(i, i)
        writers[i].record_written("p", "Contact", [Written(k, versions[-1]) for k in keys])
        write(i, i + 10)

    _run_threads(len(writers), newest)
    assert writers[0].versions_for("p", "Contact", keys) == {k: versions[-1] for k in keys}
    assert set(writers[0].target_ids("p", "Contact", keys).values()) == {f"id-{k}" for k in keys}


def test_concurrent_queuers_leave_the_newest_version_queued(open_store: Callable[[], PostgresStore]) -> None:
    writers = [open_store() for _ in range(4)]

    def queue(i: int) -> None:
        order = list(range(1, 21))
        random.Random(i).shuffle(order)
        for v in order:
            writers[i].put_outbox("p", "Contact", [PlannedRow(f"k{j}", f"v{v:02}", {"v": v}) for j in range(10)])

    _run_threads(len(writers), queue)
    rows = [r for chunk in writers[0].outbox("p", "Contact") for r in chunk]
    assert {(r.version, r.payload["v"]) for r in rows} == {("v20", 20)} and len(rows) == 10


def test_a_dead_workers_remote_job_is_resumed_by_one_worker_only(open_store: Callable[[], PostgresStore]) -> None:
    dead = open_store()
    dead.save_remote_job("p", "Contact", "750x1", [JournalEntry("k1", "v1", "e1")])
    assert dead.renew_remote_job("p", "Contact", "750x1", lease_seconds=0.3)
    others = [open_store() for _ in range(3)]
    assert all(o.claim_remote_jobs("p", lease_seconds=30) == [] for o in others)  # the owner's lease is live
    time.sleep(0.5)
    got: list[list[str]] = [[] for _ in others]
    _run_threads(3, lambda i: got[i].extend(j.job_id for j in others[i].claim_remote_jobs("p", lease_seconds=30)))
    assert sorted(j for jobs in got for j in jobs) == ["750x1"]
    assert dead.renew_remote_job("p", "Contact", "750x1", lease_seconds=30) is False  # taken over


def test_many_workers_migrating_an_empty_database_apply_each_migration_once(pg_server: PostgresServer) -> None:
    url = pg_server.fresh_schema()
    applied: list[list[int]] = [[] for _ in range(4)]
    _run_threads(4, lambda i: applied[i].extend(migrate(url)))
    # each migration applied by exactly one of them, the others found it done
    assert sorted(v for a in applied for v in a) == [m.version for m in migrations()]
    PostgresStore(url).close()


def test_a_store_refuses_an_unmigrated_database_and_says_what_to_run(pg_server: PostgresServer) -> None:
    url = pg_server.fresh_schema()
    with pytest.raises(Exception, match="ferry migrate"):
        PostgresStore(url)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = start_server()
    yield server
    server.cleanup()


def test_a_server_restart_mid_use_loses_nothing_committed_and_the_pool_reconnects(
    own_server: PostgresServer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    url = own_server.fresh_database()
    migrate(url)
    store = PostgresStore(url, lock_dir=tmp_path, min_size=2, connect_timeout=3)
    lock, other = store.pipeline_lock("p"), store.pipeline_lock("q")
    lock.acquire()
    other.acquire()
    try:
        run = store.start_run("p")
        store.stage("p", "orders", run, [StagedRow("1", "v1", b'{"id": 1}')], {"cursor": "c1"})
        store.put_outbox("p", "Contact", [PlannedRow("1", "v1", {"x": 1})])
        store.record_written("p", "Contact", [Written("0", "v9", "003A")])
        own_server.crash()  # immediate stop: no clean shutdown, crash recovery on start
        with pytest.raises(StateUnavailable) as down:
            store.outbox_count("p")
        assert getattr(down.value, "retryable", False)
        with pytest.raises(StateUnavailable):  # the lock's session is gone; it cannot be taken again yet
            lock.keep()
        own_server.start()
        # The restart ended the lock holders' sessions, and their locks with them: the run (lock.keep, what a
        # distributed coordinator does while it waits) takes its lock again on a new session ...
        assert not store.is_running("p")
        lock.keep()
        assert store.is_running("p")
        lock.keep()  # held: nothing to do
        # ... unless another run took the pipeline meanwhile: then it must stop.
        intruder = store.pipeline_lock("q")
        intruder.acquire()
        with pytest.raises(PipelineBusy):
            other.keep()
        intruder.release()
        # The pool's connections died with the server; each is checked and replaced before use.
        assert store.read_state("p", "orders") == {"cursor": "c1"}
        assert store.outbox_count("p") == 1
        assert store.versions_for("p", "Contact", ["0"]) == {"0": "v9"}
        store.put_outbox("p", "Contact", [PlannedRow("2", "v1", {"x": 2})])
        store.finish_run(run, "ok", {})
        assert store.outbox_count("p") == 2 and store.get_run(run).status == "ok"  # type: ignore[union-attr]
    finally:
        lock.release()
        other.release()
        store.close()


def test_one_run_per_pipeline_across_machines_and_a_killed_holder_frees_it(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal
    import subprocess
    import sys

    from ferry.errors import PipelineBusy

    here, there = PostgresStore(pg_url, lock_dir=tmp_path / "a"), PostgresStore(pg_url, lock_dir=tmp_path / "b")
    try:
        with here.pipeline_lock("shop"):
            assert there.is_running("shop") and not there.is_running("other")
            with pytest.raises(PipelineBusy, match=f"pid {os.getpid()}"), there.pipeline_lock("shop"):
                pass
            with there.pipeline_lock("other"):  # another pipeline runs meanwhile
                pass
        assert not there.is_running("shop")
        # A process holding the lock is SIGKILLed: its session ends with it, and so does the lock.
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from ferry.store.postgres.lock import AdvisoryPipelineLock as L; "
                "lock = L(sys.argv[1], 'shop'); lock.acquire(); print('held', flush=True); time.sleep(60)",
                pg_url,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert there.is_running("shop")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 10
        while there.is_running("shop") and time.monotonic() < deadline:
            time.sleep(0.05)
        with there.pipeline_lock("shop"):
            pass
    finally:
        here.close()
        there.close()


def test_a_pipeline_cannot_be_reset_while_a_run_of_it_holds_its_lock(open_store: Callable[[], PostgresStore]) -> None:
    from ferry.errors import PipelineBusy

    runner, admin = open_store(), open_store()
    admin.put_outbox("shop", "Contact", [PlannedRow("k", "v1", {})])
    with runner.pipeline_lock("shop"):
        with pytest.raises(PipelineBusy):
            admin.reset_pipeline("shop")
        admin.reset_pipeline("other")  # another pipeline's state is not guarded by it
        assert admin.outbox_count("shop") == 1
    admin.reset_pipeline("shop")
    assert admin.outbox_count("shop") == 0
