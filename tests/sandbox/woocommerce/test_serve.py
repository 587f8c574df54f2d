"""`ferry sandbox serve woocommerce` as `ferry demo` starts sandboxes: a child process announcing URL, CA and keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from woocommerce import API

from ferry.cli.sandboxes import start_sandbox
from ferry.cli.serve import build_sandbox
from ferry.errors import ConfigError

SMALL = ["--customers", "10", "--products", "5", "--orders", "20", "--seed", "4"]


def test_serve_announces_url_ca_and_keys_and_applies_faults(tmp_path: Path) -> None:
    proc = start_sandbox("woocommerce", tmp_path, [*SMALL, "--fault", "503:1,path=orders,count=1"])
    try:
        info = proc.info
        assert info["url"].startswith("https://127.0.0.1:") and Path(info["ca_file"]).is_file()
        assert info["consumer_key"].startswith("ck_") and info["consumer_secret"].startswith("cs_")
        assert info["timezone"] == "Europe/Berlin" and info["api_version"] == "wc/v3"
        wc = API(url=info["url"], consumer_key=info["consumer_key"], consumer_secret=info["consumer_secret"],
                 verify_ssl=info["ca_file"])
        assert wc.get("orders").status_code == 503
        second = wc.get("orders", params={"per_page": 100})
        assert second.status_code == 200 and second.headers["X-WP-Total"] == str(len(second.json()))
    finally:
        proc.stop()


def test_serve_plain_http_for_oauth(tmp_path: Path) -> None:
    proc = start_sandbox("woocommerce", tmp_path, [*SMALL, "--plain-http", "--timezone", "America/Sao_Paulo"])
    try:
        assert proc.url.startswith("http://127.0.0.1:")
        wc = API(url=proc.url, consumer_key=proc.info["consumer_key"], consumer_secret=proc.info["consumer_secret"])
        customers = wc.get("customers", params={"per_page": 5})
        assert customers.status_code == 200 and len(customers.json()) == 5
        assert proc.info["timezone"] == "America/Sao_Paulo"
    finally:
        proc.stop()


def test_an_unknown_timezone_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WooCommerce sandbox"):
        build_sandbox("woocommerce", seed=1, customers=1, products=1, orders=1, state_dir=tmp_path,
                      timezone="Mars/Olympus_Mons")
