"""Every bad input a user can give the real `ferry` console script: a documented exit code, one line on stderr,
no traceback, and a state database left as it was (issue 16)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ferry.cli.exits import Exit
from ferry.connectors.http import classify_transport_error
from ferry.store import Store
from ferry.store.lease import PipelineLock
from tests.engine.world import World, query, world

FERRY = Path(sys.executable).parent / "ferry"  # the venv's console script, as a user runs it


def ferry(home: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
          timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FERRY), *args],
        env={**os.environ, "FERRY_HOME": str(home), "COLUMNS": "200", **(env or {})},
        capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The command ended with ``code`` and exactly one stderr line, ``error: ...``, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A state directory with a real database in it (one pipeline with one finished run)."""
    state = tmp_path / "home"
    store = Store(state / "ferry.db")
    run_id = store.start_run("known")
    store.finish_run(run_id, "succeeded", {"objects": {}})
    store.close()
    return state


@pytest.fixture
def intact(home: Path) -> Any:
    """After the test: the state database's bytes are what they were before it."""
    before = digest(home / "ferry.db")
    yield
    assert digest(home / "ferry.db") == before, "a failed command changed the state database"


# ------------------------------------------------------------------ pipeline files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


PIPELINE_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "a directory": (lambda d: (d / "folder").mkdir() or d / "folder", "a directory, not a pipeline file"),
    "missing": (lambda d: d / "nope.yml", "pipeline file not found"),
    "not UTF-8": (lambda d: _write(d / "latin1.yml", b"name: caf\xe9\n"), "not UTF-8"),
    # Square brackets in the message must survive (they were read as Rich markup and vanished).
    "bad YAML": (lambda d: _write(d / "bad.yml", b"name: x\nobjects: [a, b\n"), "expected ',' or ']'"),
    # ... and in a file name (it crashed the error printer with MarkupError).
    "markup-like name": (lambda d: _write(d / "[bold]x[red].yml", b"a: [1\n"), "[bold]x[red].yml: not valid YAML"),
    # `[/x].yml`: a file x].yml in a folder named [ (the path the issue met).
    "closing-tag name": (lambda d: (d / "[").mkdir() or _write(d / "[" / "x].yml", b"a: [1\n"), "[/x].yml"),
    "a list, not a mapping": (lambda d: _write(d / "list.yml", b"- a\n- b\n"), "a YAML mapping"),
    "unknown system": (
        lambda d: _write(d / "sys.yml", b"name: x\nsource: {system: nope}\ntarget: {system: salesforce}\n"
                         b"objects: [{name: A, from: customer, external_id: X, fields: {X: id}}]\n"),
        "source.system: unknown system 'nope'",
    ),
    "missing variable": (lambda d: Path("shopify-to-salesforce"), "environment variable SHOPIFY_URL is not set"),
}


@pytest.mark.parametrize("case", sorted(PIPELINE_FILES))
@pytest.mark.parametrize("command", [("run",), ("plan",), ("dlq", "replay")])
def test_a_bad_pipeline_file_is_one_line_and_exit_2(
    case: str, command: tuple[str, ...], tmp_path: Path, home: Path, intact: None
) -> None:
    make, expected = PIPELINE_FILES[case]
    (tmp_path / "files").mkdir()
    path = make(tmp_path / "files")
    env = {k: "" for k in os.environ if k.startswith(("SHOPIFY_", "SALESFORCE_"))}
    line = one_error_line(ferry(home, *command, str(path), env=env), Exit.USAGE)
    assert expected in line, line


def test_a_packaged_example_is_found_by_name_from_any_directory(tmp_path: Path, home: Path) -> None:
    # The demo's closing hint; the missing environment is the first thing it then reports, not a missing file.
    for name in ("shopify-to-salesforce", "examples/shopify-to-salesforce.yml"):
        env = {k: "" for k in os.environ if k.startswith(("SHOPIFY_", "SALESFORCE_"))}
        line = one_error_line(ferry(home, "plan", name, env=env, cwd=tmp_path), Exit.USAGE)
        assert "SHOPIFY_URL is not set" in line, line


