"""Logs as a user sees them: every line of a run names it, retries are one line, no secret is ever written.

Each test runs the real `ferry` CLI in a child process against sandboxes over HTTPS (or against a port where
nothing listens) and reads everything it wrote: stdout, stderr and the --metrics-file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferry.cli.demo import FLOWS
from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.serve import start_in_thread
from ferry.sandbox.shopify import ShopifySandbox
from ferry.sandbox.woocommerce import WooCommerceSandbox

REPO = Path(__file__).resolve().parents[2]


def _ferry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferry", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key_lines(path: str) -> list[str]:
    """The base64 body lines of a PEM private key (each one a secret)."""
    return [line for line in Path(path).read_text().splitlines() if line and not line.startswith("-----")]


@pytest.fixture(scope="module")
def woo_to_salesforce(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], SalesforceSandbox]]:
    tmp = tmp_path_factory.mktemp("woo-logs")
    woo = WooCommerceSandbox(tmp, seed=3, customers=20, products=8, orders=30)
    org = SalesforceSandbox(tmp)
    woo_run, org_run = woo.start(tmp), start_in_thread(org.app, tmp)
    try:
        woo_info = {**woo.credentials(woo_run.url), "ca_file": str(woo_run.ca_file)}
        org_info = {**org.credentials(org_run.url), "ca_file": str(org_run.ca_file)}
        env = {**os.environ, **FLOWS["woocommerce-to-salesforce"].env(woo_info, org_info),
               "SALESFORCE_CLIENT_SECRET": org_info["client_secret"],
               "FERRY_HOME": str(tmp / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
        yield env, org
    finally:
        org_run.stop()
        woo_run.stop()


def test_every_run_line_names_the_run_and_no_secret_is_written_at_vv(
    woo_to_salesforce: tuple[dict[str, str], SalesforceSandbox], tmp_path: Path
) -> None:
    env, org = woo_to_salesforce
    metrics_file = tmp_path / "ferry.prom"
    proc = _ferry(env, "-vv", "--log-format", "json", "run", "examples/woocommerce-to-salesforce.yml", "--json",
                  "--metrics-file", str(metrics_file))
    assert proc.returncode in (0, 3, 4), proc.stderr[-3000:]
    stats = json.loads(proc.stdout.splitlines()[-1])
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert {"run.start", "load.start", "run.end"} <= events, events
    assert all(line.get("run_id") == stats["run_id"] and line.get("pipeline") == stats["pipeline"] for line in lines)
    console = _ferry(env, "-vv", "run", "examples/woocommerce-to-salesforce.yml")  # the second run: text lines
    assert "run.start" in console.stderr and f"run_id={stats['run_id'] + 1}" in console.stderr
    # Every secret this run held: the store's consumer key and secret (sent in the query string, as WooCommerce
    # takes them), the org's client secret and JWT private key, and the session tokens the org issued to ferry.
    secrets = [env["WOOCOMMERCE_CONSUMER_KEY"], env["WOOCOMMERCE_CONSUMER_SECRET"], env["SALESFORCE_CLIENT_SECRET"],
               *_key_lines(env["SALESFORCE_PRIVATE_KEY_FILE"]), *org.state.oauth.sessions]
    assert len(secrets) >= 6 and all(len(s) >= 16 for s in secrets)
    written = "\n".join([proc.stdout, proc.stderr, metrics_file.read_text(), console.stdout, console.stderr])
    # The metrics file holds the run's figures.
    families = text_string_to_metric_families(metrics_file.read_text())
    samples = {(s.name, s.labels.get("object")): s.value for f in families for s in f.samples}
    for obj, figures in stats["objects"].items():
        assert samples[("ferry_records_written_total", obj)] == figures["written"], obj
        assert samples[("ferry_records_dead_lettered_total", obj)] == figures["dead_lettered"], obj
    leaked = [s[:4] + "..." for s in secrets if s in written]
    assert not leaked, f"secrets written to the output: {leaked}"


def test_no_secret_is_written_on_the_quickbooks_flow_at_vv(tmp_path: Path) -> None:
    shop = ShopifySandbox(tmp_path, seed=4, customers=10, products=5, orders=15)
    books = QuickBooksSandbox(tmp_path / "books", seed=4, customers=0, products=0, orders=0)
    shop_run, books_run = start_in_thread(shop.app, tmp_path), books.start()
    try:
        shop_info = {**shop.credentials(shop_run.url), "ca_file": str(shop_run.ca_file)}
        books_info = {**books.credentials(books_run.url), "ca_file": str(books_run.ca_file),
                      "token_file": str(tmp_path / "qbo.token")}
        env = {**os.environ, **FLOWS["shopify-to-quickbooks"].env(shop_info, books_info),
               "FERRY_HOME": str(tmp_path / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = _ferry(env, "-vv", "run", "examples/shopify-to-quickbooks.yml")
        assert proc.returncode in (0, 3, 4), proc.stderr[-3000:]
        # Shopify's token, Intuit's client secret, the refresh token given and the ones it was rotated to, and
        # the access tokens the company issued.
        secrets = [env["SHOPIFY_ACCESS_TOKEN"], env["QUICKBOOKS_CLIENT_SECRET"], env["QUICKBOOKS_REFRESH_TOKEN"],
                   *books.oauth.grants, *books.oauth.access]
    finally:
        books_run.stop()
        shop_run.stop()
    assert len(secrets) >= 5 and all(len(s) >= 16 for s in secrets)
    assert "run.start" in proc.stderr and "http.retry" not in proc.stderr.replace("http.retried", "")
    written = proc.stdout + proc.stderr
    leaked = [s[:4] + "..." for s in secrets if s in written]
    assert not leaked, f"secrets written to the output: {leaked}"


def test_an_unreachable_host_is_one_line_naming_it_and_its_cause(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    port = _closed_port()
    password = "pw-in-the-url-5f3a9c"
    env = {**os.environ, "FERRY_HOME": str(tmp_path / "home"), "PYTHONPATH": os.pathsep.join(sys.path),
           "SHOPIFY_URL": f"https://127.0.0.1:{_closed_port()}", "SHOPIFY_ACCESS_TOKEN": "shpat_0123456789abcdef",
           "SALESFORCE_LOGIN_URL": f"https://integration:{password}@127.0.0.1:{port}",
           "SALESFORCE_CLIENT_ID": "3MVG9client", "SALESFORCE_USERNAME": "ferry@example.com",
           "SALESFORCE_PRIVATE_KEY_FILE": str(key),
           "FERRY_HTTP_BACKOFF_INITIAL": "0.01"}  # five real attempts, without ~4 s of backoff per run
    proc = _ferry(env, "run", "examples/shopify-to-salesforce.yml")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # ONE line: the call, where and why, with the attempts folded in (no retry line, no line per attempt).
    (error,) = lines
    assert error.startswith("error: POST /services/oauth2/token on ") and f"127.0.0.1:{port}: connection refused" \
        in error
    assert error.endswith("(tried 5 times; -vv shows each attempt)"), error
    assert password not in proc.stderr + proc.stdout
    debug = _ferry(env, "-vv", "run", "examples/shopify-to-salesforce.yml")
    assert debug.stderr.count("[debug    ] http.retry ") == 4, debug.stderr  # -vv: each attempt, at debug
    assert password not in debug.stderr + debug.stdout
