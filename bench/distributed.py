"""Distributed runs against the embedded mode, in the same process tree and the same minute: one Shopify
sandbox, a fresh Salesforce sandbox per run (``--latency real``: calls take what a real org's take), its own
PostgreSQL and nats-server (free ports, temp dirs). Each row: `ferry run` of the demo pipeline, wall seconds
from start to exit, records written, records/s.

    .venv/bin/python bench/distributed.py [--orders 10000] [--workers 1,2,4] [--batch 200] [--concurrency 4]

The embedded run picks its own strategy (Bulk API 2.0 for big objects); a distributed run reads every stream on
the workers and writes every object through the cheapest direct strategy (Composite) from them, as no
``bulk_threshold`` forces a job (engine/distjobs.py): the table prints both strategies.

Stopped by SIGTERM (or Ctrl-C), it stops every child it started (workers, the run, sandboxes, nats-server,
PostgreSQL) before it exits (143): ``harness/stopping.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from harness.stopping import exit_on_terminate, stop_processes  # noqa: E402
from tests.bus.natsserver import NatsServer, require_nats_server  # noqa: E402
from tests.store.postgres_server import start_server  # noqa: E402

from ferry.cli.demo import demo_env  # noqa: E402
from ferry.cli.sandboxes import SandboxProcess, start_sandbox  # noqa: E402
from ferry.store.postgres import migrate  # noqa: E402

EXAMPLE = ROOT / "examples" / "shopify-to-salesforce.yml"
# The child processes (runs, workers) import this tree's ferry, not whichever one the venv has installed.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


COORDINATOR_CPU = [0.0]
SHOP_CPU = [0.0]  # the Shopify sandbox's CPU during the row (set by the caller): the read's other side


def _cpu_line(org: float, pg: float, nats: float, workers: float | None = None) -> str:
    """CPU seconds each process spent during the row, their sum, and the load average (the machine is shared)."""
    coordinator = COORDINATOR_CPU[0]
    total = coordinator + SHOP_CPU[0] + org + pg + nats + (workers or 0.0)
    parts = [f"run CPU {coordinator:.1f} s", f"shop CPU {SHOP_CPU[0]:.1f} s", f"org CPU {org:.1f} s",
             f"pg CPU {pg:.1f} s", f"nats CPU {nats:.1f} s"]
    if workers is not None:
        parts.append(f"workers CPU {workers:.1f} s")
    return "  ".join([*parts, f"total CPU {total:.1f} s", f"load avg {os.getloadavg()[0]:.1f}"])


def _started(workers: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 60.0) -> None:
    """Until every worker has said it takes work (imports and connections done: not the run's time)."""
    deadline = time.monotonic() + timeout
    while not all("taking work" in log.read_text(errors="replace") for log in logs):
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise SystemExit(f"workers did not start: see {logs}")
        time.sleep(0.1)


def _pg_stats(admin_url: str, *, reset: bool = False) -> None:
    """Print the statements that took PostgreSQL the most time since the last reset (then reset): calls, total
    and mean milliseconds, rows. BENCH_PG_STATS_TOP (10) statements, each cut at BENCH_PG_STATS_WIDTH (110)."""
    import psycopg

    top = int(os.environ.get("BENCH_PG_STATS_TOP", "10"))
    width = int(os.environ.get("BENCH_PG_STATS_WIDTH", "110"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if not reset:
            rows = conn.execute(
                "SELECT calls, round(total_exec_time)::int, round(mean_exec_time::numeric, 2), rows, "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), %s) FROM pg_stat_statements "
                "ORDER BY total_exec_time DESC LIMIT %s",
                (width, top),
            ).fetchall()
            for calls, total_ms, mean_ms, nrows, query in rows:
                print(f"    pg {total_ms:>7} ms {calls:>7} calls {mean_ms:>8} ms/call {nrows:>8} rows  {query}")
        conn.execute("SELECT pg_stat_statements_reset()")


def _info(proc: SandboxProcess) -> dict[str, str]:
    return {k: str(v) for k, v in proc.info.items()}


def _run(env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    flags = os.environ.get("BENCH_FERRY_FLAGS", "").split()  # e.g. "-v": the run's log lines on stderr
    done = subprocess.run([sys.executable, "-m", "ferry", *flags, "run", str(EXAMPLE), "--json"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=3600, check=False)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Only the run's process is reaped meanwhile: its CPU (the coordinator's, in a distributed run).
    COORDINATOR_CPU[0] = after.ru_utime + after.ru_stime - reaped.ru_utime - reaped.ru_stime
    if os.environ.get("BENCH_FERRY_FLAGS"):
        sys.stderr.write(done.stderr)
    if done.returncode not in (0, 4):
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    Path(env["FERRY_HOME"]).mkdir(parents=True, exist_ok=True)
    (Path(env["FERRY_HOME"]) / "run.json").write_text(done.stdout)  # the run's phases, kept with the logs
    return took, json.loads(done.stdout)


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phases(stats: dict[str, Any]) -> tuple[float, float]:
    """(read+plan, load) wall seconds from the run's phase clock: everything before the loads, and the loads
    (in an overlapped distributed run, "load after read": what the workers still did after the last read)."""
    wall = stats.get("wall_seconds", {})
    load = sum(v for k, v in wall.items() if k.startswith("load "))
    before = sum(v for k, v in wall.items() if not k.startswith("load ") and k not in ("link back", "finish"))
    return before, load


def _scaling(rows: dict[int, tuple[float, float, float]]) -> None:
    """Each worker count against one worker: end to end and the load phase, beside the issue's targets. No
    Amdahl bound is printed: the loads overlap the read (and each other), so the phase clocks do not split a
    run into a fixed part and a part workers divide. The read (one shop's rate limit or bulk pace) does not
    shrink with workers."""
    if 1 not in rows:
        return
    one_e2e, one_load, _ = rows[1]
    targets = {2: 1.8, 4: 3.0}
    for n, (e2e, load, read) in sorted(rows.items()):
        if n == 1:
            continue
        print(f"scaling {n} workers vs 1: end to end {one_e2e / e2e:.2f}x, load phase {one_load / max(load, 1e-9):.2f}x"
              f" (target {targets.get(n, '-')}x; read+plan on this run's phase clock {read:.1f} s)"
              f"  load avg {os.getloadavg()[0]:.1f}")


def _row(label: str, took: float, stats: dict[str, Any]) -> str:
    written = sum(o.get("written", 0) for o in stats["objects"].values())
    strategies = ",".join(sorted({o["strategy"].replace(" (workers)", "") for o in stats["objects"].values()
                                  if o["strategy"] != "-"}))
    # The run's own phase clock: everything before the loads (prepare, read, plan) and the loads themselves.
    before, load = _phases(stats)
    return (f"{label:<14} {took:8.1f} s {written:>8} written {written / took:8.0f} rec/s  "
            f"read+plan {before:6.1f} s  load {load:6.1f} s ({written / max(load, 1e-9):6.0f} rec/s)  {strategies}")


def _embedded_row(shop: SandboxProcess, tmp: Path, latency: str, pg: Any, nats_pid: int) -> None:
    org = start_sandbox("salesforce", tmp / "org-embedded", ["--latency", latency])
    try:
        env = {**demo_env(_info(shop), _info(org)), "FERRY_HOME": str(tmp / "home-embedded"),
               "FERRY_STATE_URL": f"sqlite:///{tmp / 'embedded.db'}"}
        before, pg0, nats0 = _cpu(org.process.pid), pg.cpu_seconds(), _cpu(nats_pid)
        shop0 = _cpu(shop.process.pid)
        row = _row("embedded", *_run(env))
        SHOP_CPU[0] = _cpu(shop.process.pid) - shop0
        print(row, _cpu_line(_cpu(org.process.pid) - before, pg.cpu_seconds() - pg0, _cpu(nats_pid) - nats0),
              flush=True)
    finally:
        org.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (\"\": embedded only)")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", default="real")
    parser.add_argument("--ack-pending", type=int, default=0, help="FERRY_BUS_MAX_ACK_PENDING (default: scaled)")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded row (profiling runs)")
    args = parser.parse_args()
    exit_on_terminate()
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-dist-"))
    print(f"logs and state in {tmp}")
    # Every child is stopped by the ExitStack as soon as it is started, also when SIGTERM stops the bench
    # (exit_on_terminate: the signal raises SystemExit, so the callbacks run).
    with contextlib.ExitStack() as cleanup:
        # BENCH_PG_STATS=1: pg_stat_statements on, and each row prints the statements PostgreSQL spent most time on.
        pg_stats = os.environ.get("BENCH_PG_STATS") == "1"
        pg = start_server(settings={"shared_preload_libraries": "pg_stat_statements"} if pg_stats else None)
        cleanup.callback(pg.cleanup)
        if pg_stats:
            _pg_stats(pg.admin_url, reset=True)
        nats = NatsServer(require_nats_server(), tmp / "nats")
        cleanup.callback(nats.kill)
        nats.start()
        assert nats.proc is not None
        nats_pid = nats.proc.pid
        customers, products = max(60, args.orders // 2), max(15, args.orders // 50)
        shop = start_sandbox("shopify", tmp / "shop", ["--customers", str(customers), "--products", str(products),
                                                       "--orders", str(args.orders), "--seed", "7"])
        cleanup.callback(shop.stop)
        print(f"{args.orders} orders, {customers} customers, {products} products; Salesforce latency "
              f"{args.latency}; batch {args.batch}, concurrency {args.concurrency} per worker")
        if not args.no_embedded:
            _embedded_row(shop, tmp, args.latency, pg, nats_pid)
        scaled: dict[int, tuple[float, float, float]] = {}
        for n in [int(w) for w in args.workers.split(",") if w]:  # --workers "": the embedded row alone
            with contextlib.ExitStack() as row:
                scaled[n] = _workers_row(n, args, tmp, shop, pg, nats, nats_pid, pg_stats, row)
        _scaling(scaled)


def _workers_row(n: int, args: argparse.Namespace, tmp: Path, shop: SandboxProcess, pg: Any, nats: NatsServer,
                 nats_pid: int, pg_stats: bool, row: contextlib.ExitStack) -> tuple[float, float, float]:
    """One distributed row: a fresh database and org, ``n`` workers (stopped through ``row`` whatever happens)."""
    url = pg.fresh_database()
    migrate(url)
    org = start_sandbox("salesforce", tmp / f"org-{n}", ["--latency", args.latency])
    row.callback(org.stop)
    env = {**demo_env(_info(shop), _info(org)), "FERRY_HOME": str(tmp / f"home-{n}"), "FERRY_STATE_URL": url,
           "FERRY_BUS_URL": nats.url, "FERRY_WORK_BATCH": str(args.batch),
           # max_ack_pending bounds a partition's unacknowledged items across ALL workers: it must grow
           # with the workers, or adding workers adds no items in flight (docs/distributed.md "Tuning").
           # Load batches need no strict order: the outbox claims and the version map guard each row.
           "FERRY_BUS_MAX_ACK_PENDING": str(args.ack_pending or max(1, n * args.concurrency // 8))}
    flags = os.environ.get("BENCH_FERRY_FLAGS", "").split()  # e.g. "-vv": worker logs kept in the tmp dir
    workers: list[subprocess.Popen[bytes]] = []
    row.callback(stop_processes, workers)  # the list as it grows: a worker started is a worker stopped
    for i in range(n):
        workers.append(subprocess.Popen([sys.executable, "-m", "ferry", *flags, "worker", str(EXAMPLE),
                                         "--concurrency", str(args.concurrency)], env={**os.environ, **env},
                                        stdout=subprocess.DEVNULL, stderr=(tmp / f"worker-{n}-{i}.log").open("wb")))
    _started(workers, [tmp / f"worker-{n}-{i}.log" for i in range(n)])
    before, pg0, nats0 = _cpu(org.process.pid), pg.cpu_seconds(), _cpu(nats_pid)
    workers0 = sum(_cpu(w.pid) for w in workers)  # start-up (imports) is not the run's
    shop0 = _cpu(shop.process.pid)
    took, stats = _run(env)
    before_load, load_s = _phases(stats)
    line = _row(f"{n} worker(s)", took, stats)
    SHOP_CPU[0] = _cpu(shop.process.pid) - shop0
    print(line, _cpu_line(_cpu(org.process.pid) - before, pg.cpu_seconds() - pg0,
                          _cpu(nats_pid) - nats0, sum(_cpu(w.pid) for w in workers) - workers0), flush=True)
    if pg_stats:
        _pg_stats(pg.admin_url)
    return took, load_s, before_load

if __name__ == "__main__":
    main()