# ------------------------------------------------------------------ the state directory


# Values enough for the example pipeline to load (nothing listens there: the store is opened first).
EXAMPLE_ENV = {
    "SHOPIFY_URL": "https://127.0.0.1:9", "SHOPIFY_ACCESS_TOKEN": "shpat_x", "SALESFORCE_LOGIN_URL": "https://127.0.0.1:9",
    "SALESFORCE_CLIENT_ID": "id", "SALESFORCE_USERNAME": "u@example.com", "SALESFORCE_PRIVATE_KEY_FILE": "/nonexistent",
}


@pytest.mark.parametrize(
    "command",
    [("runs",), ("dlq", "list"), ("dlq", "show", "1"), ("run", "shopify-to-salesforce"),
     ("plan", "shopify-to-salesforce")],
)
def test_a_corrupt_state_database_is_named_and_left_alone(command: tuple[str, ...], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = _write(state / "ferry.db", b"this is not a database, but somebody's notes\n" * 40)
    before = digest(db)
    line = one_error_line(ferry(state, *command, env=EXAMPLE_ENV), Exit.STATE)
    assert "ferry.db" in line and "file is not a database" in line, line
    assert digest(db) == before
    assert sorted(p.name for p in state.iterdir()) == ["ferry.db"]


def test_an_unusable_ferry_home_is_one_line_and_exit_6(tmp_path: Path) -> None:
    a_file = _write(tmp_path / "afile", b"x")
    for home, expected in ((a_file, "not a directory"), (a_file / "below", "cannot create it")):
        line = one_error_line(ferry(home, "runs"), Exit.STATE)
        assert f"FERRY_HOME={home}" in line and expected in line, line
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "not writable" in one_error_line(ferry(locked, "runs"), Exit.STATE)


# ------------------------------------------------------------------ options and names


def test_unknown_names_and_bad_options(home: Path, intact: None) -> None:
    for args, expected in (
        (("runs", "--pipeline", "nope"), "no run and no dead letter of such a pipeline"),
        (("runs", "--pipeline", "knwon"), "did you mean known?"),
        (("dlq", "list", "--pipeline", "nope"), "no run and no dead letter of such a pipeline"),
        (("dlq", "show", "999"), "no dead letter with id 999"),
        (("dlq", "list", "--status", "gone"), "--status 'gone'"),
        (("dlq", "list", "--since", "soon"), "--since 'soon'"),
        (("dlq", "discard", "--reason", "x"), "say which letters to discard"),
        (("demo", "nope"), "unknown demo flow 'nope'"),
        (("demo", "--kill-worker"), "--kill-worker needs --workers N"),
        (("demo", "--workers", "1", "--kill-worker"), "--kill-worker needs --workers 2 or more"),
        (("demo", "--workers", "3", "--keep"), "do not go with --keep"),
        (("demo", "woocommerce-to-salesforce", "--workers", "3"), "runs the shopify-to-salesforce flow only"),
        (("sandbox", "env", "nope"), "unknown sandbox 'nope'"),
        (("sandbox", "env", "shopify"), "no shopify sandbox is running"),
    ):
        assert expected in one_error_line(ferry(home, *args), Exit.USAGE), args


def test_version(home: Path) -> None:
    proc = ferry(home, "--version")
    assert proc.returncode == 0 and proc.stdout.startswith("ferry ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("run",), "Missing argument 'pipeline'. (see: ferry run --help)"),
        (("run", "p.yml", "--bogus"), "No such option: --bogus (see: ferry run --help)"),
        (("nope",), "No such command 'nope'. (see: ferry --help)"),
        (("dlq", "nope"), "No such command 'nope'. (see: ferry dlq --help)"),
        (("dlq", "list", "--limit", "many"), "Invalid value for '--limit'"),
        (("dlq", "show"), "Missing argument"),
        (("runs", "--limit"), "Option '--limit' requires an argument"),
    ],
)
def test_click_usage_errors_are_one_plain_line_and_exit_2(
    args: tuple[str, ...], expected: str, home: Path, intact: None
) -> None:
    """Click's own usage errors (an argument missing, an unknown option or command, a value of the wrong
    type) read like ferry's: one ``error:`` line naming where the usage is, no Rich box, exit 2."""
    proc = ferry(home, *args)
    line = one_error_line(proc, Exit.USAGE)
    assert expected in line, line
    assert "╭" not in proc.stderr and "│" not in proc.stderr and "Usage:" not in proc.stderr, proc.stderr


