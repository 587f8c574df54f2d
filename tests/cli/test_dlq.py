"""`ferry dlq list|show|replay|discard` as a user runs them, against the sandboxes."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.engine.world import World, world


def _ferry(w: World, home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ferry", *args],
        env={**os.environ, **w.env(), "FERRY_HOME": str(home), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == code, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def _drop_contact_email(spec: dict[str, Any]) -> None:
    contact = next(o for o in spec["objects"] if o["name"] == "Contact")
    del contact["fields"]["Email"]


def test_dlq_commands(tmp_path: Path) -> None:
    with world(tmp_path, seed=11, customers=120, products=10, orders=40) as w:
        home = tmp_path / "home"
        pipeline = w.pipeline_file("cli")
        # The messy store dead-letters 11% of OrderItems (over the default max_dead_letter_share 10%): exit 3.
        ran = _json(_ferry(w, home, "run", str(pipeline), "--json", code=3))
        assert set(ran["over_dead_letter_cap"]) == {"OrderItem"}

        emails = _json(_ferry(w, home, "dlq", "list", "--pipeline", "cli", "--code", "INVALID_EMAIL_ADDRESS", "--json"))
        assert emails and all(d["fields"] == ["Email"] and d["object"] == "Contact" for d in emails)
        assert all(d["stream"] in ("customers", "orders") and d["source_key"] for d in emails)
        table = _ferry(w, home, "dlq", "list", "--since", "1h").stdout
        assert "dead letters" in table and "INVALID_EMAIL_ADDRESS" in table
        assert _json(_ferry(w, home, "dlq", "list", "--since", "2999-01-01", "--json")) == []
        assert "--since" in _ferry(w, home, "dlq", "list", "--since", "soon", code=2).stderr

        shown = _ferry(w, home, "dlq", "show", str(emails[0]["id"])).stdout
        assert "INVALID_EMAIL_ADDRESS" in shown and f"{emails[0]['stream']} {emails[0]['source_key']}" in shown
        full = _json(_ferry(w, home, "dlq", "show", str(emails[0]["id"]), "--json"))
        assert full["source_payload"]["id"] and full["mapped_payload"]["Shopify_Customer_Id__c"] == full["record_key"]

        # Fix the mapping (stop sending Email), replay: the Contacts whose only fault was the email land.
        only_email = [d for d in emails if d["error_code"] == "INVALID_EMAIL_ADDRESS" and d["fields"] == ["Email"]]
        fixed = w.pipeline_file("cli", _drop_contact_email)
        report = _json(_ferry(w, home, "dlq", "replay", str(fixed), "--code", "INVALID_EMAIL_ADDRESS", "--json"))
        replayed = {o["record_key"] for o in report["outcomes"] if o["outcome"] == "replayed"}
        assert {d["record_key"] for d in only_email} <= replayed, report["counts"]
        assert all(o["source"] == "source" for o in report["outcomes"])
        assert replayed <= set(w.keys("Contact"))
        again = _ferry(w, home, "dlq", "replay", str(fixed), "--code", "INVALID_EMAIL_ADDRESS")
        assert "no open dead letter matches" in again.stdout
        resolved = _json(_ferry(w, home, "dlq", "list", "--status", "resolved", "--json"))
        assert {d["record_key"] for d in resolved} >= replayed

        # Discard: refused without a selection, kept (with its reason) when done.
        assert "--all" in _ferry(w, home, "dlq", "discard", "--reason", "x", code=2).stderr
        long_ones = _json(_ferry(w, home, "dlq", "list", "--code", "STRING_TOO_LONG", "--json"))
        assert long_ones
        out = _json(_ferry(w, home, "dlq", "discard", "--code", "STRING_TOO_LONG", "--reason", "legacy data", "--json"))
        assert out == {"discarded": len(long_ones), "reason": "legacy data"}
        discarded = _json(_ferry(w, home, "dlq", "list", "--status", "discarded", "--json"))
        assert {d["id"] for d in discarded} == {d["id"] for d in long_ones}
        assert all(d["resolution"] == "discarded: legacy data" for d in discarded)


def _in_a_terminal(w: World, home: Path, *args: str) -> str:
    """What `ferry` prints when its output is a terminal (a pseudo-terminal here): progress bars included."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry", *args],
        env={**os.environ, **w.env(), "FERRY_HOME": str(home), "COLUMNS": "200", "TERM": "xterm"},
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=180) == 0, proc.stderr.read().decode() if proc.stderr else ""
    return out.decode(errors="replace")


def _account_employees_from_text(spec: dict[str, Any]) -> None:
    account = next(o for o in spec["objects"] if o["name"] == "Account")
    account["fields"]["NumberOfEmployees"] = {"template": "n{key}"}  # text into an int: every Account fails


def test_replay_shows_progress_and_a_summary_per_object_and_code(tmp_path: Path) -> None:
    with world(tmp_path, seed=9, customers=150, products=6, orders=60) as w:
        home = tmp_path / "home"
        # Every Account and its children dead-lettered: more than the pipeline's share allows (exit 3).
        # `ferry plan` sees the template cannot fill an int field: the run writes anyway only when forced.
        _ferry(w, home, "run", str(w.pipeline_file("sum", _account_employees_from_text)), "--force", "--json", code=3)
        fixed = w.pipeline_file("sum")
        dry = _ferry(w, home, "dlq", "replay", str(fixed), "--dry-run").stdout
        lines = [line for line in dry.splitlines() if line.strip()]
        assert len(lines) < 25, dry  # a summary, not a line per letter
        assert "Account" in dry and "would_replay" in dry and "--verbose lists each letter" in dry
        detailed = _ferry(w, home, "dlq", "replay", str(fixed), "--dry-run", "--verbose").stdout
        letters = _json(_ferry(w, home, "dlq", "list", "--pipeline", "sum", "--limit", "10000", "--json"))
        accounts = [d for d in letters if d["object"] == "Account"]
        assert len(accounts) > 100 and all(f" {d['record_key']} " in detailed for d in accounts[:20])
        as_json = _json(_ferry(w, home, "dlq", "replay", str(fixed), "--dry-run", "--json"))
        summary = {(r["object"], r["outcome"]): r["letters"] for r in as_json["summary"]}
        assert summary[("Account", "would_replay")] == sum(
            1 for o in as_json["outcomes"] if o["object"] == "Account" and o["outcome"] == "would_replay"
        )

        shown = _in_a_terminal(w, home, "dlq", "replay", str(fixed))
        # A bar per object (Salesforce Collections below 200 records, as a run would choose), then the summary.
        assert re.search(r"replay Account \(collections\) .*?(?<!\d)(\d+)/\1(?!\d)", shown), shown[-3000:]
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # without the terminal's colours
        assert re.search(r"Account +replayed +- +\d+", plain), plain[-3000:]


@pytest.mark.parametrize("status", ["bogus"])
def test_dlq_list_refuses_an_unknown_status(tmp_path: Path, status: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ferry", "dlq", "list", "--status", status],
        env={**os.environ, "FERRY_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "open, resolved, discarded, all" in proc.stderr
