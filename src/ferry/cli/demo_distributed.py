"""`ferry demo --workers N [--kill-worker]`: the demo store synced by N `ferry worker` processes over the shared
state (PostgreSQL, ``FERRY_STATE_URL``) and the work bus (NATS JetStream, ``FERRY_BUS_URL``), optionally with one
worker SIGKILLed while it holds rows of the load, then the org checked record by record (demo_distributed_check).

Everything runs through the public entry points a person would type: the sandboxes as `ferry sandbox serve`, the
workers as `ferry worker PIPELINE.yml`, the coordinator as `ferry run PIPELINE.yml --distributed --json`, each a
child process. The demo only watches the shared state (who holds outbox rows) to choose when and whom to kill.

The demo's state lives in the shared database under its own pipeline name (``demo-distributed``), reset at the
start of every demo: a real pipeline's runs, outbox, versions and dead letters are never touched. The bus is
shared too (one JetStream stream for every pipeline): run the demo against a bus no production worker serves,
or those workers (not given the demo's pipeline file) would take the demo's items and dead-letter them.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ferry.cli.demo import DEFAULT_FLOW, FLOWS, DemoFlow
from ferry.cli.demo_distributed_check import OrgCheck, check_org
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.errors import ConfigError, FerryError
from ferry.paths import ferry_home

DISTRIBUTED_PIPELINE = "demo-distributed"
README_HINT = "README.md, 'Scale out'"
WORKER_START_TIMEOUT = 60.0  # a worker connects to PostgreSQL and NATS and creates the bus's consumers
WORKER_STOP_TIMEOUT = 60.0  # SIGTERM: a worker finishes the items in hand first
POLL_SECONDS = 0.05  # how often the demo looks at who holds outbox rows (a 200-row write takes ~1 s modeled)
STATUS_SECONDS = 3.0  # a progress line this often
# Set for the children unless the environment sets them: a killed worker's items come back after the ack wait
# (30 s by default, long for a demo); smaller work items spread a small store over every worker.
DEMO_TUNING = {"FERRY_BUS_ACK_WAIT": "10", "FERRY_WORK_BATCH": "100"}


class DemoStopped(BaseException):
    """SIGTERM reached the demo: everything it started is stopped on the way out. A BaseException, as
    KeyboardInterrupt is, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


# -- preflight -------------------------------------------------------------------------------------------------


def require_shared_services() -> None:
    """Both URLs set, PostgreSQL reachable and migrated, NATS reachable with JetStream: else a ConfigError (exit 2)
    naming what is missing and how to fix it. The checks are `ferry doctor`'s; a fresh bus without ferry's streams
    is fine (the coordinator and the workers create them)."""
    from ferry.cli.doctor import check_bus, check_state
    from ferry.store.url import STATE_URL_ENV

    missing = [name for name, value in ((STATE_URL_ENV, os.environ.get(STATE_URL_ENV, "")),
                                        ("FERRY_BUS_URL", os.environ.get("FERRY_BUS_URL", "")))
               if not value.strip()]
    if missing:
        raise ConfigError(
            f"ferry demo --workers needs PostgreSQL and NATS JetStream: set {' and '.join(missing)} "
            f"(FERRY_STATE_URL=postgresql://..., FERRY_BUS_URL=nats://...; {README_HINT})"
        )
    if not os.environ[STATE_URL_ENV].strip().startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"ferry demo --workers needs the state in PostgreSQL: {STATE_URL_ENV}=postgresql://... "
                          f"({README_HINT})")
    failed = [c for c in (*check_state(), *check_bus()) if not c.ok and c.name != "bus streams"]
    if failed:
        problems = "; ".join(f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "") for c in failed)
        raise ConfigError(f"ferry demo --workers: {problems}; see {README_HINT}")


# -- child processes --------------------------------------------------------------------------------------------


def _ferry_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ferry", *args]


