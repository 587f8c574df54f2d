"""The chaos harness: a real `ferry run` process, killed with SIGKILL at random moments, against faulty sandboxes.

Both sandboxes run in this process (threads, HTTPS on loopback) with fault injection on; the ferry
process runs the example pipeline and is killed (SIGKILL: no cleanup, no flush) at random moments
after it made durable progress, and at least `bulk_kills` times while a Bulk job is open (seen in its
state store's `bulk_jobs` table, with the job's state on the org at that instant). It is restarted until
it finishes. Customers are edited through the Shopify API while runs are going (latest wins). At the
end the target is reconciled record by record against the source.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import random
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ferry.cli.demo import demo_env
from ferry.cli.exits import RUN_FINISHED
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.store import LetterFilter, Store
from tests.chaos.reconcile import Reconciliation, reconcile
from tests.e2e.test_sync_fidelity import EXTERNAL_ID, OBJECTS, derive

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shopify-to-salesforce.yml"
SHOPIFY_API = "2025-07"


@dataclass
class ChaosConfig:
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
    expire_session_every: int = 500  # the org invalidates the session token every N API calls


def shopify_faults(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "rules": [
            {"kind": "503", "rate": 0.05},
            {"kind": "reset", "rate": 0.02},
            {"kind": "timeout", "rate": 0.01, "hold_seconds": 3.0},
            {"kind": "429", "rate": 0.01, "burst": 5, "retry_after": 0.5},
        ],
    }


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
    faults: dict[str, int]  # injected faults by kind ("shopify:503", "salesforce:lock_row", ...)
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
            "lost": r.total("lost"),
            "duplicated": r.total("duplicated"),
            "extra": r.total("extra"),
            "wrong_or_stale": r.total("wrong"),
            "stale": r.total("stale"),
            "valid_wrongly_dead_lettered": r.total("wrongly_dead_lettered"),
            "invalid": r.total("invalid"),
            "invalid_dead_lettered_right_reason": r.total("invalid_right_reason"),
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
    def __init__(self, tmp: Path, config: ChaosConfig) -> None:
        self.tmp = tmp
        self.config = config
        self.rng = random.Random(config.seed)
        self.home = tmp / "home"
        self.db_path = self.home / "ferry.db"
        self.edited: set[str] = set()
        self.shop = ShopifySandbox(
            tmp, seed=config.seed, customers=config.customers, products=config.products, orders=config.orders
        )
        self.org = SalesforceSandbox(tmp, seed=config.seed)
        self.org.bulk.queue_delay = lambda: config.bulk_queue_seconds
        self.shop_run: RunningSandbox | None = None
        self.org_run: RunningSandbox | None = None

    # ------------------------------------------------------------------ set-up

    def __enter__(self) -> Chaos:
        self.shop_run = start_in_thread(self.shop.app, self.tmp)
        self.org_run = start_in_thread(self.org.app, self.tmp)
        return self

    def __exit__(self, *exc: object) -> None:
        for running in (self.org_run, self.shop_run):
            if running is not None:
                running.stop()

    def _pipeline(self) -> Path:
        spec = yaml.safe_load(EXAMPLE.read_text())
        spec["name"] = "chaos"
        spec["source"].update(page_size=self.config.page_size, timeout_seconds=1.5)
        spec["target"].update(
            bulk_threshold=self.config.bulk_threshold, timeout_seconds=3.0, bulk_poll_max_interval=1.0
        )
        # Enough tries that 3% lock errors and 5% 5xx never exhaust a valid record's budget.
        spec["retry"] = {"max_attempts": 10, "backoff_max_seconds": 1.0}
        path = self.tmp / "chaos.yml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def _env(self) -> dict[str, str]:
        assert self.shop_run and self.org_run
        shop = {**self.shop.credentials(self.shop_run.url), "ca_file": str(self.shop_run.ca_file)}
        org = {**self.org.credentials(self.org_run.url), "ca_file": str(self.org_run.ca_file)}
        return {**os.environ, **demo_env(shop, org), "FERRY_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}

    # ------------------------------------------------------------------ the run

    def run(self) -> ChaosResult:
        assert self.shop_run and self.org_run
        started = time.monotonic()
        pipeline, env = self._pipeline(), self._env()
        spawn = time.monotonic()
        subprocess.run([sys.executable, "-m", "ferry", "--help"], env=env, capture_output=True, check=True)
        process_start = time.monotonic() - spawn
        self.shop.faults.configure(shopify_faults(self.config.seed))
        self.org.faults.configure(salesforce_faults(self.config.seed, self.config.expire_session_every))
        lives: list[Life] = []
        kills = bulk_kills = 0
        deadline = started + self.config.max_seconds
        while len(lives) < self.config.max_lives and time.monotonic() < deadline:
            want_kill = kills < self.config.kills
            want_bulk = bulk_kills < self.config.bulk_kills
            life = self._life(len(lives), pipeline, env, kill=want_kill, at_bulk=want_bulk, deadline=deadline)
            if life.killed and life.kill_phase == "bulk:results recorded":
                life.kill_phase = "random"  # the job finished and was recorded before the kill landed
            lives.append(life)
            if life.killed:
                kills += 1
                bulk_kills += life.kill_phase.startswith("bulk")
            elif life.exit_code in RUN_FINISHED and kills >= self.config.kills and bulk_kills >= self.config.bulk_kills:
                break
            elif life.exit_code in RUN_FINISHED:
                # It finished before enough kills: give it more to do. Short of Bulk kills, touch enough
                # orders that Order and OrderItem cross bulk_threshold again, so the next life runs Bulk jobs.
                self._edit_some(4)
                if bulk_kills < self.config.bulk_kills:
                    self._touch_orders(self.config.bulk_threshold)
            elif life.exit_code is not None and life.exit_code not in RUN_FINISHED:
                # A run that gives up (every retry of a call failed) is restarted, as a scheduler would; it
                # is reported, and the reconciliation at the end says whether it cost anything.
                life.error = self._tail(life).strip().splitlines()[-1:][0] if self._tail(life).strip() else "?"
        faults = {f"shopify:{k}": v for k, v in self.shop.faults.describe()["injected"].items()}
        faults |= {f"salesforce:{k}": v for k, v in self.org.faults.describe()["injected"].items()}
        self.shop.faults.clear()
        self.org.faults.clear()
        records = self._records()
        store = Store(self.db_path)
        letters = store.find_dead_letters(LetterFilter(pipeline="chaos", status=None), 1_000_000)
        exp = derive(self.shop.store)
        result = ChaosResult(
            config=self.config,
            lives=lives,
            reconciliation=reconcile(exp, records, letters, self.edited),
            faults=faults,
            records={o: len(records[o]) for o in OBJECTS},
            dead_letters=dict(Counter(d.error_code for d in letters if d.status == "open")),
            bulk_jobs=dict(Counter(j.state for j in self.org.bulk.ingest_jobs.values())),
            api_calls={"shopify": self.shop.stats.api_calls, "salesforce": self.org.state.budget.used},
            bulk_reuploads=self._bulk_reuploads(),
            edited=set(self.edited),
            seconds=time.monotonic() - started,
            process_start_seconds=process_start,
            final_run=lives[-1].stats or {} if lives else {},
            ledger_calls=sum(n for _, n in store.api_call_buckets("chaos", "salesforce", 0)),
        )
        store.close()
        return result

    def _life(
        self, index: int, pipeline: Path, env: dict[str, str], *, kill: bool, at_bulk: bool, deadline: float
    ) -> Life:
        out = open(self.tmp / f"life-{index}.out", "w")  # noqa: SIM115 - closed below, after the process
        err = open(self.tmp / f"life-{index}.err", "w")  # noqa: SIM115
        before = self._max_run_id()
        life = Life(index, time.time())
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", "run", str(pipeline), "--json"], env=env, stdout=out, stderr=err
        )
        try:
            self._watch(proc, life, before, kill=kill, at_bulk=at_bulk, deadline=deadline)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            out.close()
            err.close()
        life.exit_code = None if life.killed else proc.returncode
        if not life.killed:
            with contextlib.suppress(ValueError):
                life.stats = json.loads((self.tmp / f"life-{index}.out").read_text() or "null")
        self._note_progress(life, before)
        return life

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
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("chaos run out of time")
            now = time.time()
            progressed = self._progress_at(before) is not None
            if progressed and edits_left:
                self._edit_some(1)
                edits_left -= 1
            if at_bulk and mode != "bulk" and self._open_job_states():
                # Within the org's queue time of the job first seen: the kill lands while it is in flight.
                mode, kill_at = "bulk", now + self.rng.uniform(0.0, 0.8 * self.config.bulk_queue_seconds)
            elif kill and progressed and kill_at is None:
                mode, kill_at = "random", now + self.rng.uniform(*self.config.kill_after)
            if kill_at is not None and now >= kill_at:
                if mode == "bulk":
                    states = self._open_job_states()
                    self._kill(proc, life, "bulk:" + "+".join(sorted(set(states)) or ["results recorded"]))
                else:
                    self._kill(proc, life, "random")
                return
            time.sleep(0.02)

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
        conn = self._db()
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # the schema is not there yet
        finally:
            conn.close()

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
        # A stream read under way: the Shopify source's state holds its progress ("read") until its last page.
        if self._query("SELECT 1 FROM read_states WHERE json_extract(state, '$.read') IS NOT NULL LIMIT 1"):
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
        """Rename a few valid registered customers through the Shopify API (a new version while ferry runs)."""
        assert self.shop_run
        exp = derive(self.shop.store)
        valid = sorted(
            k
            for k in exp.people
            if not k.startswith("guest:") and k not in exp.errors["Account"] and k not in exp.errors["Contact"]
        )
        ctx = ssl.create_default_context(cafile=str(self.shop_run.ca_file))
        with httpx.Client(verify=ctx, timeout=10) as client:
            for key in self.rng.sample(valid, min(n, len(valid))):
                name = f"Chaos{self.rng.randrange(10_000)}"
                for _ in range(10):  # the sandbox's own faults apply to us too
                    try:
                        resp = client.put(
                            f"{self.shop_run.url}/admin/api/{SHOPIFY_API}/customers/{key}.json",
                            json={"customer": {"id": int(key), "first_name": name}},
                            headers={"X-Shopify-Access-Token": self.shop.access_token},
                        )
                    except httpx.TransportError:
                        continue
                    if resp.status_code == 200:
                        self.edited.add(key)
                        break

    def _touch_orders(self, n: int) -> None:
        """Change the note of n orders through the Shopify API: new versions of Order and its OrderItems."""
        assert self.shop_run
        ctx = ssl.create_default_context(cafile=str(self.shop_run.ca_file))
        ids = sorted(int(o["id"]) for o in self.shop.store.orders)
        with httpx.Client(verify=ctx, timeout=10) as client:
            for oid in self.rng.sample(ids, min(n, len(ids))):
                for _ in range(10):  # the sandbox's own faults apply to us too
                    try:
                        resp = client.put(
                            f"{self.shop_run.url}/admin/api/{SHOPIFY_API}/orders/{oid}.json",
                            json={"order": {"id": oid, "note": f"chaos {self.rng.randrange(10_000)}"}},
                            headers={"X-Shopify-Access-Token": self.shop.access_token},
                        )
                    except httpx.TransportError:
                        continue
                    if resp.status_code == 200:
                        break

    def _records(self) -> dict[str, list[dict[str, Any]]]:
        assert self.org_run
        ctx = ssl.create_default_context(cafile=str(self.org_run.ca_file))
        with httpx.Client(verify=ctx, timeout=60) as client:
            return {o: client.get(f"{self.org_run.url}/__sandbox/records/{o}").json() for o in OBJECTS}

    def _bulk_reuploads(self) -> int:
        """Records (object, external id) carried by more than one Bulk job that the org processed."""
        carried: Counter[tuple[str, str]] = Counter()
        for job in self.org.bulk.ingest_jobs.values():
            if job.state not in ("JobComplete", "InProgress", "UploadComplete") or not job.data:
                continue
            lines = job.data.decode("utf-8").splitlines()
            header = lines[0].split(",")
            ext = EXTERNAL_ID[job.sobject.name]
            if ext not in header:
                continue
            col = header.index(ext)
            for row in csv.reader(lines[1:]):
                carried[(job.sobject.name, row[col])] += 1
        return sum(1 for (obj, key), n in carried.items() if n > 1 and key not in self.edited)

    def _tail(self, life: Life) -> str:
        return (self.tmp / f"life-{life.index}.err").read_text()[-3000:]
