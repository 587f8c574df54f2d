"""FERRY_STATE_URL: which store a process opens, and a password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.errors import ConfigError
from ferry.store.factory import configured_state_url, open_store
from ferry.store.sqlite import Store
from ferry.store.url import mask_url, parse_state_url
from tests.store.postgres_server import require_postgres_bin


def test_unset_is_the_embedded_sqlite_file_in_ferry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    monkeypatch.delenv("FERRY_STATE_URL", raising=False)
    url = configured_state_url()
    assert (url.kind, url.path) == ("sqlite", tmp_path.resolve() / "ferry.db")
    store = open_store()
    assert isinstance(store, Store) and store.path == tmp_path.resolve() / "ferry.db"
    store.close()


def test_sqlite_urls_name_relative_and_absolute_files(tmp_path: Path) -> None:
    default = tmp_path / "d.db"
    assert parse_state_url(f"sqlite:///{tmp_path}/x.db", default).path == tmp_path / "x.db"
    assert parse_state_url("sqlite:///rel/x.db", default).path == (Path.cwd() / "rel" / "x.db").resolve()
    with pytest.raises(ConfigError, match="no database file"):
        parse_state_url("sqlite:///", default)


def test_postgresql_urls_are_kept_whole_and_shown_masked() -> None:
    url = parse_state_url("postgresql://ferry:s3cr%40t@db.internal:5433/ferry?sslmode=require", Path("x"))
    assert (url.kind, url.url) == ("postgresql", "postgresql://ferry:s3cr%40t@db.internal:5433/ferry?sslmode=require")
    assert url.safe == "postgresql://ferry:***@db.internal:5433/ferry?sslmode=require"
    assert parse_state_url("postgres://u@h/db", Path("x")).kind == "postgresql"


def test_a_bad_url_is_a_usage_error_that_hides_the_password() -> None:
    with pytest.raises(ConfigError) as bad:
        parse_state_url("mysql://root:hunter2@db/ferry", Path("x"))
    assert "hunter2" not in str(bad.value) and "mysql://root:***@db/ferry" in str(bad.value)
    with pytest.raises(ConfigError, match="no host") as nohost:
        parse_state_url("postgresql://:hunter2@/ferry", Path("x"))
    assert "hunter2" not in str(nohost.value)


def test_every_form_of_password_is_masked() -> None:
    text = "a postgresql://u:p%40ss@h/db and host=h password='x y' user=u password=plain"
    masked = mask_url(text)
    assert "p%40ss" not in masked and "x y" not in masked and "plain" not in masked
    assert "postgresql://u:***@h/db" in masked and masked.count("password=***") == 2
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"  # nothing to hide


def test_a_missing_postgresql_fails_the_run_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_TEST_PG_BIN", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL server binaries not found"):
        require_postgres_bin()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        require_postgres_bin()


def test_the_urls_connect_timeout_bounds_the_wait_for_an_unreachable_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``?connect_timeout=1``: a refused server is reported after ~1 s, not after the pool's default 10 s."""
    import socket
    import time

    from ferry.store.postgres import StateUnavailable

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    monkeypatch.setenv("FERRY_STATE_URL", f"postgresql://ferry:hunter2@127.0.0.1:{port}/ferry?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(StateUnavailable) as raised:
        open_store()
    assert time.monotonic() - started < 6, "the URL's connect_timeout was not the pool's wait"
    assert "hunter2" not in str(raised.value) and "connect_timeout=1" in str(raised.value)
