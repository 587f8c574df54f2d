"""The `ferry serve` command itself: usage errors are exit 2 before anything listens; a running server answers
/healthz and stops on SIGINT with 130 (SIGTERM's 143 is in test_serve_chaos.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferry.cli.demo import demo_env
from ferry.sandbox.tls import ensure_tls

from .world import PIPELINE_FILE, REPO, World, make_world, stop_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("serve-cli"), customers=5, products=3, orders=3)
    try:
        yield w
    finally:
        stop_world(w)


def _env(world: World, **extra: str) -> dict[str, str]:
    shop_info = {**world.shop.credentials(world.shop_run.url), "ca_file": str(world.shop_run.ca_file)}
    org_info = {**world.org.credentials(world.org_run.url), "ca_file": str(world.org_run.ca_file)}
    env = {**os.environ, **demo_env(shop_info, org_info), "FERRY_HOME": str(world.tmp / "home"),
           "PYTHONPATH": os.pathsep.join(sys.path), **extra}
    env.pop("FERRY_SCHEDULE", None)
    return env


def _ferry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferry", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_pipeline_without_webhooks_or_schedule_is_a_usage_error(world: World) -> None:
    env = _env(world)
    env.pop("SHOPIFY_WEBHOOK_SECRET", None)
    proc = _ferry(env, "serve", str(PIPELINE_FILE), "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert "nothing to serve" in proc.stderr and "SHOPIFY_WEBHOOK_SECRET" in proc.stderr


def test_tls_cert_without_key_and_short_dedup_are_usage_errors(world: World) -> None:
    env = _env(world)
    tls = ensure_tls(world.tmp)
    proc = _ferry(env, "serve", str(PIPELINE_FILE), "--port", "0", "--tls-cert", str(tls.cert_file))
    assert proc.returncode == 2 and "--tls-key" in proc.stderr
    proc = _ferry(env, "serve", str(PIPELINE_FILE), "--port", "0", "--dedup-hours", "1")
    assert proc.returncode == 2


def test_serve_answers_healthz_and_stops_on_sigint(world: World, tmp_path: Path) -> None:
    env = _env(world)
    tls = ensure_tls(world.tmp)
    proc = subprocess.Popen([sys.executable, "-m", "ferry", "serve", str(PIPELINE_FILE), "--port", "0", "--json",
                             "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["url"].startswith("https://127.0.0.1:")
        assert info["registered"]["shopify-to-salesforce"] == {"created": 6, "existing": 0}
        health = httpx.get(f"{info['url']}/healthz", verify=str(tls.ca_file), timeout=10).json()
        assert health["status"] == "ok" and "shopify-to-salesforce/shopify" in health["webhooks"]
        assert world.shop.webhook_secret not in json.dumps(health)
        # The dashboard is mounted beside the webhooks (loopback: no token needed), and shows the pipeline.
        assert info["dashboard"] is True
        page = httpx.get(f"{info['url']}/pipelines", verify=str(tls.ca_file), timeout=10)
        assert page.status_code == 200 and "shopify-to-salesforce" in page.text
        assert world.shop.webhook_secret not in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert world.shop.webhook_secret not in err
