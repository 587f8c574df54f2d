"""`ferry demo` as a user runs it: a real child process, real sandboxes over HTTPS, JSON out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OBJECTS = ("Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem")
COLUMNS = ("read", "written", "created", "updated", "dead_lettered", "api_calls", "strategy")


def _ferry(
    args: list[str], home: Path, timeout: float = 240, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FERRY_HOME": str(home), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    home = tmp_path_factory.mktemp("ferry-home")
    # Small enough for CI, large enough that several objects need more than one Collections call.
    proc = _ferry(["demo", "--customers", "150", "--products", "60", "--orders", "1000", "--json"], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line, got: {proc.stdout[:2000]}"
    return home, json.loads(lines[0])


def test_demo_json_has_every_object_with_every_column(demo_run: tuple[Path, dict[str, object]]) -> None:
    _, out = demo_run
    objects = out["objects"]
    assert isinstance(objects, dict) and set(OBJECTS) <= set(objects)
    for name in OBJECTS:
        for col in COLUMNS:
            assert col in objects[name], f"{name} lacks {col}"
    assert isinstance(out["seconds"], float | int) and out["seconds"] > 0
    source = out["source"]
    assert isinstance(source, dict)
    assert {k: source[k] for k in ("system", "api", "api_calls")} == {
        "system": "shopify",
        "api": "graphql",  # the example pipeline's default (SHOPIFY_API unset)
        "api_calls": out["source_api_calls"],
    }
    # A demo store is a backfill: every stream is one Bulk Operation, and the store's counts are what was read.
    assert {s: r["mode"] for s, r in source["reads"].items()} == dict.fromkeys(
        ("customers", "products", "orders"), "bulk"
    )
    assert {s: r["expected"] for s, r in source["reads"].items()} == out["source_records"]
    assert source["skipped_entities"] == ["refund"]  # the example maps no refund: none is read


def test_demo_over_rest_still_reads_the_rest_admin_api_when_asked(tmp_path: Path) -> None:
    proc = _ferry(
        ["demo", "--customers", "150", "--products", "60", "--orders", "1000", "--json"],
        tmp_path,
        extra_env={"SHOPIFY_API": "rest"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    source = out["source"]
    assert (source["system"], source["api"], source["api_calls"]) == ("shopify", "rest", out["source_api_calls"])
    assert {s: r["mode"] for s, r in source["reads"].items()} == dict.fromkeys(
        ("customers", "products", "orders"), "rest-pages"
    )
    assert "skipped_entities" not in source  # REST's order pages carry refunds at no extra call
    assert out["source_records"] == {"customers": 150, "products": 60, "orders": 1000}
    assert out["status"] == "succeeded"


def test_demo_plans_by_cost_and_accounts_for_every_record(demo_run: tuple[Path, dict[str, object]]) -> None:
    _, out = demo_run
    objects = out["objects"]
    assert isinstance(objects, dict)
    # No bulk_threshold in the example: below ~8,000 records the planner takes Composite-wrapped Collections
    # (1,000 records a call) over a Bulk job, and Collections for 200 or fewer.
    # An object loaded in two parts (its ready rows ahead of the rest, engine/overlap.py) shows both choices,
    # each made for its own part's size; a part never costs more than one call over loading the whole.
    for name, o in objects.items():
        if "; then " not in o["reason"]:
            want = "composite" if o["written"] + o["dead_lettered"] > 200 else "collections"
            assert o["strategy"] in (want, "single"), (name, o["strategy"], o["reason"])
        else:  # two parts (the same choice for both shows once)
            assert set(o["strategy"].split("+")) <= {"composite", "collections", "single"}, (name, o["strategy"])
        assert o["api_calls"] <= -(-o["read"] // 1000) + 1, (name, o["api_calls"])
    for name, o in objects.items():
        assert o["read"] == o["written"] + o["dead_lettered"] + o.get("unchanged", 0), name
        assert o["written"] == o["created"] + o["updated"], name
        assert o["written"] > 0, name
        assert o["api_calls"] > 0, name
    # The messy store must produce dead letters, and only some.
    assert 0 < sum(o["dead_lettered"] for o in objects.values()) < sum(o["read"] for o in objects.values()) / 5


def test_runs_and_dlq_commands_show_the_demo(demo_run: tuple[Path, dict[str, object]]) -> None:
    home, _ = demo_run
    runs = _ferry(["runs", "--json"], home)
    assert runs.returncode == 0, runs.stderr
    [latest, *_] = json.loads(runs.stdout)
    assert latest["pipeline"] == "demo" and latest["status"] == "succeeded"

    listed = _ferry(["dlq", "list", "--pipeline", "demo", "--json"], home)
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert letters and all(d["error_code"] and d["message"] and d["record_key"] for d in letters)

    shown = _ferry(["dlq", "show", str(letters[0]["id"]), "--json"], home)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["source_payload"] is not None and detail["errors"]

    table = _ferry(["dlq", "list", "--pipeline", "demo"], home)
    assert table.returncode == 0 and "dead letters" in table.stdout


def test_unknown_dead_letter_is_a_clear_error(demo_run: tuple[Path, dict[str, object]]) -> None:
    home, _ = demo_run
    proc = _ferry(["dlq", "show", "999999"], home)
    assert proc.returncode == 2 and "no dead letter with id 999999" in proc.stderr
