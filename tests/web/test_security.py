"""Safe by default: the bind rule, the token, CSRF on every state-changing POST, and no secret in any page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from ferry.errors import ConfigError
from ferry.store import LetterFilter, NewDeadLetter, Store
from ferry.web import Dashboard, DashboardAccess, check_bind, create_app
from ferry.web.security import AUTH_COOKIE
from ferry.web.server import DashboardServer
from tests.web.conftest import DemoWorld

TOKEN = "a-long-dashboard-token-0123456789"
SECRET = "shpat_0123456789abcdef0123456789abcdef"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "ferry.db")
    run = s.start_run("shop")
    s.finish_run(run, "succeeded", {"objects": {"Contact": {"read": 2, "written": 1, "dead_lettered": 1,
                                                            "api_calls": 1}}, "seconds": 0.5})
    source = {"id": 1, "email": "nobody", "access_token": SECRET, "nested": {"client_secret": SECRET}}
    s.dead_letter("shop", run, [NewDeadLetter(
        "Contact", "1", "v1", [{"code": "INVALID_EMAIL_ADDRESS", "message": "bad email", "fields": ["Email"]}],
        orjson.dumps(source), {"Email": "nobody", "Password__c": SECRET}, stream="customers", source_key="1")])
    yield s
    s.close()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_a_non_loopback_bind_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="FERRY_DASHBOARD_TOKEN"):
        check_bind(host, None)
    check_bind(host, TOKEN)  # with one, it may


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    check_bind(host, None)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least"):
        check_bind("0.0.0.0", "short")


def test_the_server_refuses_0_0_0_0_before_binding(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(ConfigError):
        DashboardAccess.from_env("0.0.0.0")
    with pytest.raises(ConfigError):
        DashboardServer(Dashboard(store), "0.0.0.0", 0)
    monkeypatch.setenv("FERRY_DASHBOARD_TOKEN", TOKEN)
    assert DashboardAccess.from_env("0.0.0.0").token == TOKEN


def test_with_a_token_every_page_needs_it(store: Store) -> None:
    client = TestClient(create_app(Dashboard(store, access=DashboardAccess(token=TOKEN))))
    for path in ("/", "/letters", "/letters/1", "/pipelines", "/api/runs", "/api/throughput", "/runs/1"):
        assert client.get(path).status_code == 401, path
    assert client.get("/", headers={"Accept": "text/html"}, follow_redirects=False).headers["location"] == "/login"
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.post("/login", data={"token": "nope"}).status_code == 401
    signed_in = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert signed_in.status_code == 303
    cookie = signed_in.cookies[AUTH_COOKIE]
    assert TOKEN not in cookie  # the cookie holds a digest, never the token
    assert client.get("/letters").status_code == 200


def test_state_changing_posts_need_this_sessions_csrf_token(store: Store) -> None:
    client = TestClient(create_app(Dashboard(store)))
    page = client.get("/letters/1")
    token = _csrf(page.text)
    form = {"action": "discard", "id": "1", "confirm": "1", "reason": "test data"}
    assert client.post("/letters/action", data=form).status_code == 403  # no token
    assert client.post("/letters/action", data={**form, "csrf": "0" * 64}).status_code == 403  # wrong token
    other = TestClient(create_app(Dashboard(store)))  # another browser: its own session, not this token
    other.get("/letters")
    assert other.post("/letters/action", data={**form, "csrf": token}).status_code == 403
    assert store.get_dead_letter(1).status == "open"  # type: ignore[union-attr]
    assert client.get("/letters/action").status_code in (405, 422)  # a GET changes nothing
    # The confirmation step first, then the discard.
    confirm = client.post("/letters/action", data={"action": "discard", "id": "1", "csrf": token})
    assert confirm.status_code == 200 and "Discard 1 open dead letter?" in confirm.text
    done = client.post("/letters/action", data={**form, "csrf": token})
    assert done.status_code == 200 and "Discarded 1 dead letter" in done.text
    assert store.get_dead_letter(1).status == "discarded"  # type: ignore[union-attr]


def test_the_session_cookie_is_same_site_strict_and_http_only(store: Store) -> None:
    answer = TestClient(create_app(Dashboard(store))).get("/letters")
    cookie = answer.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie


def test_no_secret_of_a_payload_is_rendered(store: Store) -> None:
    client = TestClient(create_app(Dashboard(store)))
    page = client.get("/letters/1")
    assert page.status_code == 200 and "nobody" in page.text
    assert SECRET not in page.text and '&quot;access_token&quot;: &quot;***&quot;' in page.text


def test_no_pipeline_secret_in_any_page_of_the_demo(demo_world: DemoWorld) -> None:
    """Crawl every page of the demo's dashboard: no credential of the pipeline's environment appears."""
    secrets = {v for k, v in demo_world.env.items() if re.search("TOKEN|SECRET|KEY", k) and len(v) > 8
               and not v.startswith("/")}
    assert secrets  # the Shopify access token at least
    client = TestClient(create_app(Dashboard(demo_world.store, {demo_world.spec.name: demo_world.spec})))
    letters = demo_world.store.find_dead_letters(LetterFilter(status=None), 20)
    paths = ["/", "/letters", "/pipelines", "/pipelines/demo", "/api/runs", "/api/throughput",
             *(f"/runs/{r.id}" for r in demo_world.store.list_runs(None, 5)), *(f"/letters/{d.id}" for d in letters)]
    for path in paths:
        text = client.get(path).text
        for s in secrets:
            assert s not in text, f"a secret in {path}"


def test_the_pipeline_secrets_are_masked_even_if_a_record_carries_one(store: Store, demo_world: DemoWorld) -> None:
    """The last defence: a secret value of a given pipeline is masked wherever it would appear."""
    token = demo_world.env["SHOPIFY_ACCESS_TOKEN"]
    store.dead_letter("shop", None, [NewDeadLetter("Contact", "2", "v1", [
        {"code": "X", "message": f"echoed {token}", "fields": []}], None, {"Note__c": token})])
    client = TestClient(create_app(Dashboard(store, {demo_world.spec.name: demo_world.spec})))
    page = client.get("/letters/2")
    assert page.status_code == 200 and token not in page.text and "echoed ***" in page.text


def test_ferry_dashboard_on_0_0_0_0_without_a_token_exits_with_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ferry.cli.main import app

    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    monkeypatch.delenv("FERRY_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["dashboard", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert "FERRY_DASHBOARD_TOKEN" in result.output


def test_a_secret_with_markup_characters_is_masked_in_its_escaped_forms(store: Store) -> None:
    import html
    import json

    token = 'tok&en<"quoted">-0123456789'
    store.dead_letter("shop", None, [NewDeadLetter("Contact", "3", "v1", [
        {"code": "X", "message": f"echoed {token}", "fields": []}], None, {"Note__c": token})])
    client = TestClient(create_app(Dashboard(store, access=DashboardAccess(token=token))))
    page = client.get("/letters/2", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    for form in (token, html.escape(token), html.escape(json.dumps(token)[1:-1])):
        assert form not in page.text
    assert "echoed ***" in page.text
