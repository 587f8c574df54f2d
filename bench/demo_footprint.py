"""Wall time, API calls per object and peak memory of `ferry demo` on its default store.

Run: .venv/bin/python bench/demo_footprint.py [demo args...]
Samples the RSS of the ferry process and of each sandbox child every 20 ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil


def main() -> None:
    home = tempfile.mkdtemp(prefix="ferry-bench-")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry", "demo", "--json", *sys.argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FERRY_HOME": home},
    )
    peaks: dict[str, int] = {}

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peaks["ferry"] = max(peaks.get("ferry", 0), p.memory_info().rss)
                for child in p.children():
                    name = "sandbox " + " ".join(child.cmdline()[5:6])
                    peaks[name] = max(peaks.get(name, 0), child.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall = time.monotonic() - started
    watcher.join()
    if proc.returncode != 0:
        sys.exit(err)
    result = json.loads(out)
    print(
        f"ferry demo {' '.join(sys.argv[1:]) or '(default store)'}: {wall:.1f} s wall "
        f"(sync itself {result['seconds']:.1f} s), status {result['status']}"
    )
    print(f"{'object':16}{'read':>8}{'written':>9}{'DLQ':>6}{'calls':>7}  strategy")
    for name, o in result["objects"].items():
        print(
            f"{name:16}{o['read']:>8,}{o['written']:>9,}{o['dead_lettered']:>6,}{o['api_calls']:>7,}  {o['strategy']}"
        )
    print(f"Shopify API calls {result['source_api_calls']}, Salesforce set-up calls {result['setup_api_calls']}")
    for name, rss in peaks.items():
        print(f"peak RSS {name:22} {rss / 2**20:7.1f} MiB")


if __name__ == "__main__":
    main()
