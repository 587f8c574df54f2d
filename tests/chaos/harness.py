"""The chaos harness: a real `ferry run` process, killed with SIGKILL at random moments, against faulty sandboxes.

Both sandboxes (a pair's source, see ``pairs``, and the Salesforce org) run in this process (threads,
HTTPS on loopback) with fault injection on; the ferry process runs the pair's example pipeline and is
killed (SIGKILL: no cleanup, no flush) at random moments after it made durable progress, and at least
`bulk_kills` times while a Bulk job is open (seen in its state store's `bulk_jobs` table, with the job's
state on the org at that instant). It is restarted until it finishes. Customers are edited in the source
while runs are going (latest wins). At the end the target is reconciled record by record against the
source's final state.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import random
import re
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ferry.cli.exits import RUN_FINISHED
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.store import DeadLetter, LetterFilter, Store
from tests.chaos.pairs import PAIRS, SourcePair
from tests.chaos.reconcile import Reconciliation
from tests.e2e.test_sync_fidelity import OBJECTS

# A clean run's outcome: the org's records by object and the run's dead letters.
CleanRun = Callable[[], tuple[dict[str, list[dict[str, Any]]], list[DeadLetter]]]


@dataclass
class ChaosConfig:
    pair: str = "shopify"  # the source the Salesforce org is fed from (``pairs.PAIRS``)
    seed: int = 1
    customers: int = 150
    products: int = 30
    orders: int = 300
    kills: int = 10  # at least this many SIGKILLs ...
    bulk_kills: int = 2  # ... of which at least this many while a Bulk job is open
    max_lives: int = 60
    max_seconds: float = 240.0
    page_size: int = 25
    bulk_threshold: int = 150
    edits_per_life: int = 1
    kill_after: tuple[float, float] = (0.0, 1.5)  # seconds after a life's first durable progress
    bulk_queue_seconds: float = 1.0  # how long the org keeps an uploaded job queued before processing it
    bulk_poll_max_interval: float = 1.0  # the pipeline's longest wait between two looks at a Bulk job
    expire_session_every: int = 500  # the org invalidates the session token every N API calls


def salesforce_faults(seed: int, expire_session_every: int = 500) -> dict[str, Any]:
    return {
        "seed": seed,
        "rules": [
            {"kind": "503", "rate": 0.04},
            {"kind": "500", "rate": 0.01},
            {"kind": "reset", "rate": 0.01},
            # The write happened, the answer is lost: the retry must not duplicate it.
            {"kind": "reset", "rate": 0.01, "processed": True},
            {"kind": "timeout", "rate": 0.01, "hold_seconds": 5.0},
            {"kind": "429", "rate": 0.01, "retry_after": 1},
        ],
        "lock_row_rate": 0.03,
        "expire_session_every": expire_session_every,
    }


@dataclass
class Life:
    index: int
    started: float  # wall clock (epoch seconds) at spawn
    run_id: int | None = None
    progress_after: float | None = None  # seconds from spawn to the run's first durable progress
    killed: bool = False
    kill_phase: str = ""  # "random" or "bulk:<job state on the org>"
    killed_while: str = ""  # what the store says the run was doing at the kill
    error: str | None = None  # the last line a failed (not killed) run printed
    exit_code: int | None = None
    stats: dict[str, Any] | None = None


@dataclass
class ChaosResult:
    config: ChaosConfig
    lives: list[Life]
    reconciliation: Reconciliation
    faults: dict[str, int]  # injected faults by kind ("shopify:503", "woocommerce:reset", "salesforce:lock_row"...)
    records: dict[str, int]
    dead_letters: dict[str, int]
    bulk_jobs: dict[str, int]
    api_calls: dict[str, int]  # calls each sandbox answered (Salesforce: what its daily budget counted)
    bulk_reuploads: int  # records carried by more than one processed Bulk job (without a source edit between)
    edited: set[str]
    seconds: float
    process_start_seconds: float  # peer for the restart time: `ferry --help`, spawn to exit, same machine and moment
    final_run: dict[str, Any] = field(default_factory=dict)
    # Salesforce calls the budget ledger counted (before each was sent): never fewer than the org counted.
    ledger_calls: int = 0

    @property
    def kills(self) -> list[Life]:
        return [life for life in self.lives if life.killed]

    def resume_seconds(self) -> list[float]:
        """Spawn-to-first-durable-progress of every life that followed a kill."""
        out = []
        for prev, life in zip(self.lives, self.lives[1:], strict=False):
            if prev.killed and life.progress_after is not None:
                out.append(life.progress_after)
        return out

    def figures(self) -> dict[str, Any]:
        r = self.reconciliation
        resume = self.resume_seconds()
        return {
            "pair": f"{self.config.pair}-to-salesforce",
            "store": f"{self.config.customers} customers, {self.config.products} products, {self.config.orders} orders",
            "seconds": round(self.seconds, 1),
            "lives": len(self.lives),
            "kills": len(self.kills),
            "failed_runs_restarted": [life.error for life in self.lives if life.error],
            "kills_by_phase": dict(Counter(k.killed_while for k in self.kills)),
            "kills_during_bulk": dict(Counter(k.kill_phase for k in self.kills if k.kill_phase.startswith("bulk"))),
            "faults_injected": dict(sorted(self.faults.items())),
            "source_records": {o: r.objects[o].source for o in OBJECTS},
            "in_target": dict(self.records),
            **r.totals(),
            "dead_lettered": dict(self.dead_letters),
            "bulk_jobs": dict(self.bulk_jobs),
            "api_calls": dict(self.api_calls),
            "salesforce_calls_in_budget_ledger": self.ledger_calls,
            "session_expires_every_n_calls": self.config.expire_session_every,
            "bulk_reuploads": self.bulk_reuploads,
            "customers_edited_while_running": len(self.edited),
            "restart_to_resume_seconds": {
                "n": len(resume),
                "median": round(statistics.median(resume), 2) if resume else None,
                "max": round(max(resume), 2) if resume else None,
                "peer_process_start_only": round(self.process_start_seconds, 2),
            },
        }


class Chaos:
    ferry_flags: tuple[str, ...] = ()  # global options of each life's `ferry` (``-v``: info logs on stderr)
    # Seconds from first durable progress to exit of the last life that finished: a random kill is drawn within it,
    # or re-syncs that finish in 2 s would rarely meet a kill drawn over the long run's 8 s ``kill_after``.
    _finished_after: float | None = None
    # The chaos run's state store (FERRY_STATE_URL; None: SQLite in its FERRY_HOME). The clean run it is judged
    # against always keeps its own embedded state.
    state_url: str | None = None

    def __init__(self, tmp: Path, config: ChaosConfig, *, state_url: str | None = None) -> None:
        self.tmp = tmp
        self.config = config
        self.state_url = state_url
        self.rng = random.Random(config.seed)
        self.home = tmp / "home"
        self.db_path = self.home / "ferry.db"
        self.edited: set[str] = set()
        self.source: SourcePair = PAIRS[config.pair](tmp, config)
        self.org = SalesforceSandbox(tmp, seed=config.seed)
        self.org.bulk.queue_delay = lambda: config.bulk_queue_seconds
        self.source_run: RunningSandbox | None = None
        self.org_run: RunningSandbox | None = None
        self.clean: CleanRunInFlight | None = None

    # ------------------------------------------------------------------ set-up

    def __enter__(self) -> Chaos:
        self.source_run = self.source.start()
        self.org_run = start_in_thread(self.org.app, self.tmp)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.clean is not None:
            self.clean.stop()
        for running in (self.org_run, self.source_run):
            if running is not None:
                running.stop()

    def _pipeline(self) -> Path:
        spec = yaml.safe_load(self.source.example.read_text())
        spec["name"] = "chaos"
        spec["source"].update(page_size=self.config.page_size, timeout_seconds=1.5)
        spec["target"].update(
            bulk_threshold=self.config.bulk_threshold,
            timeout_seconds=3.0,
            bulk_poll_max_interval=self.config.bulk_poll_max_interval,
        )
        # Enough tries that 3% lock errors and 5% 5xx never exhaust a valid record's budget.
        spec["retry"] = {"max_attempts": 10, "backoff_max_seconds": 1.0}
        path = self.tmp / "chaos.yml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def _env(
        self,
        org: SalesforceSandbox,
        org_run: RunningSandbox,
        home: Path,
        source: tuple[Any, RunningSandbox] | None = None,
    ) -> dict[str, str]:
        org_info = {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)}
        env = self.source.env(org_info, source)
        state_url = self.state_url if home == self.home and self.state_url else ""
        return {**os.environ, **env, "FERRY_HOME": str(home), "FERRY_STATE_URL": state_url, "PYTHONUNBUFFERED": "1"}

    # ------------------------------------------------------------------ the run

    def run(self) -> ChaosResult:
        assert self.source_run and self.org_run
        started = time.monotonic()
        pipeline, env = self._pipeline(), self._env(self.org, self.org_run, self.home)
        spawn = time.monotonic()
        subprocess.run([sys.executable, "-m", "ferry", "--help"], env=env, capture_output=True, check=True)
        process_start = time.monotonic() - spawn
        self.source.sandbox.faults.configure(self.source.faults(self.config.seed))
        self.org.faults.configure(salesforce_faults(self.config.seed, self.config.expire_session_every))
        lives: list[Life] = []
        kills = bulk_kills = 0
        deadline = started + self.config.max_seconds
        while len(lives) < self.config.max_lives and time.monotonic() < deadline:
            want_kill = kills < self.config.kills
            want_bulk = bulk_kills < self.config.bulk_kills
            if self.source.judged_by_clean_run and not want_kill and not want_bulk and self.clean is None:
                # This life should be the last, on a source at rest: the clean run reads a copy of it meanwhile.
                self.clean = CleanRunInFlight(self, pipeline, self.tmp / f"clean-{len(lives)}")
            life = self._life(len(lives), pipeline, env, kill=want_kill, at_bulk=want_bulk, deadline=deadline)
            if life.killed and life.kill_phase == "bulk:results recorded":
                life.kill_phase = "random"  # the job finished and was recorded before the kill landed
            lives.append(life)
            if life.killed:
                kills += 1
                bulk_kills += life.kill_phase.startswith("bulk")
            elif life.exit_code in RUN_FINISHED and kills >= self.config.kills and bulk_kills >= self.config.bulk_kills:
                break
            elif life.exit_code in RUN_FINISHED and len(lives) >= self.config.max_lives:
                break  # no life follows to sync an edit made now: the source stays as this last life left it
            elif life.exit_code in RUN_FINISHED:
                # It finished before enough kills: give it more to do. Short of Bulk kills, touch enough
                # orders that Order and OrderItem cross bulk_threshold again, so the next life runs Bulk jobs.
                self._edit_some(4)
                if bulk_kills < self.config.bulk_kills:
                    self.source.touch_orders(self.config.bulk_threshold, self.rng)
                if self.clean is not None:  # it read the source before these edits
                    self.clean.stop()
                    self.clean = None
            elif life.exit_code is not None and life.exit_code not in RUN_FINISHED:
                # A run that gives up (every retry of a call failed) is restarted, as a scheduler would; it
                # is reported, and the reconciliation at the end says whether it cost anything.
                life.error = self._tail(life).strip().splitlines()[-1:][0] if self._tail(life).strip() else "?"
        source = self.source.name
        faults = {f"{source}:{k}": v for k, v in self.source.sandbox.faults.describe()["injected"].items()}
        faults |= {f"salesforce:{k}": v for k, v in self.org.faults.describe()["injected"].items()}
        self.source.sandbox.faults.clear()
        self.org.faults.clear()
        records = self._records(self.org_run)
        store = self._store()
        letters = store.find_dead_letters(LetterFilter(pipeline="chaos", status=None), 1_000_000)
        result = ChaosResult(
            config=self.config,
            lives=lives,
            reconciliation=self.source.reconcile(records, letters, self.edited, lambda: self._clean_run(pipeline)),
            faults=faults,
            records={o: len(records[o]) for o in OBJECTS},
            dead_letters=dict(Counter(d.error_code for d in letters if d.status == "open")),
            bulk_jobs=dict(Counter(j.state for j in self.org.bulk.ingest_jobs.values())),
            api_calls={source: self.source.api_calls(), "salesforce": self.org.state.budget.used},
            bulk_reuploads=self._bulk_reuploads(),
            edited=set(self.edited),
            seconds=time.monotonic() - started,
            process_start_seconds=process_start,
            final_run=lives[-1].stats or {} if lives else {},
            ledger_calls=sum(n for _, n in store.api_call_buckets("chaos", "salesforce", 0)),
        )
        store.close()
        return result

    def _store(self) -> Any:
        if self.state_url:
            from ferry.store.postgres import PostgresStore

            return PostgresStore(self.state_url)
        return Store(self.db_path)

    def _clean_run(self, pipeline: Path) -> tuple[dict[str, list[dict[str, Any]]], list[DeadLetter]]:
        """What a clean run gives, over the source's final state: the one started with the last life, else a
        new one (a life that should have been the last was not: the source changed after it)."""
        if self.clean is None:
            self.clean = CleanRunInFlight(self, pipeline, self.tmp / "clean")
        return self.clean.result()

    def _life(
        self, index: int, pipeline: Path, env: dict[str, str], *, kill: bool, at_bulk: bool, deadline: float
    ) -> Life:
        life = Life(index, time.time())
        self._run_life(
            life, [*self.ferry_flags, "run", str(pipeline), "--json"], env,
            lambda proc, before: self._watch(proc, life, before, kill=kill, at_bulk=at_bulk, deadline=deadline),
        )
        return life

    def _run_life(
        self, life: Life, args: list[str], env: dict[str, str],
        watch: Callable[[subprocess.Popen[bytes], int], None], *, ended: Callable[[], None] | None = None,
    ) -> None:
        """``ferry <args>`` as one life, watched by ``watch(proc, before)`` (``before``: the last run id before
        it); then ``ended`` (if any), the process killed if it still runs, and the life's exit, stats (its
        --json output) and progress noted."""
        out = open(self.tmp / f"life-{life.index}.out", "w")  # noqa: SIM115 - closed below, after the process
        err = open(self.tmp / f"life-{life.index}.err", "w")  # noqa: SIM115
        before = self._max_run_id()
        proc = subprocess.Popen([sys.executable, "-m", "ferry", *args], env=env, stdout=out, stderr=err)
        try:
            watch(proc, before)
        finally:
            if ended is not None:
                ended()
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            out.close()
            err.close()
        life.exit_code = None if life.killed else proc.returncode
        if not life.killed:
            with contextlib.suppress(ValueError):
                life.stats = json.loads((self.tmp / f"life-{life.index}.out").read_text() or "null")
        self._note_progress(life, before)

    def _watch(
        self, proc: subprocess.Popen[bytes], life: Life, before: int, *, kill: bool, at_bulk: bool, deadline: float
    ) -> None:
        """Kill at a random moment after the life's first durable progress (``kill``), or while a Bulk job is
        in flight (``at_bulk``), whichever comes first; a job seen in flight takes over a pending random kill."""
        kill_at: float | None = None
        mode = ""
        # Edits only go into lives that will be killed: the last life runs on a source at rest, as a
        # scheduled run after the last edit would (an edit after a run's last page is the next run's).
        edits_left = self.config.edits_per_life if kill else 0
        progressed_at: float | None = None
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("chaos run out of time")
            now = time.time()
            progressed = self._progress_at(before) is not None
            if progressed and progressed_at is None:
                progressed_at = now
            if progressed and edits_left:
                self._edit_some(1)
                edits_left -= 1
            if at_bulk and mode != "bulk" and self._open_job_states():
                # Within the org's queue time of the job first seen: the kill lands while it is in flight.
                mode, kill_at = "bulk", now + self.rng.uniform(0.0, 0.8 * self.config.bulk_queue_seconds)
            elif kill and progressed and kill_at is None:
                mode, kill_at = "random", now + self.rng.uniform(*self._kill_window())
            if kill_at is not None and now >= kill_at:
                if mode == "bulk":
                    states = self._open_job_states()
                    self._kill(proc, life, "bulk:" + "+".join(sorted(set(states)) or ["results recorded"]))
                else:
                    self._kill(proc, life, "random")
                return
            time.sleep(0.02)
        if progressed_at is not None:
            self._finished_after = time.time() - progressed_at

    def _kill_window(self) -> tuple[float, float]:
        """``kill_after``, its end brought within how long the last finished life ran after its first progress."""
        lo, hi = self.config.kill_after
        if self._finished_after is not None:
            hi = max(lo, min(hi, 0.9 * self._finished_after))
        return lo, hi

    def _kill(self, proc: subprocess.Popen[bytes], life: Life, phase: str) -> None:
        if proc.poll() is not None:
            return  # it finished first
        doing = self._doing()
        os.kill(proc.pid, signal.SIGKILL)
        life.killed, life.kill_phase, life.killed_while = True, phase, doing

    # ------------------------------------------------------------------ observing the ferry process

    def _db(self) -> sqlite3.Connection | None:
        if not self.db_path.exists():
            return None
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.state_url:
            return self._query_postgres(sql, *args)
        conn = self._db()
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # the schema is not there yet
        finally:
            conn.close()

    def _query_postgres(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg

        assert self.state_url
        try:
            with psycopg.connect(self.state_url, autocommit=True, connect_timeout=5) as conn:
                # The pairs' SQLite JSON test (json_extract(state, '$.x') IS NOT NULL), in PostgreSQL's words.
                sql = re.sub(
                    r"json_extract\(state, '\$\.(\w+)'\) IS NOT NULL",
                    r"COALESCE(jsonb_typeof(state::jsonb -> '\1'), 'null') <> 'null'",
                    sql,
                )
                return conn.execute(sql.replace("?", "%s"), args).fetchall()  # type: ignore[arg-type]
        except psycopg.Error:
            return []

    def _max_run_id(self) -> int:
        rows = self._query("SELECT MAX(id) FROM runs")
        return int(rows[0][0] or 0) if rows else 0

    def _progress_at(self, before: int) -> str | None:
        rows = self._query("SELECT progress_at FROM runs WHERE id > ? ORDER BY id LIMIT 1", before)
        return rows[0][0] if rows and rows[0][0] else None

    def _note_progress(self, life: Life, before: int) -> None:
        rows = self._query("SELECT id, progress_at FROM runs WHERE id > ? ORDER BY id LIMIT 1", before)
        if rows:
            life.run_id = rows[0][0]
            if rows[0][1]:
                at = dt.datetime.strptime(rows[0][1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
                life.progress_after = at.timestamp() - life.started

    def _doing(self) -> str:
        """The run's phase as its durable state shows it (read, Bulk job, outbox), for the kill figures."""
        # A stream read under way: the source's state holds its progress until its last page.
        if self._query(f"SELECT 1 FROM read_states WHERE {self.source.reading_sql} LIMIT 1"):
            return "reading"
        if self._query("SELECT 1 FROM bulk_jobs LIMIT 1"):
            return "bulk job in flight"
        if self._query("SELECT 1 FROM outbox LIMIT 1"):
            return "writing"
        return "set-up or planning"

    def _open_job_states(self) -> list[str]:
        """The org's state of every Bulk job the ferry store says is in flight."""
        ids = [r[0] for r in self._query("SELECT job_id FROM bulk_jobs WHERE pipeline = 'chaos'")]
        jobs = self.org.bulk.ingest_jobs
        return [jobs[i].state if i in jobs else "recorded" for i in ids]

    # ------------------------------------------------------------------ the source and the target

    def _edit_some(self, n: int) -> None:
        """Rename a few valid registered customers in the source (a new version while ferry runs)."""
        self.edited |= self.source.edit_people(n, self.rng)

    def _records(self, org_run: RunningSandbox) -> dict[str, list[dict[str, Any]]]:
        ctx = ssl.create_default_context(cafile=str(org_run.ca_file))
        with httpx.Client(verify=ctx, timeout=60) as client:
            return {o: client.get(f"{org_run.url}/__sandbox/records/{o}").json() for o in OBJECTS}

    def _bulk_reuploads(self) -> int:
        """Records (object, external id) carried by more than one Bulk job that the org processed."""
        carried: Counter[tuple[str, str]] = Counter()
        for job in self.org.bulk.ingest_jobs.values():
            if job.state not in ("JobComplete", "InProgress", "UploadComplete") or not job.data:
                continue
            lines = job.data.decode("utf-8").splitlines()
            header = lines[0].split(",")
            ext = self.source.external_id[job.sobject.name]
            if ext not in header:
                continue
            col = header.index(ext)
            for row in csv.reader(lines[1:]):
                carried[(job.sobject.name, row[col])] += 1
        return sum(1 for (obj, key), n in carried.items() if n > 1 and key not in self.edited)

    def _tail(self, life: Life) -> str:
        return (self.tmp / f"life-{life.index}.err").read_text()[-3000:]