@dataclass
class WorkerProcess:
    number: int  # 1..N, as the demo prints them
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes]
    killed_at: float | None = None  # monotonic time of the demo's SIGKILL
    stop_code: int | None = None  # its exit code once stopped

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


def start_workers(count: int, pipeline: Path, env: dict[str, str], folder: Path) -> list[WorkerProcess]:
    workers: list[WorkerProcess] = []
    for number in range(1, count + 1):
        log = folder / f"worker-{number}.log"
        command = _ferry_command("-v", "worker", str(pipeline))
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        workers.append(WorkerProcess(number, command, log, process))
    return workers


def wait_until_taking_work(workers: list[WorkerProcess], timeout: float = WORKER_START_TIMEOUT) -> None:
    """Each worker's ``worker.start`` line (logged once it is connected to the bus and its consumers exist)."""
    deadline = time.monotonic() + timeout
    waiting = list(workers)
    while waiting:
        for w in list(waiting):
            if "worker.start" in _read(w.log):
                waiting.remove(w)
            elif not w.alive():
                raise FerryError(f"worker {w.number} (pid {w.pid}) exited {w.process.returncode} before taking work: "
                                 f"{_tail(w.log)}")
        if waiting and time.monotonic() > deadline:
            raise FerryError(f"worker(s) {', '.join(str(w.number) for w in waiting)} not taking work after "
                             f"{timeout:.0f} s: {_tail(waiting[0].log)}")
        time.sleep(0.1)


def stop_workers(workers: list[WorkerProcess], timeout: float = WORKER_STOP_TIMEOUT) -> None:
    """SIGTERM (a clean stop: items in hand finish), then SIGKILL for one that does not exit in time."""
    for w in workers:
        if w.alive():
            w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in workers:
        try:
            w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait(timeout=10)
        if w.stop_code is None:
            w.stop_code = w.process.returncode


def _stop_process(process: subprocess.Popen[Any] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 5) -> str:
    return " | ".join(_read(path).strip().splitlines()[-lines:]) or "no output"


# -- watching the shared state: who holds rows, whom to kill ----------------------------------------------------


