"""The judgement of `ferry demo --workers`: what counts as landed, duplicated, missing and unexpected, the keys a
store's raw records should give each object, and when the demo picks a worker to kill. The end-to-end demo is in
tests/distributed/test_demo_workers.py; here each verdict is shown failing on the record that breaks it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ferry.cli.demo import FLOWS
from ferry.cli.demo_distributed import (
    Watch,
    WorkerProcess,
    choose_victim,
    owner_pid,
    render_lines,
    require_alive,
)
from ferry.cli.demo_distributed_check import OrgCheck, expected_keys, judge
from ferry.engine.pipeline import load_pipeline
from ferry.errors import FerryError
from ferry.sandbox.shopify.generator import generate_store

ENV = {"SHOPIFY_URL": "https://127.0.0.1:1", "SHOPIFY_ACCESS_TOKEN": "x", "SALESFORCE_LOGIN_URL": "https://127.0.0.1:1",
       "SALESFORCE_CLIENT_ID": "x", "SALESFORCE_USERNAME": "x", "SALESFORCE_PRIVATE_KEY_FILE": "/dev/null"}


def test_every_key_once_is_clean() -> None:
    got = judge({"1", "2", "3"}, Counter({"1": 1, "2": 1}), {"3"})
    assert (got.expected, got.landed, got.dead_lettered, got.duplicates, got.missing, got.unexpected, got.both) == (
        3, 2, 1, 0, 0, 0, 0)
    assert OrgCheck({"Account": got}).problems == []


def test_a_second_row_of_a_key_is_a_duplicate() -> None:
    got = judge({"1", "2"}, Counter({"1": 2, "2": 1}), set())
    assert got.duplicates == 1 and got.landed == 2
    assert OrgCheck({"Account": got}).problems == [
        "Account: 1 duplicate(s): a second row of an external id, or a second insert the org refused"]


def test_an_insert_the_org_refused_as_a_duplicate_counts_as_one() -> None:
    """The org's external ids are unique: a second insert of a key is refused (DUPLICATE_VALUE), not a second row."""
    got = judge({"1"}, Counter({"1": 1}), {"1"}, refused_inserts=1)
    assert got.duplicates == 1 and got.both == 1
    assert any(p.startswith("Account: 1 duplicate(s)") for p in OrgCheck({"Account": got}).problems)


def test_a_key_neither_written_nor_dead_lettered_is_missing() -> None:
    got = judge({"1", "2", "3"}, Counter({"1": 1}), {"2"})
    assert got.missing == 1
    assert OrgCheck({"Order": got}).problems == ["Order: 1 record(s) neither in the org nor dead-lettered"]


def test_rows_nobody_expected_and_keys_written_and_lettered_are_reported() -> None:
    got = judge({"1"}, Counter({"1": 1, "9": 1}), {"1", "8"})
    assert got.unexpected == 2 and got.both == 1
    assert len(OrgCheck({"Contact": got}).problems) == 2


def test_a_letter_without_its_reason_is_a_problem() -> None:
    assert OrgCheck(letters_without_reason=1).problems == ["1 dead letter(s) without a reason"]


def test_the_keys_an_object_should_get_come_from_the_store_records() -> None:
    spec = load_pipeline(FLOWS["shopify-to-salesforce"].example, ENV)
    store = generate_store(7, customers=30, products=8, orders=60)
    raw = {name: list(store.records(name)) for name in ("customers", "products", "orders")}
    keys = expected_keys(raw, spec)
    customers = {str(c["id"]) for c in raw["customers"]}
    # Every customer, and a guest customer for each guest checkout (by email, or by order without one).
    guests = keys["Account"] - customers
    assert customers <= keys["Account"] and keys["Account"] == keys["Contact"]
    assert guests and all(k.startswith("guest:") for k in guests), guests
    assert keys["Order"] == {str(o["id"]) for o in raw["orders"]}
    assert len(keys["OrderItem"]) == sum(len(o["line_items"]) for o in raw["orders"])
    assert keys["Product2"] == keys["PricebookEntry"] and len(keys["Product2"]) >= 8


def _sleeper(number: int) -> WorkerProcess:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    return WorkerProcess(number, [], Path(os.devnull), process)


def test_the_victim_is_the_worker_holding_most_once_a_fifth_is_written() -> None:
    workers = [_sleeper(1), _sleeper(2)]
    try:
        assert choose_victim(Watch(peak_queued=0, queued=0, held={}), workers) is None  # still planning
        assert choose_victim(Watch(peak_queued=1000, queued=900, held={1: 100, 2: 200}), workers) is None
        assert choose_victim(Watch(peak_queued=1000, queued=700, held={}), workers) is None  # nobody holds rows
        victim = choose_victim(Watch(peak_queued=1000, queued=700, held={1: 100, 2: 200}), workers)
        assert victim is workers[1]
    finally:
        for w in workers:
            w.process.kill()
            w.process.wait()


def test_a_lease_owner_names_a_pid_of_this_host_only() -> None:
    assert owner_pid(f"{socket.gethostname()}:4242:abcd1234") == 4242
    assert owner_pid("another-host:4242:abcd1234") is None
    assert owner_pid("garbage") is None


def test_a_run_without_any_live_worker_stops_the_demo() -> None:
    workers = [_sleeper(1), _sleeper(2)]
    try:
        require_alive(workers, [])  # both alive: nothing to say
        workers[0].process.kill()
        workers[0].process.wait()
        require_alive(workers, [])  # one killed (the demo's victim): the other takes over
        workers[1].process.kill()
        workers[1].process.wait()
        with pytest.raises(FerryError, match="every worker exited during the run"):
            require_alive(workers, [])
    finally:
        for w in workers:
            w.process.kill()
            w.process.wait()


def test_the_table_a_person_reads() -> None:
    check = OrgCheck({"Account": judge({"1", "2"}, Counter({"1": 1}), {"2"}), "Order": judge({"7"}, Counter(), set())},
                     dead_letter_codes={"STRING_TOO_LONG": 1})
    report = {"workers": 3, "killed": [{"worker": 2, "pid": 99, "by": "demo", "held_rows": 40}], "run_status":
              "succeeded", "run_exit": 4, "seconds": 12.5, "ok": False, "problems": check.problems,
              "files": {"run_log": "/x/run.log"}, **check.as_dict()}
    lines = render_lines(report)
    assert lines[0].startswith("workers 3, killed: worker 2 (pid 99, demo, held 40 rows)")
    assert lines[2].split() == ["Account", "2", "1", "1", "0", "0", "0"]
    assert lines[3].split() == ["Order", "1", "0", "0", "0", "1", "0"]
    assert lines[4].split() == ["total", "3", "1", "1", "0", "1", "0"]
    assert "PROBLEM: Order: 1 record(s) neither in the org nor dead-lettered" in lines
