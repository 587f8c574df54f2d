"""OAuth flows against the sandbox's token endpoint: what each refusal tells the user to fix.

The refresh-token and username-password grants are written to Salesforce's documented wire format
(``grant_type=refresh_token`` / ``grant_type=password`` on /services/oauth2/token) and run against the
sandbox's grants, with the integration user's credentials from ``SalesforceSandbox.login_credentials``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from ferry.connectors.salesforce import SalesforceSink
from ferry.connectors.salesforce.client import SalesforceClient
from ferry.errors import AuthError

from .conftest import Org


async def _refusal(org: Org, **overrides: Any) -> AuthError:
    async with SalesforceSink(org.config("jwt", **overrides)) as sink:
        with pytest.raises(AuthError) as info:
            await sink.describe_object("Contact")
    return info.value


async def test_unknown_or_unapproved_user_says_pre_authorize(org: Org) -> None:
    err = await _refusal(org, username="nobody@example.com")
    assert err.code == "invalid_grant" and "pre-authorize" in str(err)


async def test_wrong_key_says_the_key_does_not_match_the_certificate(org: Org, tmp_path: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    (tmp_path / "other.pem").write_bytes(pem)
    err = await _refusal(org, private_key_file=str(tmp_path / "other.pem"))
    assert "does not match the certificate" in str(err) and "PRIVATE KEY" not in str(err)


async def test_clock_skew_says_check_the_clock(org: Org) -> None:
    client = SalesforceClient(org.config("jwt"))
    client.auth._clock = lambda: time.time() - 3600  # this machine an hour behind: the JWT arrives expired
    try:
        with pytest.raises(AuthError, match="clock"):
            await client.json("GET", client.data_path("/limits"), label="limits")
    finally:
        await client.aclose()


async def test_refresh_token_flow(org: Org) -> None:
    creds = org.sandbox.login_credentials()
    assert creds["refresh_token"]
    cfg = org.config("refresh_token", refresh_token=creds["refresh_token"])
    async with SalesforceSink(cfg) as sink:
        await sink.describe_object("Contact")
        assert sink.logins == 1
    bad = org.config("refresh_token", refresh_token="not-a-refresh-token")
    async with SalesforceSink(bad) as sink:
        with pytest.raises(AuthError) as info:
            await sink.describe_object("Contact")
    assert "not-a-refresh-token" not in str(info.value)


async def test_password_flow_is_warned_as_development_only(org: Org) -> None:
    cfg = org.config("password", username=org.creds["username"], password="DEV-PASSWORD-VALUE")
    with capture_logs() as events:
        async with SalesforceSink(cfg) as sink:
            with pytest.raises(AuthError) as info:  # a wrong password: refused, and never echoed
                await sink.describe_object("Contact")
            assert "DEV-PASSWORD-VALUE" not in str(info.value)
    warned = [e for e in events if e["event"] == "salesforce.password_flow"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert all("DEV-PASSWORD-VALUE" not in str(e) for e in events)


async def test_password_flow(org: Org) -> None:
    creds = org.sandbox.login_credentials()
    # The org's OAuth password grant takes the password with the user's security token appended.
    cfg = org.config("password", username=creds["username"], password=creds["password"] + creds["security_token"])
    async with SalesforceSink(cfg) as sink:
        await sink.describe_object("Contact")
        assert sink.logins == 1
