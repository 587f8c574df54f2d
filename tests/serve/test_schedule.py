"""Schedules inside `ferry serve`: incremental batch runs (origin ``schedule``) at each cron time that never
overlap each other or the event processor's runs, and catch up what no webhook brought; `ferry runs` shows
each run's origin."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime

import pytest

from ferry.engine.pipeline import PipelineSpec, load_pipeline
from ferry.serve.schedule import Schedule

from .world import PIPELINE_FILE, REPO, World, make_world, start_serve, stop_world, wait_for

EVERY_SECOND = "* * * * * */1"  # croniter's optional sixth field: seconds


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("serve-schedule"), customers=15, products=5, orders=20)
    try:
        yield w
    finally:
        stop_world(w)


def _intervals(world: World) -> list[tuple[str, str, str]]:
    runs = world.store.list_runs(world.spec.name, 500)
    return sorted((r.started_at, r.finished_at or "9999", r.origin) for r in runs)


def test_scheduled_sweeps_and_events_never_overlap_and_catch_up(world: World) -> None:
    spec = world.spec.model_copy(update={"schedule": EVERY_SECOND})
    server = start_serve([spec], world.store, world.serve_options(register=False))
    customers = world.shop_records("customers")
    try:
        # A change no webhook announces (no subscription: --no-register) is caught by a sweep.
        world.put("customers", customers[0]["id"], {"first_name": "Swept"})
        key = str(customers[0]["id"])
        wait_for(lambda: any(str(r["Shopify_Customer_Id__c"]) == key and r["FirstName"] == "Swept"
                             for r in world.sf_records("Contact")), 30, "a sweep to catch the edit")
        # Meanwhile events arrive too: signed deliveries posted straight to the server.
        import httpx
        import orjson

        with httpx.Client(base_url=server.url, verify=str(world.shop_run.ca_file), timeout=30) as client:
            for i, customer in enumerate(customers[1:8]):
                body = orjson.dumps({**customer, "first_name": f"Event{i}",
                                     "updated_at": f"2032-01-01T00:00:0{i}-00:00"})
                resp = client.post(f"/webhooks/{spec.name}/shopify", content=body,
                                   headers=world.signed(body, topic="customers/update", webhook_id=f"sched-{i}"))
                assert resp.status_code == 200
        wait_for(lambda: {o for _, _, o in _intervals(world)} >= {"schedule", "webhook"}, 30, "both kinds of runs")
        wait_for(lambda: sum(1 for *_, o in _intervals(world) if o == "schedule") >= 3, 30, "three sweeps")
    finally:
        assert server.stop() == 0
    runs = _intervals(world)
    for (_start_a, end_a, _), (start_b, _, _) in itertools.pairwise(runs):
        assert end_a <= start_b, f"runs overlap: {runs}"
    statuses = {r.status for r in world.store.list_runs(spec.name, 500)}
    assert statuses <= {"succeeded", "interrupted"}, statuses


def test_a_schedule_skips_missed_times_instead_of_piling_up() -> None:
    spec = PipelineSpec.model_construct(name="p", schedule="*/5 * * * *")
    sched = Schedule(spec, store=None, run_lock=asyncio.Lock())  # type: ignore[arg-type]
    after = datetime.fromisoformat("2026-12-06T10:07:30+00:00")
    assert sched.next_time(after).isoformat() == "2026-12-06T10:10:00+00:00"


def test_an_invalid_schedule_is_a_config_error() -> None:
    env = {k: "https://x.invalid" if k.endswith("URL") else "x" for k in (
        "SHOPIFY_URL", "SHOPIFY_ACCESS_TOKEN", "SALESFORCE_LOGIN_URL", "SALESFORCE_CLIENT_ID", "SALESFORCE_USERNAME",
        "SALESFORCE_PRIVATE_KEY_FILE")}
    from ferry.errors import ConfigError

    assert load_pipeline(PIPELINE_FILE, {**env, "FERRY_SCHEDULE": "*/15 * * * *"}).schedule == "*/15 * * * *"
    assert load_pipeline(PIPELINE_FILE, env).schedule is None
    with pytest.raises(ConfigError, match=r"schedule.*not a cron expression"):
        load_pipeline(PIPELINE_FILE, {**env, "FERRY_SCHEDULE": "every minute"})


def test_ferry_runs_shows_the_origin(world: World) -> None:
    env = {**os.environ, "FERRY_HOME": str(world.tmp), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "ferry", "runs", "--json", "--limit", "500"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    origins = {row["origin"] for row in json.loads(proc.stdout)}
    assert {"schedule", "webhook"} <= origins
    table = subprocess.run([sys.executable, "-m", "ferry", "runs"], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=120, check=True).stdout
    assert "origin" in table and "schedule" in table and "webhook" in table
