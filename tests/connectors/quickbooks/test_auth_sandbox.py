"""Refresh-token rotation in the middle of a run: nothing lost, the newest token kept (mode 0600), never logged."""

from __future__ import annotations

import asyncio
import logging
import ssl
import stat
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from ferry.connectors.quickbooks import QuickBooksSink
from ferry.core.contracts import SinkContext
from ferry.errors import AuthError
from tests.connectors.quickbooks.conftest import Books
from tests.connectors.quickbooks.test_sink_sandbox import customers


def _refresh(books: Books, token: str) -> httpx.Response:
    return httpx.post(f"{books.url}/oauth2/v1/tokens/bearer",
                      data={"grant_type": "refresh_token", "refresh_token": token},
                      auth=(books.sandbox.client_id, books.sandbox.client_secret),
                      verify=ssl.create_default_context(cafile=str(books.running.ca_file)), timeout=10)


def test_a_rotation_mid_run_loses_nothing_and_the_new_token_is_kept_never_logged(
    books: Books, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = books.sandbox.refresh_token
    token_file = tmp_path / "secrets" / "qbo-token"
    # Every refresh rotates, and a replaced token dies at once (Intuit: after a grace period).
    books.admin("PATCH", "oauth", json={"rotate_after": 0, "rotation_grace": 0})
    caplog.set_level(logging.DEBUG)

    async def run() -> tuple[list[bool], QuickBooksSink]:
        async with QuickBooksSink(books.config(token_file), SinkContext("rotation")) as sink:
            first = await sink.upsert("Customer", "DisplayName", customers(10), "batch")
            books.admin("POST", "oauth/expire")  # the access token dies mid-run: the next call meets a 401
            second = await sink.upsert("Customer", "DisplayName", customers(10, start=10), "single")
            return [r.success for r in first + second], sink

    with capture_logs() as logs:
        outcomes, sink = asyncio.run(run())
    assert all(outcomes) and len(books.records("Customer")) == 20
    auth = sink.client.auth
    assert auth.refreshes == 2 and auth.rotations == 2
    kept = token_file.read_text()
    assert kept != seed and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert _refresh(books, seed).status_code == 400  # the seed is dead: only the kept token works now
    said = "\n".join([str(entry) for entry in logs] + [caplog.text, capsys.readouterr().out])
    assert "refresh_token_rotated" in said
    for secret in (seed, kept, books.sandbox.client_secret):
        assert secret not in said

    # The next run starts from the kept token although its config still carries the dead seed.
    async def next_run() -> bool:
        async with QuickBooksSink(books.config(token_file), SinkContext("rotation")) as again:
            [result] = await again.upsert("Customer", "DisplayName", customers(1, start=30), "single")
            return result.success

    assert asyncio.run(next_run())


def test_a_refused_refresh_token_stops_the_run_without_showing_the_token(books: Books, tmp_path: Path) -> None:
    token_file = tmp_path / "qbo-token"
    token_file.write_text("RT-not-a-token-Intuit-issued")

    async def run() -> None:
        async with QuickBooksSink(books.config(token_file), SinkContext("dead")) as sink:
            await sink.upsert("Customer", "DisplayName", customers(1), "single")

    with pytest.raises(AuthError) as refused:
        asyncio.run(run())
    assert "invalid_grant" in str(refused.value) and "RT-not-a-token" not in str(refused.value)
    assert "authorize the app again" in str(refused.value)


def test_a_refresh_due_while_every_call_slot_is_taken_does_not_wait_for_a_slot(books: Books, tmp_path: Path) -> None:
    """Calls in flight hold the pacer's slots while they ask for a token; the refresh goes to Intuit's OAuth
    server outside those slots (it once waited for one of them, forever)."""
    async def run() -> list[bool]:
        async with QuickBooksSink(books.config(tmp_path / "t", max_concurrency=1), SinkContext("slots")) as sink:
            await sink.upsert("Customer", "DisplayName", customers(1), "single")  # the first token, in a slot
            sink.client.auth._expires_at = 0.0  # due for a refresh before the next calls
            results = await sink.upsert("Customer", "DisplayName", customers(6, start=1), "single")
            assert sink.client.auth.refreshes == 2
            return [r.success for r in results]

    assert all(asyncio.run(asyncio.wait_for(run(), timeout=30)))
