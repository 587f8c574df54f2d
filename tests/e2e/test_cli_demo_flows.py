"""`ferry demo [FLOW]`: the flows it lists, and the WooCommerce, QuickBooks and Salesforce-to-QuickBooks flows run as
a user runs them (child process, JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.cli import render
from ferry.engine.stats import RunStats
from tests.e2e.test_cli_demo import COLUMNS, OBJECTS, _ferry


def test_demo_lists_its_flows(tmp_path: Path) -> None:
    listed = _ferry(["demo", "--list", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    flows = json.loads(listed.stdout)
    assert [f["flow"] for f in flows] == [
        "shopify-to-salesforce", "woocommerce-to-salesforce", "shopify-to-quickbooks", "salesforce-to-quickbooks",
        "salesforce-to-shopify",
    ]
    assert {f["source"] for f in flows} == {"shopify", "woocommerce", "salesforce"}
    assert {f["flow"]: f["target"] for f in flows}["shopify-to-quickbooks"] == "quickbooks"
    assert {f["flow"]: f["target"] for f in flows}["salesforce-to-quickbooks"] == "quickbooks"
    assert {f["flow"]: f["target"] for f in flows}["salesforce-to-shopify"] == "shopify"
    text = _ferry(["demo", "--list"], tmp_path)
    assert text.returncode == 0 and "woocommerce-to-salesforce" in text.stdout
    unknown = _ferry(["demo", "magento-to-salesforce"], tmp_path)
    assert unknown.returncode != 0 and "woocommerce-to-salesforce" in unknown.stdout + unknown.stderr


def test_every_flow_prints_the_same_json_shape() -> None:
    keys = set(render.demo_json(RunStats(1, "demo"), source_system="shopify"))
    assert keys >= {"objects", "seconds", "run_id", "pipeline", "status", "source_records", "source_api_calls",
                    "setup_api_calls", "source", "target"}


@pytest.fixture(scope="module")
def woo_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    home = tmp_path_factory.mktemp("ferry-home")
    proc = _ferry(["demo", "woocommerce-to-salesforce", "--customers", "120", "--products", "40", "--orders", "600",
                   "--json"], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line, got: {proc.stdout[:2000]}"
    return home, json.loads(lines[0])


def test_the_woocommerce_demo_syncs_every_object_and_names_its_source(woo_demo: tuple[Path, dict[str, object]]) -> None:
    home, out = woo_demo
    assert set(out) == set(render.demo_json(RunStats(1, "demo"), source_system="x"))
    source = out["source"]
    assert isinstance(source, dict) and source["system"] == "woocommerce"
    assert source["api_calls"] == out["source_api_calls"] and int(source["api_calls"]) > 0
    objects = out["objects"]
    assert isinstance(objects, dict) and set(OBJECTS) <= set(objects)
    for name in OBJECTS:
        for col in COLUMNS:
            assert col in objects[name], f"{name} lacks {col}"
        assert objects[name]["written"] > 0, name
        assert objects[name]["written"] == objects[name]["created"] + objects[name]["updated"], name
    assert out["status"] == "succeeded" and out["pipeline"] == "demo-woocommerce"
    assert sum(o["dead_lettered"] for o in objects.values()) > 0  # the generated store is messy on purpose

    runs = _ferry(["runs", "--json"], home)
    assert runs.returncode == 0, runs.stderr
    [latest, *_] = json.loads(runs.stdout)
    assert latest["pipeline"] == "demo-woocommerce" and latest["status"] == "succeeded"


def test_the_quickbooks_demo_accounts_for_every_record(tmp_path: Path) -> None:
    proc = _ferry(["demo", "shopify-to-quickbooks", "--customers", "50", "--products", "20", "--orders", "150",
                   "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    out = json.loads(line)
    assert set(out) == set(render.demo_json(RunStats(1, "demo"), source_system="x"))
    assert out["source"]["system"] == "shopify" and out["target"] == {"system": "quickbooks"}
    assert out["status"] == "succeeded" and out["pipeline"] == "demo-quickbooks"
    objects = out["objects"]
    assert list(objects) == ["Customer", "Item", "Invoice"]
    for name, o in objects.items():
        for col in COLUMNS:
            assert col in o, f"{name} lacks {col}"
        assert o["written"] > 0 and o["strategy"] == "batch", name
        assert o["written"] == o["created"] + o["updated"], name
        # Every record read is written or dead-lettered (with a reason, in `ferry dlq`).
        assert o["read"] == o["written"] + o["dead_lettered"] + o["unchanged"], name
        assert o["api_calls"] <= o["written"] // 30 + 3, name  # batches of 30, not a call per record
    assert out["source_records"]["orders"] == 150


def test_the_salesforce_to_quickbooks_demo_accounts_for_every_record_and_links_back(tmp_path: Path) -> None:
    proc = _ferry(["demo", "salesforce-to-quickbooks", "--customers", "50", "--products", "20", "--orders", "120",
                   "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    out = json.loads(line)
    assert set(out) == set(render.demo_json(RunStats(1, "demo"), source_system="x"))
    assert out["source"]["system"] == "salesforce" and out["target"] == {"system": "quickbooks"}
    assert out["status"] == "succeeded" and out["pipeline"] == "demo-salesforce-qbo"
    objects = out["objects"]
    assert list(objects) == ["Customer", "Item", "Invoice"]
    read = {"Customer": "Account", "Item": "Product2", "Invoice": "Order"}
    for name, o in objects.items():
        for col in COLUMNS:
            assert col in o, f"{name} lacks {col}"
        assert o["written"] > 0 and o["written"] == o["created"] + o["updated"], name
        # Every record read is written or dead-lettered (with a reason, in `ferry dlq`).
        assert o["read"] == o["written"] + o["dead_lettered"] + o["unchanged"] == out["source_records"][read[name]]
        # What was written got its QuickBooks Id written back onto the Salesforce record.
        assert out["source"]["linked_back"][read[name]] == o["written"], name
    assert out["source_records"]["Account"] == 50 and out["source_records"]["Product2"] == 20
    assert 100 < out["source_records"]["Order"] < 120  # the drafts (a messy few) are no sale: not read
    # The messy few (':' in names, long or padded names, no contact, fractional or free lines) are all
    # written: the QuickBooks sink cleans the names QuickBooks refuses; any dead letter must carry its reason.
    letters = _ferry(["dlq", "list", "--pipeline", "demo-salesforce-qbo", "--json"], tmp_path)
    assert letters.returncode == 0, letters.stderr
    assert all(x["error_code"] and x["message"] for x in json.loads(letters.stdout))