def owner_pid(owner: str) -> int | None:
    """The pid in a lease owner of this host (``worker_id()``: host:pid:random), else None."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return int(parts[1])


@dataclass
class Watch:
    """What the demo saw of the load while the coordinator ran."""

    peak_queued: int = 0
    queued: int = 0
    held: dict[int, int] = field(default_factory=dict)  # worker number -> rows it holds now
    victim: WorkerProcess | None = None
    victim_rows: int = 0  # rows the victim held when it was killed
    victim_queued: int = 0  # rows still queued then (of peak_queued)


def held_by_worker(store: Any, workers: list[WorkerProcess]) -> dict[int, int]:
    by_pid = {w.pid: w.number for w in workers}
    held: dict[int, int] = {}
    for owner, rows in store.outbox_holders(DISTRIBUTED_PIPELINE).items():
        pid = owner_pid(owner)
        if pid in by_pid:
            held[by_pid[pid]] = held.get(by_pid[pid], 0) + rows
    return held


KILL_AFTER_SHARE = 0.2  # the kill comes once this share of the planned rows is written: mid-load, not at its start


def choose_victim(watch: Watch, workers: list[WorkerProcess]) -> WorkerProcess | None:
    """A worker to SIGKILL now: the load is well under way (a fifth of the rows left the outbox, written) and it
    holds claimed rows right now, the most of any worker: its death leaves leased rows and unacknowledged items."""
    written = watch.peak_queued - watch.queued
    if not watch.held or watch.peak_queued == 0 or written < KILL_AFTER_SHARE * watch.peak_queued:
        return None
    number, _ = max(watch.held.items(), key=lambda item: item[1])
    return next((w for w in workers if w.number == number and w.alive()), None)


def require_alive(workers: list[WorkerProcess], sandboxes: list[SandboxProcess]) -> None:
    """The run cannot end well without a worker or a sandbox: say so at once instead of waiting on it."""
    gone = [s.system for s in sandboxes if s.process.poll() is not None]
    if gone:
        raise FerryError(f"the {' and '.join(gone)} sandbox exited during the run")
    if workers and not any(w.alive() for w in workers):
        codes = ", ".join(f"worker {w.number}: {w.process.returncode}" for w in workers)
        raise FerryError(f"every worker exited during the run ({codes}); their logs: {workers[0].log.parent}")


def watch_run(
    run: subprocess.Popen[bytes], store: Any, workers: list[WorkerProcess], kill: bool, say: Callable[[str], None],
    ack_wait: str = "?", sandboxes: list[SandboxProcess] | None = None,
) -> Watch:
    """Until the coordinator exits: the outbox and its holders, a line every few seconds, and the kill."""
    watch = Watch()
    next_status = time.monotonic() + STATUS_SECONDS
    while run.poll() is None:
        require_alive(workers, sandboxes or [])
        watch.queued = store.outbox_count(DISTRIBUTED_PIPELINE)
        watch.peak_queued = max(watch.peak_queued, watch.queued)
        watch.held = held_by_worker(store, workers)
        if kill and watch.victim is None:
            victim = choose_victim(watch, workers)
            if victim is not None:
                victim.process.send_signal(signal.SIGKILL)
                victim.killed_at = time.monotonic()
                watch.victim, watch.victim_rows, watch.victim_queued = victim, watch.held[victim.number], watch.queued
                say(f"  SIGKILL worker {victim.number} (pid {victim.pid}): it held {watch.victim_rows} claimed rows; "
                    f"{watch.queued:,} of {watch.peak_queued:,} rows still queued")
                say(f"  its claims and items come back to the others after the ack wait "
                    f"(FERRY_BUS_ACK_WAIT={ack_wait} s)")
        if time.monotonic() >= next_status:
            next_status += STATUS_SECONDS
            holding = ", ".join(f"worker {n} {rows}" for n, rows in sorted(watch.held.items())) or "none"
            say(f"  outbox: {watch.queued:,} of {watch.peak_queued:,} rows still to write; claimed now: {holding}"
                if watch.peak_queued else "  the coordinator is reading the store and planning the writes")
        time.sleep(POLL_SECONDS)
    return watch


# -- files -----------------------------------------------------------------------------------------------------


def demo_folder() -> Path:
    return ferry_home() / "demo" / DISTRIBUTED_PIPELINE


def write_pipeline_files(flow: DemoFlow, env: dict[str, str], folder: Path) -> tuple[Path, Path]:
    """The example pipeline under the demo's own name, and the sandboxes' variables (never the state or bus URL:
    they can carry a password, and the person's shell has them already)."""
    folder.mkdir(parents=True, exist_ok=True)
    pipeline, env_file = folder / f"{DISTRIBUTED_PIPELINE}.yml", folder / f"{DISTRIBUTED_PIPELINE}.env"
    text = flow.example.read_text(encoding="utf-8")
    pipeline.write_text(re.sub(r"(?m)^name: .*$", f"name: {DISTRIBUTED_PIPELINE}", text, count=1), encoding="utf-8")
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()), encoding="utf-8")
    env_file.chmod(0o600)
    return pipeline, env_file


# -- the demo --------------------------------------------------------------------------------------------------