def test_no_command_prints_the_help_and_exits_2(home: Path) -> None:
    proc = ferry(home, "dlq")
    assert proc.returncode == Exit.USAGE and "Commands" in proc.stdout + proc.stderr
    assert "error:" not in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ network errors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_network_error_names_the_host_and_cause_and_retries_are_one_line(tmp_path: Path) -> None:
    port = _closed_port()
    state = tmp_path / "home"
    env = {
        "SHOPIFY_URL": f"https://127.0.0.1:{port}", "SHOPIFY_ACCESS_TOKEN": "shpat_x",
        "SALESFORCE_LOGIN_URL": f"https://127.0.0.1:{port}", "SALESFORCE_CLIENT_ID": "id",
        "SALESFORCE_USERNAME": "u@example.com", "SALESFORCE_PRIVATE_KEY_FILE": str(tmp_path / "key.pem"),
        "FERRY_HTTP_BACKOFF_INITIAL": "0.01",  # every attempt made, without ~4 s of backoff per run
    }
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    proc = ferry(state, "run", "shopify-to-salesforce", env=env)
    assert proc.returncode == Exit.FAILED, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # ONE line: the call, the host and the cause, with the attempts folded in (no retry summary line beside it).
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and f"on 127.0.0.1:{port}: connection refused" in lines[0], proc.stderr
    assert re.search(r"\(tried \d+ times; -vv shows each attempt\)$", lines[0]), proc.stderr
    # -vv: every attempt is there, and the summary line too.
    verbose = ferry(state, "-vv", "run", "shopify-to-salesforce", env=env)
    assert verbose.returncode == Exit.FAILED
    assert verbose.stderr.count("http.retry ") >= 2 and "http.retried" in verbose.stderr, verbose.stderr


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (httpx.ConnectError("All connection attempts failed"), "network error ConnectError"),
        (httpx.ConnectTimeout(""), "timed out connecting"),
        (httpx.ReadTimeout(""), "timed out waiting for the answer"),
        (httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS handshake failed"),
        (httpx.ReadError("Connection reset by peer"), "connection reset"),
    ],
)
def test_network_causes_in_words(exc: httpx.TransportError, cause: str) -> None:
    err = classify_transport_error(exc, "GET", "https://shop.test:8443/admin/x.json?token=secret")
    assert str(err).startswith("GET /admin/x.json on shop.test:8443: ") and cause in str(err), str(err)
    assert "secret" not in str(err)


def test_dns_and_refused_are_told_from_the_exception_chain() -> None:
    def chained(outer: httpx.TransportError, inner: BaseException) -> httpx.TransportError:
        outer.__cause__ = inner
        return outer

    dns = chained(httpx.ConnectError("[Errno -2] boom"), socket.gaierror(-2, "Name or service not known"))
    assert "DNS lookup failed" in str(classify_transport_error(dns, "GET", "https://nowhere.test/"))
    refused = chained(httpx.ConnectError("boom"), ConnectionRefusedError(111, "Connection refused"))
    assert "connection refused" in str(classify_transport_error(refused, "GET", "https://127.0.0.1:9/"))


