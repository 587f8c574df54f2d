"""The chaos harness in distributed mode: `ferry run --distributed` lives and three `ferry worker`s, SIGKILLed at
random moments, NATS and PostgreSQL crashed and restarted mid-run, faults on both sandboxes, edits between lives.

It reuses the embedded harness (``harness.Chaos``: the sandboxes with their faults, the edits, the reconciliation)
with the state in a PostgreSQL server and the work on a nats-server of its own (temp dirs, free ports, restarted
on the same data dir and port). Each life is one coordinator (`ferry run --distributed`); during it, at random
moments after its first durable progress, the harness SIGKILLs workers (half of them while they hold an outbox
claim, half any worker at any moment; besides, workers holding a stream's read and workers running a Bulk job the
org holds open, seen by their work locks; a killed worker is replaced at once), crashes NATS (``SIGKILL``) or
PostgreSQL (``pg_ctl -m immediate``) and starts it again after an outage, and sometimes SIGKILLs the coordinator
(which ends the life). Customers are edited during and between lives. When every quota is met, a last life runs
on a source at rest, beside a clean embedded run (never killed, no faults, SQLite, one process) over a copy of
the same final source. The org must then equal the clean run's org field by field, and the reconciliation against
the source (the fidelity test's derivation) must find nothing lost, duplicated, wrong or stale; the Salesforce
calls the shared API ledger counted must stay within the pipeline's ``api_budget`` (tight on purpose), and never
below what the org counted. Workers that die on their own (a crash after a server restart) are counted: none may.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferry.cli.exits import RUN_FINISHED, Exit
from ferry.store import LetterFilter
from ferry.store.postgres import migrate
from ferry.store.postgres.lock import WORK_LOCKS
from tests.bus.natsserver import NatsServer, require_nats_server
from tests.chaos.harness import Chaos, ChaosConfig, CleanRunInFlight, Life, salesforce_faults
from tests.chaos.reconcile import Reconciliation
from tests.e2e.test_sync_fidelity import OBJECTS
from tests.store.postgres_server import PostgresServer, start_server

# Fields the org sets itself (ids, stamps, arrival-order auto-numbers): workers write in parallel, so the
# order, not the set, differs from the clean run's. References are compared through external ids.
_ORG_OWN = frozenset({"Id", "CreatedDate", "LastModifiedDate", "SystemModstamp", "CreatedById", "LastModifiedById",
                      "OwnerId", "OrderNumber", "OrderItemNumber"})


@dataclass
class DistChaosConfig:
    chaos: ChaosConfig  # the store, the faults' seed, page size, kill timing, the time allowed
    workers: int = 3
    concurrency: int = 4  # work items each worker holds at once
    work_batch: int = 10  # outbox rows per work item: many items, so kills land among them
    ack_wait: float = 4.0  # seconds: a killed worker's items and outbox claims come back after this
    worker_kills: int = 6  # at least this many worker SIGKILLs (half while the worker holds an outbox claim)
    coordinator_kills: int = 1  # at least this many coordinator SIGKILLs (each ends a life)
    nats_restarts: int = 1  # crash + restart of nats-server while the run writes
    pg_restarts: int = 1  # crash + restart of PostgreSQL while the run writes
    # Seconds a crashed server stays down: longer than psycopg's pool waits for a connection (10 s) or a publish is
    # retried, sometimes, so the outage reaches the code above them.
    outage: tuple[float, float] = (2.0, 12.0)
    api_budget: int = 400  # the pipeline's Salesforce share (calls per rolling 24 h): it must hold
    # The share the first lives run with: too small for the sync, so a life pauses on it (exit 5, nothing
    # dead-lettered); the operator then raises it to ``api_budget`` and restarts the workers with the new file.
    first_budget: int | None = None
    read_kills: int = 1  # at least this many worker SIGKILLs while the worker holds a stream's read (ReadStream)
    bulk_kills: int = 1  # ... and while it runs a Bulk job the org holds open (JobLoad; needs bulk_threshold)
    # Each source call is delayed this long while a read kill is owed, so a read lasts long enough to be hit.
    read_latency_ms: int = 150


@dataclass
class Event:
    # "worker" (a worker holding an outbox claim: a load), "worker-read" (holding a stream's read), "worker-bulk"
    # (running a Bulk job the org holds open), "worker-any", "nats", "postgres", "coordinator"
    kind: str
    at: float  # seconds after the life's first durable progress
    phase: str = ""  # what the shared state says the run was doing when it landed
    detail: str = ""


@dataclass
class DistLife:
    life: Life
    events: list[Event] = field(default_factory=list)  # the ones that landed


@dataclass
class DistChaosResult:
    config: DistChaosConfig
    lives: list[DistLife]
    reconciliation: Reconciliation
    org_diff: dict[str, Any]  # the org against the clean embedded run's: differences per object (none expected)
    letters_diff: dict[str, Any]  # the dead letters (object, key, codes) against the clean run's
    bus_letters: int  # work items dead-lettered by the bus (none expected)
    faults: dict[str, int]
    records: dict[str, int]
    api_calls: dict[str, int]
    ledger_calls: int
    worker_crashes: list[str]  # workers that exited without being killed: log tails
    stream_survived: list[dict[str, int]]  # JetStream's last sequence before a NATS crash and after its restart
    budget_pause: dict[str, Any]  # the life that paused on ``first_budget``: its exit, the ledger, bus letters then
    bulk_reuploads: int  # records carried by more than one processed Bulk job (without a source edit between)
    edited: set[str]
    seconds: float

    def landed(self, kind: str) -> list[Event]:
        return [e for dl in self.lives for e in dl.events if e.kind == kind]

    def figures(self) -> dict[str, Any]:
        r = self.reconciliation
        kinds = ("worker", "worker-read", "worker-bulk", "worker-any", "coordinator", "nats", "postgres")
        return {
            "pair": f"{self.config.chaos.pair}-to-salesforce (distributed: {self.config.workers} workers)",
            "store": f"{self.config.chaos.customers} customers, {self.config.chaos.products} products, "
                     f"{self.config.chaos.orders} orders",
            "seconds": round(self.seconds, 1),
            "lives": len(self.lives),
            "life_exits": [dl.life.exit_code if not dl.life.killed else "SIGKILL" for dl in self.lives],
            "failed_lives": [dl.life.error for dl in self.lives if dl.life.error],
            "worker_kills_holding_a_claim": len(self.landed("worker")),
            "worker_kills_at_random": len(self.landed("worker-any")),
            "worker_kills_by_kind": {"read": len(self.landed("worker-read")), "load": len(self.landed("worker")),
                                     "bulk": len(self.landed("worker-bulk")),
                                     "any moment": len(self.landed("worker-any"))},
            "bulk_reuploads": self.bulk_reuploads,
            "coordinator_kills": len(self.landed("coordinator")),
            "nats_restarts": len(self.landed("nats")),
            "postgres_restarts": len(self.landed("postgres")),
            "events_by_phase": {k: dict(Counter(e.phase for e in self.landed(k))) for k in kinds},
            "outages": {k: [e.detail for e in self.landed(k)] for k in ("nats", "postgres")},
            "jetstream_last_seq_before_crash_and_after_restart": self.stream_survived,
            "worker_crashes": self.worker_crashes,
            "faults_injected": dict(sorted(self.faults.items())),
            "source_records": {o: r.objects[o].source for o in OBJECTS},
            "in_target": dict(self.records),
            **r.totals(),
            "org_differs_from_clean_embedded_run": self.org_diff,
            "dead_letters_differ_from_clean_embedded_run": self.letters_diff,
            "bus_dead_letters": self.bus_letters,
            "budget_pause": self.budget_pause,
            "api_budget": self.config.api_budget,
            "salesforce_calls_in_budget_ledger": self.ledger_calls,
            "api_calls": dict(self.api_calls),
            "customers_edited": len(self.edited),
        }


class DistributedChaos(Chaos):
    def __init__(self, tmp: Path, config: DistChaosConfig) -> None:
        super().__init__(tmp, config.chaos)
        self.dconfig = config
        self.pg: PostgresServer | None = None
        self.nats = NatsServer(require_nats_server(), tmp / "nats")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_logs: list[Path] = []
        self.killed_pids: set[int] = set()
        self.stream_survived: list[dict[str, int]] = []
        self.down: dict[str, float] = {}  # crashed servers: when each comes back (monotonic)
        self.budget_pause: dict[str, Any] = {}
        self._seq_before_crash = 0

    # ------------------------------------------------------------------ servers and workers

    def __enter__(self) -> DistributedChaos:
        self.pg = start_server()
        try:
            self.state_url = self.pg.fresh_database()
            migrate(self.state_url)
            self.nats.start()
            super().__enter__()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for w in self.workers:
                if w.poll() is None:
                    w.kill()
                    w.wait(timeout=30)
            super().__exit__(*exc)
        finally:
            self.nats.kill()
            if self.pg is not None:
                self.pg.cleanup()

    def _env(self, org: Any, org_run: Any, home: Path, source: Any = None) -> dict[str, str]:
        env = super()._env(org, org_run, home, source)
        if home != self.home:
            env.pop("FERRY_BUS_URL", None)  # the clean run: embedded, SQLite, no bus
            return env
        d = self.dconfig
        return {**env, "FERRY_BUS_URL": self.nats.url, "FERRY_BUS_ACK_WAIT": str(d.ack_wait),
                "FERRY_BUS_MAX_ACK_PENDING": str(d.concurrency), "FERRY_WORK_BATCH": str(d.work_batch)}

    def _pipeline(self) -> Path:
        path = super()._pipeline()
        spec = yaml.safe_load(path.read_text())
        spec["target"]["api_budget"] = self.dconfig.first_budget or self.dconfig.api_budget
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def _spawn_worker(self, pipeline: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.worker_logs)}.log"
        self.worker_logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "ferry", "worker", str(pipeline),
                 "--concurrency", str(self.dconfig.concurrency)],
                env={**env, "FERRY_LOG_LEVEL": "info"}, stdout=out, stderr=subprocess.STDOUT,
            )

    def _keep_workers(self, pipeline: Path, env: dict[str, str]) -> None:
        """Replace every worker that is gone (killed by the harness, or dead on its own: a crash, counted)."""
        alive = [w for w in self.workers if w.poll() is None]
        while len(alive) < self.dconfig.workers:
            alive.append(self._spawn_worker(pipeline, env))
        self.workers = alive

    def _worker_crashes(self) -> list[str]:
        """Workers that ended other than by the harness's SIGKILL or a clean SIGTERM stop (exit 0). A worker the
        harness stopped while it was still starting (no "taking work" line yet: its handler was not installed)
        dies of the SIGTERM itself; that is no crash either."""
        crashed = []
        for w, log in zip(self._all_workers, self.worker_logs, strict=True):
            if w.poll() is None or w.pid in self.killed_pids or w.returncode == 0:
                continue
            text = log.read_text(errors="replace")
            if w.returncode == -signal.SIGTERM and "taking work for" not in text:
                continue
            crashed.append(f"{log.name} exit {w.returncode}: {text[-600:]}")
        return crashed

    # ------------------------------------------------------------------ the run

    def run(self) -> DistChaosResult:  # type: ignore[override]
        assert self.source_run and self.org_run
        started = time.monotonic()
        pipeline, env = self._pipeline(), self._env(self.org, self.org_run, self.home)
        self.source.sandbox.faults.configure(self._source_faults(read_kills_owed=self.dconfig.read_kills > 0))
        self.org.faults.configure(salesforce_faults(self.config.seed, self.config.expire_session_every))
        self._all_workers: list[subprocess.Popen[bytes]] = []
        deadline = started + self.config.max_seconds
        lives: list[DistLife] = []
        while len(lives) < self.config.max_lives:
            todo = self._quota_left(lives)
            final = not todo
            if final and self.clean is None:
                # The last life runs on a source at rest: the clean embedded run reads a copy of it meanwhile.
                self.clean = CleanRunInFlight(self, pipeline, self.tmp / f"clean-{len(lives)}")
            self._keep_workers(pipeline, env)
            self._all_workers += [w for w in self.workers if w not in self._all_workers]
            dl = self._life_d(len(lives), pipeline, env, self._plan_events(todo), deadline)
            lives.append(dl)
            life = dl.life
            if final and life.exit_code in RUN_FINISHED:
                break
            if life.exit_code == Exit.TRY_LATER and self.dconfig.first_budget and not self.budget_pause:
                self._budget_paused(life, pipeline)
            elif life.exit_code is not None and life.exit_code not in RUN_FINISHED:
                tail = self._tail(life).strip()
                life.error = f"exit {life.exit_code}: " + (tail.splitlines()[-1] if tail else "?")
            if not final:
                self._edit_some(2)  # between lives: the next life reads new versions
                owed = self._quota_left(lives)
                if "worker-bulk" in owed:
                    # Enough orders touched that Order and OrderItem cross bulk_threshold: the next life runs Bulk jobs.
                    self.source.touch_orders(self.config.bulk_threshold, self.rng)
                if "worker-read" not in owed:  # reads at full speed again
                    self.source.sandbox.faults.configure(self._source_faults(read_kills_owed=False))
            elif self.clean is not None:  # a last life that did not finish: its source changes no more, rerun
                continue
        faults = {f"{self.source.name}:{k}": v for k, v in self.source.sandbox.faults.describe()["injected"].items()}
        faults |= {f"salesforce:{k}": v for k, v in self.org.faults.describe()["injected"].items()}
        self.source.sandbox.faults.clear()
        self.org.faults.clear()
        for w in self.workers:  # a clean stop: each must exit 0 (SIGTERM)
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.wait(timeout=60)
        records = self._records(self.org_run)
        store = self._store()
        try:
            letters = store.find_dead_letters(LetterFilter(pipeline="chaos", status=None), 1_000_000)
            ledger = sum(n for _, n in store.api_call_buckets("chaos", "salesforce", 0))
        finally:
            store.close()
        assert self.clean is not None, "no final life was run"
        clean_records, clean_letters = self.clean.result()
        record_letters = [d for d in letters if not d.object.startswith("bus:")]
        return DistChaosResult(
            config=self.dconfig,
            lives=lives,
            reconciliation=self.source.reconcile(records, record_letters, self.edited, lambda: (clean_records,
                                                                                                 clean_letters)),
            org_diff=_org_diff(comparable(records), comparable(clean_records)),
            letters_diff=_letters_diff(record_letters, clean_letters),
            bus_letters=len(letters) - len(record_letters),
            faults=faults,
            records={o: len(records[o]) for o in OBJECTS},
            api_calls={self.source.name: self.source.api_calls(), "salesforce": self.org.state.budget.used},
            ledger_calls=ledger,
            worker_crashes=self._worker_crashes(),
            stream_survived=self.stream_survived,
            budget_pause=self.budget_pause,
            bulk_reuploads=self._bulk_reuploads(),
            edited=set(self.edited),
            seconds=time.monotonic() - started,
        )

    def _budget_paused(self, life: Life, pipeline: Path) -> None:
        """A life paused on the first (too small) share: note what the shared state says, then raise the share
        and restart the workers with the new file (SIGTERM: each must stop cleanly, exit 0)."""
        store = self._store()
        try:
            letters = store.find_dead_letters(LetterFilter(pipeline="chaos", status=None), 1_000_000)
            self.budget_pause = {
                "life": life.index,
                "exit": life.exit_code,
                "status": (life.stats or {}).get("status"),
                "error": ((life.stats or {}).get("error") or "")[:160],
                "first_budget": self.dconfig.first_budget,
                "ledger_at_pause": sum(n for _, n in store.api_call_buckets("chaos", "salesforce", 0)),
                "queued_at_pause": store.outbox_count("chaos"),
                "bus_dead_letters": sum(1 for d in letters if d.object.startswith("bus:")),
            }
        finally:
            store.close()
        spec = yaml.safe_load(pipeline.read_text())
        spec["target"]["api_budget"] = self.dconfig.api_budget
        pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.wait(timeout=60)
        self.workers = []  # replaced by the next life's _keep_workers, with the new share

    def _quota_left(self, lives: list[DistLife]) -> list[str]:
        """The events still owed (each kind's quota minus what landed); none: the next life is the last."""
        d = self.dconfig
        landed = Counter(e.kind for dl in lives for e in dl.events)
        half = d.worker_kills // 2
        owed = {"worker": d.worker_kills - half, "worker-any": half, "nats": d.nats_restarts,
                "postgres": d.pg_restarts, "coordinator": d.coordinator_kills, "worker-read": d.read_kills,
                "worker-bulk": d.bulk_kills}
        todo = [k for k, n in owed.items() for _ in range(max(0, n - landed[k]))]
        if d.first_budget and not self.budget_pause:
            todo.append("budget")  # the share has not stopped a life yet: this life is not the last
        return todo

    def _plan_events(self, todo: list[str]) -> list[Event]:
        """Up to 2 worker kills, one server restart of each kind and (sometimes) a coordinator kill per life."""
        if not todo:
            return []
        lo, hi = self.config.kill_after
        chosen: list[str] = []
        for kind in ("worker", "worker-any", "nats", "postgres", "worker-read", "worker-bulk"):  # ("budget": the share)
            chosen += [k for k in todo if k == kind][: 1 if kind in ("nats", "postgres", "worker-read") else 2]
        # The coordinator is killed in a life of its own now and then: its kill ends the life.
        if "coordinator" in todo and (self.rng.random() < 0.4 or (not chosen and "budget" not in todo)):
            chosen.append("coordinator")
        # A read kill is tried from the life's start (reads come first, and may be over by its first progress).
        events = [Event(k, 0.0 if k == "worker-read" else self.rng.uniform(lo, hi)) for k in chosen]
        coordinator = [e for e in events if e.kind == "coordinator"]
        if coordinator:  # last: the other events of the life land first
            coordinator[0].at = max(e.at for e in events) + self.rng.uniform(0.0, 0.5)
        return sorted(events, key=lambda e: e.at)

    def _life_d(
        self, index: int, pipeline: Path, env: dict[str, str], events: list[Event], deadline: float
    ) -> DistLife:
        dl = DistLife(Life(index, time.time()))
        self._run_life(
            dl.life, ["-v", "run", str(pipeline), "--distributed", "--json"], env,
            lambda proc, before: self._watch_d(proc, dl, before, events, pipeline, env, deadline),
            # The life ended during an outage: the next one starts with both servers up.
            ended=lambda: self._restart_servers(now=True),
        )
        return dl

    def _watch_d(
        self, proc: subprocess.Popen[bytes], dl: DistLife, before: int, events: list[Event], pipeline: Path,
        env: dict[str, str], deadline: float,
    ) -> None:
        progressed_at: float | None = None
        # Read kills land whenever a worker holds a read, before the life's first progress too, and never hold up
        # the others (a life whose reads are over before one lands owes it to the next life).
        reads = [e for e in events if e.kind == "worker-read"]
        pending = [e for e in events if e.kind != "worker-read"]
        edits_left = self.config.edits_per_life if events else 0
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"distributed chaos run out of time: {self.tmp}")
            self._restart_servers()
            self._keep_workers(pipeline, env)
            self._all_workers += [w for w in self.workers if w not in self._all_workers]
            if progressed_at is None and self._progress_at(before) is not None:
                progressed_at = time.monotonic()
            if reads and self._land(reads[0], proc):
                dl.events.append(reads.pop(0))
            if progressed_at is not None and pending:
                if edits_left:
                    self._edit_some(1)
                    edits_left -= 1
                due = pending[0]
                if time.monotonic() - progressed_at >= due.at and self._land(due, proc):
                    dl.events.append(pending.pop(0))
                    if due.kind == "coordinator":
                        dl.life.killed, dl.life.kill_phase, dl.life.killed_while = True, "random", due.phase
                        return
            time.sleep(0.02)

    def _land(self, event: Event, proc: subprocess.Popen[bytes]) -> bool:
        """Make the event happen now if it can (False: not yet, e.g. no worker holds a claim at this instant)."""
        if event.kind in self.down:
            return False  # one outage of a kind at a time
        doing = "postgres down" if "postgres" in self.down else self._doing()
        holders = self._lease_holders() if "postgres" not in self.down else set()
        if event.kind in ("nats", "postgres") and (self.down or not holders):
            # Aimed at the loads (a worker holds a claim: the coordinator is past its plan), one outage at a time.
            return False
        if event.kind in ("worker", "worker-read", "worker-bulk"):
            if event.kind != "worker":
                holders = self._work_holders("read" if event.kind == "worker-read" else "bulk")
            if event.kind == "worker-bulk" and not set(self._open_job_states()) & {"Open", "UploadComplete",
                                                                                  "InProgress"}:
                return False  # a job the org holds open
            victims = [w for w in self.workers if w.pid in holders and w.poll() is None]
            if not victims:
                return False
            self._kill_worker(self.rng.choice(victims))
            if event.kind == "worker-read":
                doing = "reading (the victim held a stream's read)"  # the state's own phase may not show it yet
        elif event.kind == "worker-any":
            self._kill_worker(self.rng.choice([w for w in self.workers if w.poll() is None]))
        elif event.kind == "coordinator":
            os.kill(proc.pid, signal.SIGKILL)
        elif event.kind == "nats":
            self._seq_before_crash = self._stream_last_seq()
            self.nats.kill()
        elif event.kind == "postgres":
            assert self.pg is not None
            self.pg.crash()
        if event.kind in ("nats", "postgres"):
            # Down for a while; the life goes on meanwhile (kills land, workers are replaced) until it is back.
            self.down[event.kind] = time.monotonic() + self.rng.uniform(*self.dconfig.outage)
            event.detail = f"down {self.down[event.kind] - time.monotonic():.1f}s"
        event.phase = doing
        return True

    def _restart_servers(self, *, now: bool = False) -> None:
        """Start again each crashed server whose outage is over (all of them: ``now``)."""
        for kind, until in list(self.down.items()):
            if not now and time.monotonic() < until:
                continue
            del self.down[kind]
            if kind == "nats":
                self.nats.start()  # same port, same store dir: JetStream's state must have survived
                self.stream_survived.append({"before": self._seq_before_crash, "after": self._stream_last_seq()})
            else:
                assert self.pg is not None
                self.pg.start()

    def _kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        self.killed_pids.add(worker.pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    def _work_holders(self, what: str) -> set[int]:
        """Pids of the workers holding a work lock of this kind ("read", "bulk"; engine/distjobs.py): the lock's
        session is named "ferry worker <what> <stream or object>: pid <pid> on <host>"."""
        if "postgres" in self.down:
            return set()
        rows = self._query(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            f"WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {WORK_LOCKS}::oid AND l.objsubid = 2"
        )
        pids = set()
        for (name,) in rows:
            label, _, rest = str(name).removeprefix("ferry worker ").partition(": pid ")
            if label.split(" ")[0] == what and rest:
                pids.add(int(rest.split()[0]))
        return pids

    def _source_faults(self, *, read_kills_owed: bool) -> dict[str, Any]:
        """The source's faults, with every call delayed while a read kill is owed (a read lasts long enough)."""
        faults = self.source.faults(self.config.seed)
        if read_kills_owed and self.dconfig.read_latency_ms:
            faults["rules"] = [*faults["rules"],
                               {"kind": "latency", "rate": 1.0, "latency_ms": self.dconfig.read_latency_ms}]
        return faults

    def _lease_holders(self) -> set[int]:
        """Pids holding a live outbox claim (the lease owner is host:pid:random)."""
        rows = self._query("SELECT DISTINCT owner FROM outbox WHERE lease_until > now()")
        return {int(r[0].split(":")[1]) for r in rows if r[0]}

    def _stream_last_seq(self) -> int:
        """The work stream's last sequence number, as the server says (reset to 0 if its store were lost)."""
        import nats

        async def ask() -> int:
            nc = await nats.connect(self.nats.url, connect_timeout=2, max_reconnect_attempts=10)
            try:
                for attempt in range(20):  # just restarted: JetStream may need a moment to load its store
                    try:
                        info = await nc.jetstream().stream_info("FERRY_WORK")
                        return int(info.state.last_seq)
                    except Exception:
                        if attempt == 19:
                            raise
                        await asyncio.sleep(0.5)
                return 0
            finally:
                await nc.close()

        return asyncio.run(ask())


def comparable(records: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Each object's records without the org's own fields, references as external ids, sorted: two orgs that
    hold the same data compare equal whatever order (and ids) their records arrived in."""
    ext_of = {r["Id"]: v for rows in records.values() for r in rows for k, v in r.items()
              if k.startswith("Shopify_") and k.endswith("_Id__c") and v}
    out: dict[str, list[str]] = {}
    for obj, rows in records.items():
        out[obj] = sorted(
            json.dumps({k: (ext_of.get(v, v) if isinstance(v, str) and k.endswith("Id") else v)
                        for k, v in r.items() if k not in _ORG_OWN}, sort_keys=True, default=str)
            for r in rows
        )
    return out


def _org_diff(got: dict[str, list[str]], clean: dict[str, list[str]]) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for obj in OBJECTS:
        a, b = Counter(got.get(obj, [])), Counter(clean.get(obj, []))
        extra, missing = list((a - b).elements()), list((b - a).elements())
        if extra or missing:
            diff[obj] = {"only_distributed": len(extra), "only_clean": len(missing),
                         "example": (extra[:1], missing[:1])}
    return diff


def _letters_diff(got: list[Any], clean: list[Any]) -> dict[str, Any]:
    def key(d: Any) -> str:
        codes = sorted(str(e.get("code")) for e in (d.errors or []))
        return f"{d.object}:{d.record_key}:{','.join(codes)}"

    a = Counter(key(d) for d in got if d.status == "open")
    b = Counter(key(d) for d in clean if d.status == "open")
    extra, missing = sorted((a - b).elements()), sorted((b - a).elements())
    return {"only_distributed": extra[:5], "only_clean": missing[:5]} if extra or missing else {}


def check(result: DistChaosResult) -> dict[str, Any]:
    """The assertions of a distributed chaos run; returns its figures (printed first, so a failure shows them)."""
    figures = result.figures()
    print("\ndistributed chaos figures:\n" + json.dumps(figures, indent=2))
    out = os.environ.get("FERRY_CHAOS_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    d = result.config
    assert len(result.landed("worker")) + len(result.landed("worker-any")) >= d.worker_kills, figures
    assert len(result.landed("coordinator")) >= d.coordinator_kills, figures
    # Workers killed while they read a stream and while a Bulk job was open (reads and remote jobs run on workers).
    assert len(result.landed("worker-read")) >= d.read_kills, figures
    assert len(result.landed("worker-bulk")) >= d.bulk_kills, figures
    assert result.bulk_reuploads == 0, figures  # a killed worker's job is found again, never uploaded twice
    assert len(result.landed("nats")) >= d.nats_restarts and len(result.landed("postgres")) >= d.pg_restarts, figures
    # JetStream's file store survived each crash: its sequence went on, not back to 0.
    assert all(s["after"] >= s["before"] > 0 for s in result.stream_survived), figures
    # A life may fail as a scheduled run would (a server away during its read or plan): never by a bug.
    assert not [e for e in figures["failed_lives"] if "a bug in ferry" in e], figures
    last = result.lives[-1].life
    assert last.exit_code in RUN_FINISHED and (last.stats or {}).get("status") == "succeeded", figures
    assert not result.worker_crashes, figures  # workers ride out server restarts; none died on its own
    assert sum(result.faults.values()) > 0, "no fault was injected: the run proves nothing"
    r = result.reconciliation
    for name in ("lost", "duplicated", "extra", "wrong", "stale", "wrongly_dead_lettered"):
        assert r.total(name) == 0, (name, r.problems(), figures)
    assert r.total("invalid") > 0 and r.total("invalid_right_reason") == r.total("invalid"), (r.problems(), figures)
    assert not result.org_diff and not result.letters_diff, figures  # the clean embedded run's org and letters
    assert result.bus_letters == 0, figures
    # The API budget: counted before each call is sent, so the ledger holds at least what the org counted,
    # and never more than the share allows.
    assert result.api_calls["salesforce"] <= result.ledger_calls <= d.api_budget, figures
    if d.first_budget:
        # The first share stopped a life as in the embedded mode: paused (exit 5), the ledger within the share,
        # the rest still queued, no work item dead-lettered; the next lives resumed once the share was raised.
        p = result.budget_pause
        assert p and p["exit"] == Exit.TRY_LATER and p["status"] == "paused", figures
        assert p["ledger_at_pause"] <= d.first_budget and p["queued_at_pause"] > 0, figures
        assert p["bus_dead_letters"] == 0, figures
    return figures
