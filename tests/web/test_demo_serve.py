"""`ferry demo --serve`: after the run, the dashboard serves it (URL printed) with the sandboxes, until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families


def test_demo_serve_prints_a_dashboard_url_that_shows_the_run(tmp_path: Path) -> None:
    env = {**os.environ, "FERRY_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "ferry", "demo", "--serve", "--port", "0", "--customers", "30", "--products", "8",
         "--orders", "40"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"The dashboard: (http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        assert url, "".join(lines) + (demo.stderr.read() if demo.poll() is not None and demo.stderr else "")
        runs = httpx.get(url + "api/runs", timeout=30).json()
        assert runs and runs[0]["pipeline"] == "demo" and runs[0]["totals"]["written"] > 0
        letters = httpx.get(url + "letters?pipeline=demo", timeout=30)
        assert letters.status_code == 200 and 'data-total="0"' not in letters.text
        # /metrics for a batch-only user: the demo's run, in this process, scraped with Prometheus' own parser.
        scrape = httpx.get(url + "metrics", timeout=30)
        assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(scrape.text) for s in family.samples}
        written = [v for (name, labels), v in samples.items()
                   if name == "ferry_records_written_total" and ("pipeline", "demo") in labels]
        assert written and sum(written) == runs[0]["totals"]["written"]
        assert samples[("ferry_runs_total", (("pipeline", "demo"), ("status", runs[0]["status"])))] == 1
        plan = httpx.get(url + "pipelines/demo", timeout=60)  # the plan talks to the sandboxes still running
        assert plan.status_code == 200 and "strategy:" in plan.text, plan.text[-2000:]
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err[-2000:]
    assert "stopping the dashboard and the sandboxes" in out