class CleanRunInFlight:
    """A clean run: the chaos pipeline, never killed and fault-free, from a copy of the source as it is now
    (its own sandbox, no faults) into a new org with its own ferry home. It runs alongside the chaos run's
    last life, whose source is at rest; ``result()`` waits for it."""

    def __init__(self, chaos: Chaos, pipeline: Path, tmp: Path) -> None:
        tmp.mkdir()
        self.chaos = chaos
        self.home = tmp / "home"
        source = chaos.source.at_rest_copy(tmp)
        self.org = SalesforceSandbox(tmp, seed=chaos.config.seed)
        self.org.bulk.queue_delay = lambda: 0.0
        self.source_run = start_in_thread(source.app, tmp)
        self.org_run = start_in_thread(self.org.app, tmp)
        env = chaos._env(self.org, self.org_run, self.home, (source, self.source_run))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", "run", str(pipeline), "--json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "clean.err", "w"),  # noqa: SIM115 - the child holds it; read after it ends
        )
        self.err = tmp / "clean.err"

    def result(self) -> tuple[dict[str, list[dict[str, Any]]], list[DeadLetter]]:
        try:
            code = self.proc.wait(timeout=600)
            assert code in RUN_FINISHED, f"the clean run failed: {self.err.read_text()[-3000:]}"
            records = self.chaos._records(self.org_run)
        finally:
            self.stop()
        store = Store(self.home / "ferry.db")
        try:
            return records, store.find_dead_letters(LetterFilter(pipeline="chaos", status=None), 1_000_000)
        finally:
            store.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.org_run.stop()
        self.source_run.stop()
