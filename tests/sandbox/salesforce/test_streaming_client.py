"""A real Salesforce Streaming API client (aiosfstream-ng on aiocometd-ng) subscribed to the sandbox's
Change Data Capture, with writes made through simple-salesforce.

aiosfstream 0.5.0 / aiocometd 0.4.5 (the 2019 originals) cannot be used: aiocometd's long-polling
transport calls `asyncio.Semaphore(2, loop=...)`, a TypeError since Python 3.10, before any request.
aiosfstream-ng is the maintained fork with the same API (import name aiosfstream_ng).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosfstream_ng import Client, ReplayOption
from aiosfstream_ng.exceptions import AuthenticationError
from simple_salesforce import Salesforce

from .conftest import Org, start_org
from .streaming_auth import SandboxAuthenticator

CHANNEL = "/data/ChangeEvents"


@pytest.fixture(scope="module")
def stream_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    yield from start_org(tmp_path_factory.mktemp("stream"), streaming_timeout_seconds=1.0)


def tls(org: Org) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(org.running.ca_file))


def client_for(org: Org, replay: Any, refresh_token: str | None = None) -> tuple[Client, SandboxAuthenticator]:
    context = tls(org)
    auth = SandboxAuthenticator(org.url, context, org.sandbox.login_credentials(), refresh_token)
    client = Client(auth, replay=replay, connection_timeout=5)
    client.ssl = context  # aiocometd-ng passes it to every long-polling request
    return client, auth


async def receive(client: Client, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(client.receive(), timeout) for _ in range(count)]


def names(messages: list[dict[str, Any]]) -> list[str]:
    return [m["data"]["payload"].get("Name", m["data"]["payload"]["ChangeEventHeader"]["changeType"])
            for m in messages]


async def test_subscribe_receive_in_order_then_resume_after_a_replay_id(stream_org: Org) -> None:
    stream_org.admin("reset", "POST")
    sf: Salesforce = stream_org.client()
    replay_storage: dict[str, Any] = {}
    client, _ = client_for(stream_org, replay_storage)
    await client.open()
    assert client.url == f"{stream_org.url}/cometd/45.0"
    await client.subscribe(CHANNEL)

    def first_changes() -> str:
        account_id = sf.Account.create({"Name": "One"})["id"]
        sf.Account.update(account_id, {"Name": "Two"})
        sf.Contact.create({"LastName": "Three", "AccountId": account_id})
        return account_id

    account_id = await asyncio.to_thread(first_changes)
    first = await receive(client, 3)
    assert names(first) == ["One", "Two", {"LastName": "Three"}]
    assert [m["data"]["payload"]["ChangeEventHeader"]["changeType"] for m in first] == ["CREATE", "UPDATE", "CREATE"]
    ids = [m["data"]["event"]["replayId"] for m in first]
    assert ids == sorted(ids)
    await client.close()
    assert replay_storage[CHANNEL].replay_id == ids[-1]  # the client kept the last replay id it saw

    # changes while disconnected; reconnecting with the stored replay id gets exactly those
    await asyncio.to_thread(lambda: (sf.Account.update(account_id, {"Name": "Four"}), sf.Account.delete(account_id)))
    resumed, _ = client_for(stream_org, replay_storage)
    await resumed.open()
    await resumed.subscribe(CHANNEL)
    missed = await receive(resumed, 3)
    assert names(missed) == ["Four", "DELETE", "DELETE"]
    # the account's delete cascades to its contact: one transaction, two events
    headers = [m["data"]["payload"]["ChangeEventHeader"] for m in missed[1:]]
    assert [h["entityName"] for h in headers] == ["Account", "Contact"]
    assert headers[0]["transactionKey"] == headers[1]["transactionKey"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(resumed.receive(), 2.5)  # nothing else: no duplicates, nothing skipped
    await resumed.close()

    # -2 replays everything retained, in order
    everything, _ = client_for(stream_org, ReplayOption.ALL_EVENTS)
    await everything.open()
    await everything.subscribe(CHANNEL)
    assert names(await receive(everything, 6)) == ["One", "Two", {"LastName": "Three"}, "Four", "DELETE", "DELETE"]
    await everything.close()


def write_contact_then_account(sf: Salesforce) -> None:
    sf.Contact.create({"LastName": "other channel"})
    sf.Account.create({"Name": "after expiry"})


async def test_per_object_channel_and_reauthentication_after_session_expiry(tmp_path: Path) -> None:
    for org in start_org(tmp_path, session_ttl_seconds=2.0, streaming_timeout_seconds=0.5):
        client, auth = client_for(org, ReplayOption.NEW_EVENTS)
        await client.open()
        await client.subscribe("/data/AccountChangeEvent")
        assert auth.calls == 1
        await asyncio.sleep(2.5)  # the streaming session expires; the next connect is 401::Authentication invalid
        await asyncio.to_thread(write_contact_then_account, org.client())
        [message] = await receive(client, 1)
        assert message["channel"] == "/data/AccountChangeEvent"
        assert message["data"]["payload"]["Name"] == "after expiry"
        assert auth.calls >= 2  # the client re-authenticated with the refresh token and carried on
        await client.close()


async def test_revoked_refresh_token_cannot_open(stream_org: Org) -> None:
    creds = stream_org.sandbox.login_credentials()
    token = stream_org.session().post(f"{stream_org.url}/services/oauth2/token", data={
        "grant_type": "password", "client_id": creds["client_id"], "client_secret": creds["client_secret"],
        "username": creds["username"], "password": creds["password"] + creds["security_token"]}).json()
    assert "refresh_token" not in token  # the username-password flow issues none
    refresh = stream_org.sandbox.state.oauth.issue_refresh_token(stream_org.sandbox.state.org.user_id)
    revoked = stream_org.session().post(f"{stream_org.url}/services/oauth2/revoke", data={"token": refresh})
    assert revoked.status_code == 200
    client, _ = client_for(stream_org, ReplayOption.NEW_EVENTS, refresh_token=refresh)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as err:
        await client.open()
    assert err.value.args[1] == {"error": "invalid_grant", "error_description": "expired access/refresh token"}
    assert time.monotonic() - started < 10
