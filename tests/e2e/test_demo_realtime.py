"""`ferry demo realtime --json` as a user runs it: both sandboxes and `ferry serve` with the two-way example
pipelines (the shop's direction carrying orders too); the report says both directions carried every change
(lost 0), customers and orders alike, nothing exists twice (duplicated 0), nothing bounced back and forth once
the changes stopped (ping-pong 0), checked against the sandboxes, and the org equals a clean batch run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_realtime_json_reports_both_directions_clean(tmp_path: Path) -> None:
    env = {**os.environ, "FERRY_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "ferry", "demo", "realtime", "--seconds", "3", "--rate", "4",
                           "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (report["lost"], report["duplicated"], report["ping_pong"], report["ok"]) == (0, 0, 0, True)
    there, back = report["directions"]["shopify->salesforce"], report["directions"]["salesforce->shopify"]
    assert there["changes"] >= 6 and back["changes"] >= 3
    for d in (there, back):
        assert d["lost"] == 0 and d["events_received"] >= d["changes"] and d["written"] >= d["changes"]
        assert d["latency_ms"]["p50"] is not None and d["latency_ms"]["p95"] >= d["latency_ms"]["p50"]
    # ferry's own writes came back through the other direction and were dropped, not written again
    assert there["echoes_suppressed"] + back["echoes_suppressed"] >= 1
    assert there["duplicates_suppressed"] >= 1  # the shop sandbox sends some webhooks twice
    orders = there["objects"]["orders"]
    assert orders["changes"] >= 3 and orders["lost"] == 0 and orders["duplicated"] == 0
    assert orders["written_by_object"].get("Order", 0) >= 2 and orders["written_by_object"].get("OrderItem", 0) >= 2
    check = report["equals_clean_batch_run"]
    assert check["equal"] is True and check["records"]["Order"]["live"] >= 10, check