@dataclass
class DistributedDemo:
    """The outcome: what ran, what was killed, what the org check found."""

    workers: list[WorkerProcess]
    run_exit: int
    run_stats: dict[str, Any] | None
    seconds: float
    watch: Watch
    check: OrgCheck
    kill_requested: bool
    files: dict[str, str]

    @property
    def killed(self) -> list[WorkerProcess]:
        """Workers that died during the run: the demo's victim, or one a person killed by hand."""
        return [w for w in self.workers if w.killed_at is not None or (w.stop_code is not None and w.stop_code < 0)]

    @property
    def problems(self) -> list[str]:
        found = list(self.check.problems)
        if self.run_exit not in (0, 4):  # done, or done with dead letters within the pipeline's share
            found.append(f"the distributed run exited {self.run_exit}")
        if self.kill_requested and self.watch.victim is None:
            found.append("no worker was killed: none held claimed rows while the load ran")
        clean = [w for w in self.workers if w not in self.killed and w.stop_code != 0]
        found += [f"worker {w.number} stopped with exit code {w.stop_code}" for w in clean]
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pipeline": DISTRIBUTED_PIPELINE,
            "workers": len(self.workers),
            "killed": [{"worker": w.number, "pid": w.pid, "signal": "SIGKILL",
                        "held_rows": self.watch.victim_rows if w is self.watch.victim else None,
                        "queued_rows": self.watch.victim_queued if w is self.watch.victim else None,
                        "by": "demo" if w is self.watch.victim else "hand"} for w in self.killed],
            "worker_exit_codes": [w.stop_code for w in self.workers],
            "run_exit": self.run_exit,
            "run_status": (self.run_stats or {}).get("status"),
            "seconds": round(self.seconds, 1),
            **self.check.as_dict(),
            "problems": self.problems,
            "files": self.files,
        }


@contextmanager
def _sigterm_stops_the_demo() -> Iterator[None]:
    """SIGTERM raises in the main thread like Ctrl-C does, so every child is stopped by the ``finally`` blocks."""

    def stop(signum: int, _frame: Any) -> None:
        raise DemoStopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_distributed_demo(
    *, workers: int, kill: bool, customers: int, products: int, orders: int, seed: int,
    say: Callable[[str], None], flow: str = DEFAULT_FLOW,
) -> DistributedDemo:
    if flow != DEFAULT_FLOW:
        raise ConfigError(f"ferry demo --workers runs the {DEFAULT_FLOW} flow only, not {flow}")
    if kill and workers < 2:
        raise ConfigError("--kill-worker needs --workers 2 or more: the others take over the killed one's work")
    require_shared_services()
    chosen = FLOWS[flow]
    with _sigterm_stops_the_demo():
        return _run(chosen, workers, kill, customers, products, orders, seed, say)


