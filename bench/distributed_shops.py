"""Several shops at once through the same workers: work that one shop's read pace does not bound.

K copies of the demo pipeline (``shop0-to-salesforce`` ...), each with its own Shopify sandbox (``--orders`` split
over the shops, seeds 7, 8, ...) and its own Salesforce sandbox (``--latency real``); K ``ferry run`` coordinators
started together; 1, 2, 4 ``ferry worker``s given every pipeline file. Each shop's read runs at its own pace (each
shop has its own rate limit), so the reads overlap and the loads add up in the same workers. The embedded row is
the K runs at once on SQLite (one file each). Each row: wall seconds from the first start to the last exit.

    .venv/bin/python bench/distributed_shops.py [--shops 4] [--orders 10000] [--workers 1,2,4]

Each pipeline file names its own variables (``${SHOPIFY_URL_0}``, ``${SALESFORCE_LOGIN_URL_0}`` ...): workers
get every shop's and org's settings from the environment, never in a file. Stopped by SIGTERM (or Ctrl-C), it
stops every child it started before it exits (143): ``harness/stopping.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.distributed import EXAMPLE, _cpu, _info, _started  # noqa: E402
from harness.stopping import exit_on_terminate, stop_processes  # noqa: E402
from tests.bus.natsserver import NatsServer, require_nats_server  # noqa: E402
from tests.store.postgres_server import start_server  # noqa: E402

from ferry.cli.demo import demo_env  # noqa: E402
from ferry.cli.sandboxes import SandboxProcess, start_sandbox  # noqa: E402
from ferry.store.postgres import migrate  # noqa: E402

_VAR = re.compile(r"\$\{((?:SHOPIFY|SALESFORCE)_[A-Z_]+?)(:-[^}]*)?\}")


def _pipeline_file(k: int, folder: Path) -> Path:
    """The demo pipeline as shop ``k``'s: its own name, its own variables."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^name: .*$", f"name: shop{k}-to-salesforce", text, count=1)
    text = _VAR.sub(lambda m: "${" + f"{m.group(1)}_{k}" + (m.group(2) or "") + "}", text)
    path = folder / f"shop{k}.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _suffixed(env: dict[str, str], k: int) -> dict[str, str]:
    return {(f"{name}_{k}" if name.startswith(("SHOPIFY_", "SALESFORCE_")) else name): value
            for name, value in env.items()}


