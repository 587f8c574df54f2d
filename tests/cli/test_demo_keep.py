"""`ferry demo --keep`: the demo's dead letters can be replayed with the pipeline file and environment it ran."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

FERRY = Path(sys.executable).parent / "ferry"


def _exports(env_file: Path) -> dict[str, str]:
    out = {}
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        out[name] = shlex.split(value)[0]
    return out


def test_demo_keep_leaves_a_replayable_pipeline(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "FERRY_HOME": str(home), "COLUMNS": "200"}
    demo = subprocess.Popen(
        [str(FERRY), "demo", "--keep", "--customers", "40", "--products", "10", "--orders", "60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        pipeline, env_file = home / "demo" / "shopify-to-salesforce.yml", home / "demo" / "shopify-to-salesforce.env"
        deadline = time.monotonic() + 240
        while not env_file.exists() and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert env_file.exists(), demo.stderr.read() if demo.stderr and demo.poll() is not None else "no env file"
        assert "name: demo" in pipeline.read_text()
        replay = subprocess.run(
            [str(FERRY), "dlq", "replay", str(pipeline), "--dry-run", "--json"],
            env={**env, **_exports(env_file)}, capture_output=True, text=True, timeout=180, check=False,
        )
        assert replay.returncode == 0 and isinstance(json.loads(replay.stdout), dict), replay.stderr[-2000:]
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err[-2000:]
    assert "dlq replay" in out and "stopping the sandboxes" in out