# ------------------------------------------------------------------ against the sandboxes


def test_the_exit_code_of_a_run_from_its_figures() -> None:
    from ferry.cli.main import _run_exit_code
    from ferry.engine.stats import RunStats

    def stats(status: str, read: int, dead: int, cap: float = 0.1) -> RunStats:
        s = RunStats(1, "p", status=status, dead_letter_cap=cap)
        s.object("Contact").read, s.object("Contact").dead_lettered = read, dead
        s.object("Account").read = 10
        return s

    assert _run_exit_code(stats("succeeded", 10, 0)) == Exit.OK
    assert _run_exit_code(stats("succeeded", 10, 1)) == Exit.DEAD_LETTERS  # 10% is not over 10%
    assert _run_exit_code(stats("succeeded", 10, 2)) == Exit.DEAD_LETTERS_OVER_SHARE
    assert _run_exit_code(stats("succeeded", 10, 10, cap=1.0)) == Exit.DEAD_LETTERS
    assert _run_exit_code(stats("succeeded", 10, 10, cap=0.99)) == Exit.DEAD_LETTERS_OVER_SHARE
    assert _run_exit_code(stats("paused", 10, 0)) == Exit.TRY_LATER
    assert _run_exit_code(stats("failed", 10, 0)) == Exit.FAILED