def _run_all(files: list[Path], envs: list[dict[str, str]]) -> tuple[float, int, list[float]]:
    """Every pipeline's `ferry run` at once: wall seconds to the last exit, records written, each run's seconds."""
    t0 = time.perf_counter()
    procs: list[subprocess.Popen[str]] = []
    try:
        for f, e in zip(files, envs, strict=True):
            procs.append(subprocess.Popen([sys.executable, "-m", "ferry", "run", str(f), "--json"],
                                          env={**os.environ, **e}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        written, each = 0, []
        for p in procs:
            out, err = p.communicate(timeout=3600)
            each.append(time.perf_counter() - t0)
            if p.returncode not in (0, 4):
                raise SystemExit(f"run failed ({p.returncode}): {err[-2000:]}")
            stats: dict[str, Any] = json.loads(out)
            written += sum(o.get("written", 0) for o in stats["objects"].values())
        return time.perf_counter() - t0, written, each
    finally:
        # Runs still going (the bench stopped, or another run failed): the coordinators go too.
        stop_processes([p for p in procs if p.poll() is None], timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shops", type=int, default=4)
    parser.add_argument("--orders", type=int, default=10_000, help="in all, split over the shops")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    exit_on_terminate()
    tmp = Path(tempfile.mkdtemp(prefix="ferry-shops-"))
    print(f"logs and state in {tmp}")
    # Every child is stopped by the ExitStack as soon as it is started, also when SIGTERM stops the bench
    # (exit_on_terminate: the signal raises SystemExit, so the callbacks run).
    with contextlib.ExitStack() as cleanup:
        pg = start_server()
        cleanup.callback(pg.cleanup)
        nats = NatsServer(require_nats_server(), tmp / "nats")
        cleanup.callback(nats.kill)
        nats.start()
        per_shop = args.orders // args.shops
        customers, products = max(60, per_shop // 2), max(15, per_shop // 50)
        shops: list[SandboxProcess] = []
        for k in range(args.shops):
            shops.append(start_sandbox("shopify", tmp / f"shop{k}", ["--customers", str(customers), "--products",
                                                                     str(products), "--orders", str(per_shop),
                                                                     "--seed", str(7 + k)]))
            cleanup.callback(shops[-1].stop)
        files = [_pipeline_file(k, tmp) for k in range(args.shops)]
        print(f"{args.shops} shops x {per_shop} orders ({customers} customers, {products} products each); "
              f"Salesforce latency real, one org per shop; batch {args.batch}, concurrency {args.concurrency} "
              "per worker")
        results: dict[str, float] = {}
        results["embedded"] = _row("embedded", shops, files, tmp, None, args, pg, nats)
        for n in [int(w) for w in args.workers.split(",")]:
            results[str(n)] = _row(f"{n} worker(s)", shops, files, tmp, n, args, pg, nats)
        if "1" in results:
            for label, took in results.items():
                if label not in ("embedded", "1"):
                    print(f"scaling {label} workers vs 1: end to end {results['1'] / took:.2f}x  "
                          f"load avg {os.getloadavg()[0]:.1f}")

def _row(label: str, shops: list[SandboxProcess], files: list[Path], tmp: Path, n: int | None,
         args: argparse.Namespace, pg: Any, nats: NatsServer) -> float:
    with contextlib.ExitStack() as row:
        orgs: list[SandboxProcess] = []
        for k in range(len(shops)):
            orgs.append(start_sandbox("salesforce", tmp / f"org-{label[0]}-{k}", ["--latency", "real"]))
            row.callback(orgs[-1].stop)
        workers: list[subprocess.Popen[bytes]] = []
        row.callback(stop_processes, workers)  # the list as it grows: a worker started is a worker stopped
        envs = []
        shared: dict[str, str] = {}
        for k, (shop, org) in enumerate(zip(shops, orgs, strict=True)):
            env = {**_suffixed(demo_env(_info(shop), _info(org)), k), "FERRY_HOME": str(tmp / f"home-{label[0]}-{k}")}
            if n is None:
                env["FERRY_STATE_URL"] = f"sqlite:///{tmp / f'embedded-{k}.db'}"
            envs.append(env)
            shared.update(env)
        if n is not None:
            url = pg.fresh_database()
            migrate(url)
            assert nats.url
            common = {"FERRY_STATE_URL": url, "FERRY_BUS_URL": nats.url, "FERRY_WORK_BATCH": str(args.batch),
                      "FERRY_BUS_MAX_ACK_PENDING": str(max(1, n * args.concurrency // 8))}
            envs = [{**e, **common} for e in envs]
            logs = [tmp / f"worker-{n}-{i}.log" for i in range(n)]
            for log in logs:
                workers.append(subprocess.Popen([sys.executable, "-m", "ferry", "worker", *map(str, files),
                                                 "--concurrency", str(args.concurrency)],
                                                env={**os.environ, **shared, **common},
                                                stdout=subprocess.DEVNULL, stderr=log.open("wb")))
            _started(workers, logs)
        cpu0 = sum(_cpu(o.process.pid) for o in orgs)
        took, written, each = _run_all(files, envs)
        org_cpu = sum(_cpu(o.process.pid) for o in orgs) - cpu0
        print(f"{label:<14} {took:8.1f} s {written:>8} written {written / took:8.0f} rec/s  runs ended at "
              f"{', '.join(f'{t:.1f}' for t in each)} s  orgs CPU {org_cpu:.1f} s  load avg {os.getloadavg()[0]:.1f}",
              flush=True)
        return took

if __name__ == "__main__":
    main()
