"""Child processes of a benchmark run: the two sandboxes, and a contender measured from start to exit."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 1800.0  # a 1,000,000-order store takes minutes to generate


@dataclass
class Sandbox:
    system: str
    process: subprocess.Popen[str]
    info: dict[str, Any]
    peak_rss: int = 0
    last_cpu: float = 0.0

    @property
    def url(self) -> str:
        return str(self.info["url"])

    def client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=self.info["ca_file"]), timeout=600)

    def admin(self, path: str) -> Any:
        with self.client() as c:
            resp = c.get(f"{self.url}/__sandbox/{path}")
            resp.raise_for_status()
            return resp.json()

    def cpu(self) -> float:
        """CPU seconds so far; once the process is gone (stopped by a memory guard), the last figure read, so
        the run's own failure is reported rather than a lookup of a vanished process."""
        try:
            t = psutil.Process(self.process.pid).cpu_times()
        except psutil.NoSuchProcess:
            return self.last_cpu
        self.last_cpu = float(t.user + t.system)
        return self.last_cpu

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def _start(system: str, cmd: list[str]) -> Sandbox:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    line = box[0].strip() if box else ""
    if not line:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"the {system} sandbox did not start: {err[-2000:] or 'no output'}")
    # A sandbox's stderr is its only account of a failure in the middle of a run: keep it where asked.
    logs = os.environ.get("FERRY_BENCH_LOGS")
    log_path = Path(logs) / f"{system}-{proc.pid}.stderr" if logs else None
    threading.Thread(target=_drain, args=(proc.stdout, None), daemon=True).start()
    threading.Thread(target=_drain, args=(proc.stderr, log_path), daemon=True).start()
    return Sandbox(system, proc, json.loads(line))


def _drain(stream: IO[str] | None, log_path: Path | None) -> None:
    if stream is None:
        return
    if log_path is None:
        for _ in stream:
            pass
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        for text in stream:
            log.write(text)
            log.flush()


def start_shopify(state_dir: Path, orders: int, latency: str, seed: int, shard_orders: int = 0,
                  spill: bool = False) -> Sandbox:
    return _start("shopify", [sys.executable, str(HERE / "serve_shopify.py"), "--orders", str(orders),
                              "--seed", str(seed), "--latency", latency, "--state-dir", str(state_dir),
                              "--shard-orders", str(shard_orders), *(["--spill"] if spill else [])])


def start_salesforce(state_dir: Path, latency: str, seed: int) -> Sandbox:
    return _start("salesforce", [sys.executable, str(HERE / "serve_salesforce.py"), "--state-dir", str(state_dir),
                                 "--seed", str(seed), "--latency", latency])


@contextmanager
def both_sandboxes(work: Path, orders: int, latency: str, seed: int) -> Iterator[tuple[Sandbox, Sandbox]]:
    """A Shopify sandbox holding a store of ``orders`` orders and an empty org, both stopped on the way out."""
    shop = start_shopify(work / "shopify", orders, latency, seed)
    try:
        org = start_salesforce(work / "salesforce", latency, seed)
        try:
            yield shop, org
        finally:
            org.stop()
    finally:
        shop.stop()


def contender_env(shop: Sandbox, org: Sandbox) -> dict[str, str]:
    """The environment the example pipeline reads; the scripts read the same variables."""
    s, o = shop.info, org.info
    return {
        "SHOPIFY_URL": s["url"], "SHOPIFY_ACCESS_TOKEN": s["access_token"], "SHOPIFY_CA_FILE": s["ca_file"],
        "SALESFORCE_LOGIN_URL": o["login_url"], "SALESFORCE_CLIENT_ID": o["client_id"],
        "SALESFORCE_USERNAME": o["username"], "SALESFORCE_PRIVATE_KEY_FILE": o["private_key_file"],
        "SALESFORCE_CA_FILE": o["ca_file"],
    }


@dataclass
class Measured:
    wall: float
    cpu: float  # user + system of the contender process (and any children it waited for)
    peak_rss: int  # bytes: the process's VmHWM (and RSS samples), every 0.1 s
    returncode: int
    stdout: str
    stderr: str
    sandbox_cpu: dict[str, float] = field(default_factory=dict)
    sandbox_peak_rss: dict[str, int] = field(default_factory=dict)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of the process's current image, in bytes (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], env: dict[str, str], sandboxes: list[Sandbox], timeout: float) -> Measured:
    """Run ``cmd`` to completion; its CPU comes from wait4, its peak RSS from /proc samples, the sandboxes'
    from psutil deltas."""
    cpu0 = {s.system: s.cpu() for s in sandboxes}
    out_path, err_path = Path(env["FERRY_BENCH_TMP"]) / "stdout", Path(env["FERRY_BENCH_TMP"]) / "stderr"
    started = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **env})
        samples: list[tuple[float, int]] = []
        hwm = [0]  # the process's own high-water mark (VmHWM), reset by exec unlike wait4's ru_maxrss
        peaks = {s.system: 0 for s in sandboxes}
        stop = threading.Event()

        def sample() -> None:
            me = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    samples.append((time.monotonic() - started, int(me.memory_info().rss)))
                    hwm[0] = max(hwm[0], _vm_hwm(proc.pid))
                    for s in sandboxes:
                        peaks[s.system] = max(peaks[s.system], s.rss())
                except psutil.Error:
                    pass
                stop.wait(0.1)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        deadline = started + timeout
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        watcher.join()
    return Measured(
        # Not ru_maxrss: Linux carries the forking parent's high-water mark across exec into it, so a
        # bench process that generated a big store would be charged to the contender.
        wall=wall, cpu=usage.ru_utime + usage.ru_stime, peak_rss=max([hwm[0], *(r for _, r in samples)]),
        returncode=proc.returncode, stdout=out_path.read_text(), stderr=err_path.read_text()[-4000:],
        sandbox_cpu={s.system: s.cpu() - cpu0[s.system] for s in sandboxes}, sandbox_peak_rss=peaks,
        rss_samples=samples,
    )