def _run(
    flow: DemoFlow, count: int, kill: bool, customers: int, products: int, orders: int, seed: int,
    say: Callable[[str], None],
) -> DistributedDemo:
    from ferry.engine.pipeline import load_pipeline
    from ferry.store.factory import open_store

    folder = demo_folder()
    folder.mkdir(parents=True, exist_ok=True)
    say(f"ferry demo --workers {count}{' --kill-worker' if kill else ''}: a messy Shopify store ({customers:,} "
        f"customers, {products:,} products, {orders:,} orders, seed {seed})")
    say(f"  into an empty Salesforce org (a real org's latency), through {count} `ferry worker` processes")
    started: list[SandboxProcess] = []
    procs: list[WorkerProcess] = []
    run: subprocess.Popen[bytes] | None = None
    store = open_store()
    try:
        sandbox_dir = ferry_home() / "sandbox"
        shop = start_sandbox("shopify", sandbox_dir, ["--seed", str(seed), "--customers", str(customers),
                                                      "--products", str(products), "--orders", str(orders)])
        started.append(shop)
        org = start_sandbox("salesforce", sandbox_dir, ["--seed", str(seed), "--latency", "real"])
        started.append(org)
        say(f"  Shopify sandbox     {shop.url}\n  Salesforce sandbox  {org.url}")
        sandbox_env = flow.env(shop.info, org.info)
        pipeline, env_file = write_pipeline_files(flow, sandbox_env, folder)
        # The sandboxes start empty every time, so the demo's state in the shared database must too.
        store.reset_pipeline(DISTRIBUTED_PIPELINE)
        child_env = {**DEMO_TUNING, **os.environ, **sandbox_env, "PYTHONUNBUFFERED": "1"}
        procs = start_workers(count, pipeline, child_env, folder)
        _say_workers(say, procs, pipeline, env_file)
        wait_until_taking_work(procs)
        say(f"  {count} workers taking work; the coordinator reads, plans and hands out the loads:")
        say(f"    ferry run {shlex.quote(str(pipeline))} --distributed")
        started_at = time.monotonic()
        run_log, run_json = folder / "run.log", folder / "run.json"
        with run_log.open("wb") as err, run_json.open("wb") as out:
            run = subprocess.Popen(_ferry_command("run", str(pipeline), "--distributed", "--json"), env=child_env,
                                   stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        watch = watch_run(run, store, procs, kill, say, child_env["FERRY_BUS_ACK_WAIT"], started)
        run_exit = run.wait()
        seconds = time.monotonic() - started_at
        stop_workers(procs)
        say(f"  run exited {run_exit} after {seconds:.1f} s; workers stopped (exit codes "
            f"{', '.join(str(w.stop_code) for w in procs)})")
        say("  checking the org record by record against the store\n")
        stats = _parse_stats(run_json.read_bytes())
        require_alive([], started)
        check = check_org(shop, org, store, load_pipeline(pipeline, child_env))
        files = {"pipeline": str(pipeline), "env": str(env_file), "run_log": str(run_log),
                 **{f"worker_{w.number}_log": str(w.log) for w in procs}}
        return DistributedDemo(procs, run_exit, stats, seconds, watch, check, kill, files)
    finally:
        _stop_process(run)
        stop_workers(procs)
        for sandbox in reversed(started):
            sandbox.stop()
        store.close()


def _say_workers(say: Callable[[str], None], procs: list[WorkerProcess], pipeline: Path, env_file: Path) -> None:
    say("  workers (to kill one by hand, from another shell: kill -9 PID):")
    for w in procs:
        say(f"    worker {w.number}  pid {w.pid}  log {w.log}")
    say(f"  each runs: ferry -v worker {shlex.quote(str(pipeline))}")
    say(f"  with the sandboxes' variables: . {shlex.quote(str(env_file))}")


def _parse_stats(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode(errors="replace").strip().splitlines()):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return None


def render_lines(report: dict[str, Any]) -> list[str]:
    """The short table a person reads: workers, the kill, records per object, duplicates, missing, dead letters."""
    killed = ", ".join(f"worker {k['worker']} (pid {k['pid']}, {k['by']}"
                       + (f", held {k['held_rows']} rows" if k["held_rows"] is not None else "") + ")"
                       for k in report["killed"]) or "none"
    lines = [f"workers {report['workers']}, killed: {killed}; run {report['run_status']} (exit "
             f"{report['run_exit']}) in {report['seconds']} s",
             f"{'object':<16}{'expected':>9}{'landed':>9}{'dead-lettered':>15}{'duplicates':>12}{'missing':>9}"
             f"{'unexpected':>12}"]
    for name, o in report["objects"].items():
        lines.append(f"{name:<16}{o['expected']:>9,}{o['landed']:>9,}{o['dead_lettered']:>15,}{o['duplicates']:>12,}"
                     f"{o['missing']:>9,}{o['unexpected']:>12,}")
    t = report["totals"]
    lines.append(f"{'total':<16}{t['expected']:>9,}{t['landed']:>9,}{t['dead_lettered']:>15,}{t['duplicates']:>12,}"
                 f"{t['missing']:>9,}{t['unexpected']:>12,}")
    codes = ", ".join(f"{code} {n}" for code, n in report["dead_letter_codes"].items()) or "none"
    lines += [f"dead letters ({report['dead_letters']:,}) by reason:", f"  {codes}"]
    if report["ok"]:
        lines.append("every record landed once: 0 duplicates, 0 missing; every dead letter has its reason")
    else:
        lines += [f"PROBLEM: {p}" for p in report["problems"]]
    lines.append(f"logs: {Path(report['files']['run_log']).parent}")
    return lines

