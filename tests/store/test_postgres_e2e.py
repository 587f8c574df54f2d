"""End to end on PostgreSQL: `FERRY_STATE_URL=postgresql://... ferry run` syncs the example pipeline into an
org exactly as the embedded (SQLite) run does into another, from one Shopify sandbox; a second run on PostgreSQL
writes nothing. The Bulk threshold is lowered so the remote-job journal is used on both backends."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cli.demo import demo_env
from ferry.cli.exits import RUN_FINISHED
from ferry.cli.sandboxes import SandboxProcess, start_sandbox
from ferry.store import LetterFilter
from ferry.store.postgres import PostgresStore
from ferry.store.sqlite import Store
from tests.store.postgres_server import PostgresServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shopify-to-salesforce.yml"
OBJECTS = ("Account", "Contact", "Product2", "PricebookEntry", "Order", "OrderItem")
# Fields the org sets itself: ids (every org numbers its own) and system stamps; references are compared through
# the external id of the record they point at.
_ORG_OWN = re.compile(r"^(Id|CreatedDate|LastModifiedDate|SystemModstamp|CreatedById|LastModifiedById|OwnerId)$")


def _pipeline(tmp: Path) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('  api_version: "62.0"\n', '  api_version: "62.0"\n  bulk_threshold: 40\n', 1)
    assert "bulk_threshold: 40" in text
    path = tmp / "pipeline.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _ferry(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=300, check=False,
    )


def _org(org: SandboxProcess) -> dict[str, list[dict[str, Any]]]:
    ctx = ssl.create_default_context(cafile=str(org.info["ca_file"]))
    with httpx.Client(verify=ctx, timeout=30) as client:
        raw = {obj: client.get(f"{org.url}/__sandbox/records/{obj}").json() for obj in OBJECTS}
    ext_of = {r["Id"]: ext for obj in OBJECTS for r in raw[obj] for k, ext in r.items()
              if k.startswith("Shopify_") and k.endswith("_Id__c") and ext}
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in OBJECTS:
        rows = []
        for r in raw[obj]:
            rows.append({k: (ext_of.get(v, v) if isinstance(v, str) and k.endswith("Id") else v)
                         for k, v in r.items() if not _ORG_OWN.match(k)})
        out[obj] = sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))
    return out


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("shop")
    proc = start_sandbox("shopify", state, ["--customers", "60", "--products", "15", "--orders", "120", "--seed", "5"])
    yield proc
    proc.stop()


def _new_org(tmp: Path) -> SandboxProcess:
    return start_sandbox("salesforce", tmp)


def test_a_postgresql_run_gives_the_same_org_as_an_sqlite_run(
    shop: SandboxProcess, pg_server: PostgresServer, tmp_path: Path
) -> None:
    pipeline = _pipeline(tmp_path)
    org_sqlite, org_pg = _new_org(tmp_path / "a"), _new_org(tmp_path / "b")
    try:
        shop_info = {k: str(v) for k, v in shop.info.items()}
        db = tmp_path / "embedded.db"
        lite_env = {**demo_env(shop_info, {k: str(v) for k, v in org_sqlite.info.items()}),
                    "FERRY_HOME": str(tmp_path / "home-a"), "FERRY_STATE_URL": f"sqlite:///{db}"}
        url = pg_server.fresh_database()
        pg_env = {**demo_env(shop_info, {k: str(v) for k, v in org_pg.info.items()}),
                  "FERRY_HOME": str(tmp_path / "home-b"), "FERRY_STATE_URL": url}

        lite = _ferry(["run", str(pipeline), "--json"], lite_env)
        assert lite.returncode in RUN_FINISHED, lite.stderr[-3000:]
        assert _ferry(["run", str(pipeline)], pg_env).returncode == 6  # not migrated yet: says so, writes nothing
        assert _ferry(["migrate"], pg_env).returncode == 0
        doctor = _ferry(["doctor", "--json"], pg_env)
        assert doctor.returncode == 0 and all(c["ok"] for c in json.loads(doctor.stdout)), doctor.stdout
        first = _ferry(["run", str(pipeline), "--json"], pg_env)
        assert first.returncode == lite.returncode, first.stderr[-3000:]

        lite_stats, pg_stats = json.loads(lite.stdout), json.loads(first.stdout)
        assert lite_stats["objects"].keys() == pg_stats["objects"].keys()
        for obj, figures in lite_stats["objects"].items():
            for figure in ("created", "updated", "dead_lettered", "strategy"):
                assert pg_stats["objects"][obj].get(figure) == figures.get(figure), (obj, figure)
        assert any("bulk" in o["strategy"].lower() for o in pg_stats["objects"].values()), pg_stats["objects"]
        in_pg = _org(org_pg)
        assert all(in_pg[obj] for obj in OBJECTS), {obj: len(rows) for obj, rows in in_pg.items()}
        assert in_pg == _org(org_sqlite)

        embedded, shared = Store(db), PostgresStore(url)
        try:
            letters = [{(d.object, d.record_key, d.error_code) for d in s.find_dead_letters(LetterFilter(), None)}
                       for s in (embedded, shared)]
            assert letters[0] == letters[1] and letters[0]
            assert shared.outbox_count("shopify-to-salesforce") == 0
            assert shared.list_runs("shopify-to-salesforce")[0].status == "succeeded"
        finally:
            embedded.close()
            shared.close()

        again = _ferry(["run", str(pipeline), "--json"], pg_env)
        assert again.returncode in RUN_FINISHED, again.stderr[-3000:]
        objects = json.loads(again.stdout)["objects"]
        assert all(o["created"] == 0 and o["updated"] == 0 for o in objects.values()), objects
        runs = _ferry(["runs", "--json"], pg_env)
        assert runs.returncode == 0 and len(json.loads(runs.stdout)) == 2
    finally:
        org_sqlite.stop()
        org_pg.stop()
