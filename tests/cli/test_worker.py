"""`ferry worker` and `ferry run --distributed` refuse a configuration they cannot work with, naming the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"


def _ferry(args: list[str], env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_BUS_", "FERRY_STATE_URL"))}
    return subprocess.run([sys.executable, "-m", "ferry", *args], env={**base, "FERRY_HOME": str(tmp), **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_worker_without_a_bus_says_to_set_it(tmp_path: Path) -> None:
    done = _ferry(["worker", str(EXAMPLE)], {}, tmp_path)
    assert done.returncode == 2 and "FERRY_BUS_URL" in done.stderr, done.stderr


def test_a_worker_on_the_embedded_store_says_it_needs_postgresql(tmp_path: Path) -> None:
    done = _ferry(["worker", str(EXAMPLE)], {"FERRY_BUS_URL": "nats://127.0.0.1:1"}, tmp_path)
    assert done.returncode == 2 and "FERRY_STATE_URL=postgresql://" in done.stderr, done.stderr


PIPELINE_ENV = {"SHOPIFY_URL": "https://127.0.0.1:1", "SHOPIFY_ACCESS_TOKEN": "t", "SALESFORCE_LOGIN_URL":
                "https://127.0.0.1:1", "SALESFORCE_CLIENT_ID": "c", "SALESFORCE_USERNAME": "u",
                "SALESFORCE_PRIVATE_KEY_FILE": "/nonexistent.pem"}


def test_a_distributed_run_on_the_embedded_store_writes_nothing(tmp_path: Path) -> None:
    env = {"FERRY_BUS_URL": "nats://127.0.0.1:1", **PIPELINE_ENV}
    done = _ferry(["run", str(EXAMPLE), "--distributed"], env, tmp_path)
    assert done.returncode == 2 and "shared state store" in done.stderr, done.stderr


def test_the_budget_block_comes_from_the_environment_and_a_bad_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ferry.cli.worker import budget_block
    from ferry.engine.budget_blocks import DEFAULT_BLOCK

    monkeypatch.delenv("FERRY_BUDGET_BLOCK", raising=False)
    assert budget_block() == DEFAULT_BLOCK
    monkeypatch.setenv("FERRY_BUDGET_BLOCK", "1")
    assert budget_block() == 1
    for bad in ("0", "-3", "lots"):
        monkeypatch.setenv("FERRY_BUDGET_BLOCK", bad)
        with pytest.raises(ConfigError, match="FERRY_BUDGET_BLOCK"):
            budget_block()
