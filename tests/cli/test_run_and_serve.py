"""`ferry sandbox serve` announces what a client needs; `ferry run` twice writes once."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ferry.cli.demo import demo_env
from ferry.cli.exits import Exit
from ferry.cli.sandboxes import SandboxProcess, start_sandbox

# A run that finished: with no dead letters, within max_dead_letter_share, or over it (the small messy store's
# Contacts are 13% dead letters); tests/cli/test_bad_inputs.py pins each code.
FINISHED = (Exit.OK, Exit.DEAD_LETTERS, Exit.DEAD_LETTERS_OVER_SHARE)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> tuple[SandboxProcess, SandboxProcess]:
    state = tmp_path_factory.mktemp("sandboxes")
    shop = start_sandbox("shopify", state, ["--customers", "40", "--products", "10", "--orders", "60", "--seed", "2"])
    org = start_sandbox("salesforce", state)
    yield shop, org
    shop.stop()
    org.stop()


def test_serve_announces_url_ca_and_credentials(sandboxes: tuple[SandboxProcess, SandboxProcess]) -> None:
    shop, org = sandboxes
    assert {"url", "ca_file", "access_token", "webhook_secret"} <= set(shop.info)
    assert {"url", "ca_file", "client_id", "client_secret", "username", "private_key_file"} <= set(org.info)
    for info in (shop.info, org.info):
        assert info["url"].startswith("https://127.0.0.1:")
        assert Path(info["ca_file"]).is_file()
    # TLS verifies against the announced CA, and only against it.
    ctx = ssl.create_default_context(cafile=org.info["ca_file"])
    assert httpx.get(f"{org.url}/services/data/", verify=ctx).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{org.url}/services/data/", verify=ssl.create_default_context(cafile=None, cadata=None))


def _run(home: Path, env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "ferry", "run", str(EXAMPLE), "--json"],
        env={**os.environ, **env, "FERRY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode in FINISHED, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_run_twice_writes_once(sandboxes: tuple[SandboxProcess, SandboxProcess], tmp_path: Path) -> None:
    shop, org = sandboxes
    env = demo_env({k: str(v) for k, v in shop.info.items()}, {k: str(v) for k, v in org.info.items()})
    first = _run(tmp_path, env)
    objects = first["objects"]
    assert isinstance(objects, dict)
    assert all(o["created"] > 0 for o in objects.values()), objects
    second = _run(tmp_path, env)
    again = second["objects"]
    assert isinstance(again, dict)
    assert all(o["created"] == 0 and o["updated"] == 0 and o["api_calls"] == 0 for o in again.values()), again


def test_missing_environment_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "SALESFORCE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "ferry", "run", str(EXAMPLE)],
        env={**env, "FERRY_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "SHOPIFY_URL is not set" in proc.stderr


def test_secrets_never_reach_logs_output_or_state(
    sandboxes: tuple[SandboxProcess, SandboxProcess], tmp_path: Path
) -> None:
    shop, org = sandboxes
    env = demo_env({k: str(v) for k, v in shop.info.items()}, {k: str(v) for k, v in org.info.items()})
    proc = subprocess.run(
        [sys.executable, "-m", "ferry", "--verbose", "run", str(EXAMPLE)],
        env={**os.environ, **env, "FERRY_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode in FINISHED, proc.stderr[-3000:]
    assert "run.start" in proc.stderr  # verbose logging really was on
    key_body = Path(org.info["private_key_file"]).read_text().splitlines()[1]
    secrets = [shop.info["access_token"], org.info["client_secret"], key_body]
    state = b"".join(p.read_bytes() for p in tmp_path.rglob("ferry.db*"))
    for secret in secrets:
        assert secret not in proc.stdout and secret not in proc.stderr
        assert secret.encode() not in state


def test_serve_shopify_with_fault_flags_injects_them(tmp_path: Path) -> None:
    shop = start_sandbox(
        "shopify", tmp_path, ["--customers", "5", "--products", "1", "--orders", "1", "--fault", "503:1,count=2"]
    )
    try:
        ctx = ssl.create_default_context(cafile=shop.info["ca_file"])
        headers = {"X-Shopify-Access-Token": shop.info["access_token"]}
        url = f"{shop.url}/admin/api/2025-07/customers/count.json"
        codes = [httpx.get(url, headers=headers, verify=ctx).status_code for _ in range(3)]
        assert codes == [503, 503, 200]
        assert httpx.get(f"{shop.url}/__sandbox/faults", verify=ctx).json()["injected"] == {"503": 2}
    finally:
        shop.stop()