def _run(w: World, home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return ferry(home, *args, env=w.env(), timeout=timeout)


def _object(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        edit(next(o for o in spec["objects"] if o["name"] == name))

    return apply


def test_exit_codes_of_runs_against_the_sandboxes(tmp_path: Path) -> None:
    with world(tmp_path, seed=3, customers=30, products=8, orders=40) as w:
        # An unknown target field: `ferry plan` sees it, so `ferry run` stops before reading or writing anything.
        unknown = w.pipeline_file("unknown-field", _object("Contact", lambda o: o["fields"].update(Nope__c="email")))
        home = tmp_path / "h1"
        line = one_error_line(_run(w, home, "run", str(unknown)), Exit.USAGE)
        assert "not started" in line and "Nope__c" in line and "--force" in line, line
        assert not w.records("Account") and not query(home / "ferry.db", "SELECT * FROM staging")
        # --force writes anyway: every Contact dead-lettered is over any share below 100%: exit 3.
        forced = _run(w, home, "run", str(unknown), "--force", "--json")
        assert forced.returncode == Exit.DEAD_LETTERS_OVER_SHARE, forced.stderr
        stats = json.loads(forced.stdout)
        assert stats["over_dead_letter_cap"]["Contact"] == 1.0 and w.records("Account")

        # A wrong type (text into Quantity): `ferry plan` sees it, so the run stops; forced, 100% of OrderItems
        # are dead-lettered, and that is never exit 0.
        wrong = w.pipeline_file("wrong-type", _object("OrderItem", lambda o: o["fields"].update(Quantity="name")))
        line = one_error_line(_run(w, tmp_path / "h2", "run", str(wrong)), Exit.USAGE)
        assert "not started" in line and "OrderItem.Quantity: order_line.name is text" in line, line
        proc = _run(w, tmp_path / "h2", "run", str(wrong), "--force")
        assert proc.returncode == Exit.DEAD_LETTERS_OVER_SHARE, proc.stderr
        assert "dead letters over max_dead_letter_share 10%: " in proc.stdout and "OrderItem 100%" in proc.stdout

        # The same run allowed up to 100% dead letters: finished with dead letters, exit 4.
        allowed = w.pipeline_file("allowed", lambda s: s.update(max_dead_letter_share="100%"))
        proc = _run(w, tmp_path / "h3", "run", str(allowed))
        assert proc.returncode == Exit.DEAD_LETTERS, proc.stderr

        # dlq list says how many match and how to see the rest.
        listed = _run(w, home, "dlq", "list", "--pipeline", "unknown-field", "--limit", "3")
        total = len(query(home / "ferry.db", "SELECT id FROM dlq WHERE status = 'open'"))
        assert total > 3 and f"showing 1-3 of {total:,} matching dead letters" in listed.stdout, listed.stdout
        assert "--offset 3" in listed.stdout and "--all" in listed.stdout
        page = json.loads(_run(w, home, "dlq", "list", "--offset", "3", "--limit", "2", "--json").stdout)
        assert len(page) == 2
        assert len(json.loads(_run(w, home, "dlq", "list", "--all", "--json").stdout)) == total

        # An unknown target object: the pipeline's object named, the org's closest one suggested.
        typo = w.pipeline_file("typo", _object("Contact", lambda o: o.update(name="Contcat")))
        line = one_error_line(_run(w, tmp_path / "h4", "run", str(typo)), Exit.USAGE)
        assert "Contcat" in line and "did you mean Contact?" in line, line

        # Another process holds the pipeline: try later, exit 5, nothing started.
        with PipelineLock(home, "allowed"):
            line = one_error_line(_run(w, home, "run", str(allowed)), Exit.TRY_LATER)
        assert "pipeline allowed is being run by pid" in line, line


def _wait(predicate: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


_STAGED = "SELECT COUNT(*) FROM staging"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_run_is_marked_interrupted_and_the_next_one_resumes(tmp_path: Path, signum: int) -> None:
    with world(tmp_path, customers=60) as w:
        w.shop.faults.configure({"rules": [{"kind": "latency", "latency_ms": 150, "path": "customers"}]})
        pipeline = w.pipeline_file("sig", lambda s: s["source"].update(page_size=5, api="rest"))  # as below
        home = tmp_path / "home"
        proc = w.ferry(home, "run", str(pipeline))
        _wait(lambda: (query(home / "ferry.db", _STAGED) or [(0,)])[0][0] >= 10, 120, "staged customers")
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 128 + signum
        err = (home / "ferry-0.err").read_text()
        assert f"{signal.Signals(signum).name}: run 1 stopped and marked interrupted" in err and "Traceback" not in err
        runs = json.loads(ferry(home, "runs", "--json").stdout)
        assert runs[0]["status"] == "interrupted"
        w.shop.faults.configure({})
        again = _run(w, home, "run", str(pipeline))
        assert again.returncode in (Exit.OK, Exit.DEAD_LETTERS, Exit.DEAD_LETTERS_OVER_SHARE), again.stderr
        assert "resumed run 1 (interrupted)" in again.stdout


def test_a_killed_run_shows_as_died(tmp_path: Path) -> None:
    with world(tmp_path, customers=60) as w:
        w.shop.faults.configure({"rules": [{"kind": "latency", "latency_ms": 150, "path": "customers"}]})
        # REST pages of 5 behind the latency rule on `customers` paths keep the run going (a GraphQL backfill's
        # bulk operations do not pass through those paths).
        pipeline = w.pipeline_file("killed", lambda s: s["source"].update(page_size=5, api="rest"))
        home = tmp_path / "home"
        proc = w.ferry(home, "run", str(pipeline))
        _wait(lambda: (query(home / "ferry.db", _STAGED) or [(0,)])[0][0] >= 10, 120, "staged customers")
        assert json.loads(ferry(home, "runs", "--json").stdout)[0]["status"] == "running"  # its lock is held
        proc.kill()
        proc.wait(timeout=30)
        assert json.loads(ferry(home, "runs", "--json").stdout)[0]["status"] == "died"
        assert "died" in ferry(home, "runs").stdout
        w.shop.faults.configure({})
        again = _run(w, home, "run", str(pipeline), "--json")
        assert json.loads(again.stdout)["resumed_from"] == {"run_id": 1, "status": "died"}
        assert query(home / "ferry.db", "SELECT status FROM runs ORDER BY id")[0] == ("died",)
