"""Injected faults, seen the way a client sees them from a real org or network: simple-salesforce and httpx."""

from __future__ import annotations

import csv
import io
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from ferry.cli.serve import fault_config
from ferry.errors import ConfigError
from ferry.sandbox.salesforce.faults import FaultRule, Faults, parse_fault_spec

from .bayeux import Bayeux
from .conftest import Org, start_org

API = "/services/data/v62.0"


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    yield from start_org(tmp_path_factory.mktemp("sf-faults"), bulk_chunk_rows=500)


@pytest.fixture
def sf(org: Org) -> Iterator[Salesforce]:
    org.admin("reset", "POST")
    org.sandbox.faults.clear()
    yield org.client()
    org.sandbox.faults.clear()


def token(org: Org) -> str:
    return str(org.token().json()["access_token"])


def client(org: Org, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=org.url, verify=ssl.create_default_context(cafile=str(org.running.ca_file)),
                        headers={"Authorization": f"Bearer {token(org)}"}, **kwargs)


def set_faults(org: Org, config: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    response = org.session().request(method, f"{org.url}/__sandbox/faults", json=config)
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- error replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "exc_type", "status", "code", "message"), [
    ("500", SalesforceGeneralError, 500, "UNKNOWN_EXCEPTION", None),
    ("503", SalesforceGeneralError, 503, "SERVER_UNAVAILABLE", None),
    ("429", SalesforceGeneralError, 429, "REQUEST_LIMIT_EXCEEDED", None),
    ("limit", SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    ("concurrent", SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED",
     "ConcurrentRequests (Concurrent API Requests) Limit exceeded."),
    ("lock", SalesforceMalformedRequest, 400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"),
])
def test_error_faults_raise_what_an_org_makes_simple_salesforce_raise(
    org: Org, sf: Salesforce, kind: str, exc_type: type[Exception], status: int, code: str, message: str | None,
) -> None:
    set_faults(org, {"rules": [{"kind": kind, "count": 1}]})
    with pytest.raises(exc_type) as exc:
        sf.Account.create({"Name": "x"})
    err: Any = exc.value
    assert err.status == status and err.content[0]["errorCode"] == code
    if message:
        assert err.content[0]["message"] == message
    assert sf.Account.create({"Name": "x"})["success"]  # count=1: the next call goes through
    assert org.admin("faults")["injected"] == {kind: 1}


def test_429_has_no_retry_after_unless_asked(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": ["429:1,count=1", "429:1,count=1,retry_after=7"]})
    with client(org) as http:
        plain = http.get(f"{API}/limits")
        hinted = http.get(f"{API}/limits")
        ok = http.get(f"{API}/limits")
    assert plain.status_code == 429 and "retry-after" not in plain.headers
    assert hinted.status_code == 429 and hinted.headers["retry-after"] == "7"
    assert ok.status_code == 200 and plain.headers["sforce-limit-info"].startswith("api-usage=")


def test_rules_match_path_and_method(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": [{"kind": "503", "path": "sobjects/Contact", "method": "POST"}]})
    acc = sf.Account.create({"Name": "a"})
    assert sf.Account.get(acc["id"])["Name"] == "a"
    with pytest.raises(SalesforceGeneralError):
        sf.Contact.create({"LastName": "c"})
    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 0  # the refused call wrote nothing
    assert org.admin("faults")["injected"] == {"503": 1}


def test_share_of_calls_is_seeded_and_deterministic(org: Org, sf: Salesforce) -> None:
    def run() -> list[int]:
        set_faults(org, {"seed": 42, "rules": ["503:0.3"], "reset_counts": True})
        with client(org) as http:
            return [http.get(f"{API}/limits").status_code for _ in range(120)]

    first, second = run(), run()
    assert first == second
    failed = first.count(503)
    assert 15 <= failed <= 60 and set(first) == {200, 503}
    assert org.admin("stats")["faults_injected"] == {"503": failed}


# --- connection faults -----------------------------------------------------------------------------


def test_reset_drops_the_connection_without_a_status(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": ["reset:1,count=1"]})
    with client(org) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.get(f"{API}/limits")
        assert http.get(f"{API}/limits").status_code == 200  # a new connection works
    set_faults(org, {"rules": ["reset:1,count=1"]})
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.Account.create({"Name": "lost"})
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0


def test_reset_is_a_tcp_rst(org: Org, sf: Salesforce) -> None:
    """Below TLS: the peer's kernel answers with RST (ECONNRESET), not an orderly FIN."""
    set_faults(org, {"rules": ["reset:1,count=1"]})
    ctx = ssl.create_default_context(cafile=str(org.running.ca_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", org.running.port), timeout=10) as sock:
        def pump() -> None:
            if outgoing.pending:
                sock.sendall(outgoing.read())

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                incoming.write(sock.recv(65536))
        tls.write(f"GET {API}/limits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token(org)}\r\n\r\n".encode())
        pump()
        received = b""
        with pytest.raises(ConnectionResetError):
            for _ in range(100):
                chunk = sock.recv(65536)
                if not chunk:
                    pytest.fail("orderly close (FIN), expected a reset")
                received += chunk
        assert b"HTTP/1.1" not in received  # and no response came before it (only TLS session tickets)


def test_reset_after_processing_loses_only_the_answer(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": [{"kind": "reset", "count": 1, "processed": True}]})
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.Account.create({"Name": "written"})
    assert sf.query("SELECT Name FROM Account")["records"][0]["Name"] == "written"


def test_timeout_holds_past_the_client_read_timeout(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": ["timeout:1,count=1,hold=20"]})
    with client(org, timeout=httpx.Timeout(10, read=0.5)) as http:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"{API}/limits")
        assert time.monotonic() - start < 10  # the client gave up, not the server
        assert http.get(f"{API}/limits").status_code == 200


def test_timeout_hold_is_bounded_then_the_connection_drops(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"timeout_hold_seconds": 0.4, "rules": ["timeout:1,count=1"]})
    with client(org, timeout=10) as http:
        start = time.monotonic()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.get(f"{API}/limits")
        assert 0.35 <= time.monotonic() - start < 8
    with pytest.raises(ValueError, match="hold"):
        org.sandbox.faults.configure({"timeout_hold_seconds": 3600})


# --- sessions, records, latency --------------------------------------------------------------------


def test_session_expires_every_n_calls_and_reauth_recovers(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"expire_session_every": 3})
    sf.Account.create({"Name": "1"})
    sf.Account.create({"Name": "2"})
    with pytest.raises(SalesforceExpiredSession) as exc:
        sf.Account.create({"Name": "3"})
    assert exc.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    with pytest.raises(SalesforceExpiredSession):  # the token stays dead: no call is the 3rd "lucky" one
        sf.Account.create({"Name": "3 again"})
    fresh = org.client()
    fresh.Account.create({"Name": "3"})
    assert fresh.query("SELECT COUNT() FROM Account")["totalSize"] == 3  # a 401 call writes nothing
    assert org.admin("faults")["injected"] == {"session_expired": 1}


def test_expire_rule_invalidates_the_token(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": ["expire:1,count=1"]})
    with pytest.raises(SalesforceExpiredSession):
        sf.describe()
    with pytest.raises(SalesforceExpiredSession):
        sf.describe()


def test_lock_row_fails_per_record_in_collections_and_composite(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"seed": 3, "lock_row_rate": 0.25})
    records = [{"attributes": {"type": "Account"}, "Name": f"n{i}"} for i in range(200)]
    out = sf.restful("composite/sobjects", method="POST", json={"records": records})
    locked = [r for r in out if not r["success"]]
    assert 20 <= len(locked) <= 90 and len(out) == 200
    assert locked[0]["errors"] == [{"statusCode": "UNABLE_TO_LOCK_ROW", "fields": [],
                                    "message": "unable to obtain exclusive access to this record"}]
    composite = sf.restful("composite", method="POST", json={"compositeRequest": [
        {"method": "POST", "url": f"{API}/composite/sobjects", "referenceId": "c1",
         "body": {"records": records[:100]}}]})
    body = composite["compositeResponse"][0]["body"]
    assert 0 < sum(not r["success"] for r in body) < 100
    assert org.admin("faults")["injected"]["lock_row"] == len(locked) + sum(not r["success"] for r in body)


def test_lock_row_fails_per_record_in_bulk(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"seed": 5, "lock_row_rate": 0.1})
    (result,) = sf.bulk2.Account.insert(records=[{"Name": f"b{i}"} for i in range(1000)], wait=0.1)
    failed = list(csv.DictReader(io.StringIO(sf.bulk2.Account.get_failed_records(result["job_id"]))))
    assert result["numberRecordsFailed"] == len(failed) == org.admin("faults")["injected"]["lock_row"]
    assert 50 <= len(failed) <= 160
    assert failed[0]["sf__Error"] == "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record: --"
    ids = [r["sf__Id"] for r in csv.DictReader(io.StringIO(sf.bulk2.Account.get_successful_records(result["job_id"])))]
    (deleted,) = sf.bulk2.Account.delete(records=[{"Id": i} for i in ids[:200]], wait=0.1)
    assert 0 < deleted["numberRecordsFailed"] < 80  # a delete takes the row lock too


def test_latency_rule_delays_matching_calls(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": [{"kind": "latency", "latency_ms": 300, "path": "limits"}]})
    start = time.monotonic()
    sf.limits()
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    sf.describe()
    assert org.admin("faults")["injected"] == {"latency": 1}


def test_a_rule_with_body_fires_only_on_calls_carrying_that_text(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": [{"kind": "503", "body": "held-7", "count": 1}]})
    sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Account"}, "Name": "free-1"}]})
    assert org.admin("faults")["injected"] == {}
    with pytest.raises(SalesforceGeneralError):
        sf.restful("composite/sobjects", method="POST", json={"records": [
            {"attributes": {"type": "Account"}, "Name": name} for name in ("free-2", "held-7")]})
    assert org.admin("faults")["injected"] == {"503": 1}
    assert parse_fault_spec("latency:1,ms=50,body=held-7").body == "held-7"


def test_token_endpoint_sees_only_absolute_path_rules(org: Org, sf: Salesforce) -> None:
    set_faults(org, {"rules": ["503:1"]})
    assert org.token().status_code == 200  # a data-API rule leaves OAuth alone
    set_faults(org, {"rules": ["503:1,path=/services/oauth2/token,count=1"]})
    assert org.token().status_code == 503
    assert org.token().status_code == 200


def test_streaming_api_sees_only_absolute_path_rules(org: Org, sf: Salesforce) -> None:
    cometd = f"{org.url}/cometd/62.0"
    set_faults(org, {"rules": ["503:1"]})
    Bayeux(org.session(), cometd, sf.session_id).open("/data/ChangeEvents")  # a data-API rule: no effect
    set_faults(org, {"rules": ["503:1,path=/cometd,count=1", "reset:1,path=/cometd,count=1"]})
    client = Bayeux(org.session(), cometd, sf.session_id)
    with pytest.raises(requests.HTTPError) as refused:  # the org's load balancer answers 503
        client.handshake()
    assert refused.value.response.status_code == 503
    assert refused.value.response.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    with pytest.raises(requests.ConnectionError):  # then the connection is reset
        client.handshake()
    client.open("/data/ChangeEvents")  # the rules are spent: the client recovers by handshaking again
    sf.Account.create({"Name": "after the faults"})
    assert client.poll(1)[0]["data"]["payload"]["Name"] == "after the faults"
    assert org.admin("faults")["injected"] == {"503": 1, "reset": 1}


# --- configuration ---------------------------------------------------------------------------------


def test_admin_route_post_patch_get_delete(org: Org, sf: Salesforce) -> None:
    state = set_faults(org, {"seed": 9, "rules": ["503:0.5"], "lock_row_rate": 0.1, "expire_session_every": 50})
    assert state["seed"] == 9 and state["lock_row_rate"] == 0.1 and state["expire_session_every"] == 50
    merged = set_faults(org, {"rules": [{"kind": "reset", "rate": 0.01}]}, method="PATCH")
    assert [r["kind"] for r in merged["rules"]] == ["503", "reset"] and merged["lock_row_rate"] == 0.1
    bad = org.session().post(f"{org.url}/__sandbox/faults", json={"rules": [{"kind": "explode"}]})
    assert bad.status_code == 400 and "unknown fault kind 'explode'" in bad.json()["error"]
    assert org.admin("faults")["rules"][1]["kind"] == "reset"  # a bad configuration changes nothing
    cleared = org.session().delete(f"{org.url}/__sandbox/faults").json()
    assert cleared["rules"] == [] and cleared["lock_row_rate"] == 0.0


def test_fault_spec_parsing() -> None:
    rule = parse_fault_spec("reset:0.02,path=composite,method=patch,count=5,processed=true")
    assert rule == FaultRule(kind="reset", rate=0.02, path="composite", method="PATCH", count=5, processed=True)
    assert parse_fault_spec("latency:0.5,ms=250") == FaultRule(kind="latency", rate=0.5, latency_ms=250)
    assert parse_fault_spec("timeout,hold=12").hold_seconds == 12.0
    assert parse_fault_spec("401").kind == "expire" and parse_fault_spec("418").status == 418
    for bad in ("nope:0.1", "503:2", "503:0.1,colour=red", "latency:1", "timeout:1,hold=9999"):
        with pytest.raises(ValueError, match="bad fault spec"):
            parse_fault_spec(bad)
    faults = Faults()
    faults.configure({"rules": ["503:0.05", {"kind": "reset", "rate": 0.02}], "lock_rate": 0.03})
    assert [r.kind for r in faults.rules] == ["503", "reset"] and faults.lock_row_rate == 0.03
    with pytest.raises(ValueError, match="unknown fault settings"):
        faults.configure({"lock_row": 0.1})


def test_cli_flags_build_the_configuration(tmp_path: Path) -> None:
    assert fault_config([], seed=7) is None
    config = fault_config(["503:0.05", "reset:0.02", "timeout:0.01"], seed=7, lock_rate=0.03,
                          expire_session_every=500, timeout_hold=12)
    assert config is not None
    Faults().configure(config)  # what the CLI builds, the injector accepts
    assert (config["seed"], config["lock_row_rate"], config["expire_session_every"]) == (7, 0.03, 500)
    assert [r["kind"] for r in config["rules"]] == ["503", "reset", "timeout"]
    file = tmp_path / "faults.json"
    file.write_text('{"seed": 3, "rules": [{"kind": "429", "rate": 1, "count": 2}]}')
    from_file = fault_config(["reset:0.5"], seed=7, faults_file=file)
    assert from_file is not None and from_file["seed"] == 3
    assert [r["kind"] for r in from_file["rules"]] == ["429", "reset"]
    with pytest.raises(ConfigError, match="bad fault spec"):
        fault_config(["boom"], seed=1)


def test_sandbox_serve_takes_fault_and_limit_flags(tmp_path: Path) -> None:
    from ferry.cli.sandboxes import start_sandbox

    proc = start_sandbox("salesforce", tmp_path, ["--fault", "503:0.5,path=sobjects", "--lock-rate", "0.03",
                                                  "--expire-session-every", "500", "--fault-seed", "11",
                                                  "--daily-api-limit", "1234", "--concurrent-limit", "5"])
    try:
        ca = ssl.create_default_context(cafile=proc.info["ca_file"])
        state = httpx.get(f"{proc.url}/__sandbox/faults", verify=ca).json()
        stats = httpx.get(f"{proc.url}/__sandbox/stats", verify=ca).json()
    finally:
        proc.stop()
    assert stats["daily_api_requests"]["max"] == 1234 and stats["concurrent_long_running"]["limit"] == 5
    assert state["seed"] == 11 and state["lock_row_rate"] == 0.03 and state["expire_session_every"] == 500
    assert state["rules"][0]["kind"] == "503" and state["rules"][0]["path"] == "sobjects"
