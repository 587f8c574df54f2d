"""OAuth JWT errors, session expiry, the daily API budget, the admin routes."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceRefusedRequest

from .conftest import Org, start_org


def test_credentials_and_key_file(org: Org) -> None:
    creds = org.creds
    assert set(creds) == {"url", "login_url", "client_id", "client_secret", "username", "private_key_file",
                          "api_version"}
    assert creds["username"] == "integration@ferry.sandbox" and creds["api_version"] == "62.0"
    assert stat.S_IMODE(os.stat(creds["private_key_file"]).st_mode) == 0o600


def test_token_response_shape(org: Org) -> None:
    body = org.token().json()
    assert body["instance_url"] == org.url and body["token_type"] == "Bearer"
    assert {"access_token", "id", "issued_at", "signature", "scope"} <= set(body)
    assert len(body["issued_at"]) == 13  # epoch milliseconds


@pytest.mark.parametrize(("claims", "error"), [
    ({"aud": "https://evil.example"}, ("invalid_grant", "audience is invalid")),
    ({"exp": int(time.time()) - 10}, ("invalid_grant", "expired authorization code")),
    ({"iss": "someone-else"}, ("invalid_client_id", "client identifier invalid")),
    ({"sub": "nobody@example.com"}, ("invalid_grant", "user hasn't approved this consumer")),
    # exp is computed when the module is collected, minutes before this runs in a full suite.
    ({"aud": "https://login.salesforce.com", "exp": str(int(time.time()) + 3600)}, None),
])
def test_jwt_checks(org: Org, claims: dict, error: tuple[str, str] | None) -> None:
    response = org.token(**claims)
    if error is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert response.json() == {"error": error[0], "error_description": error[1]}


def test_bad_signature_is_invalid_assertion(org: Org) -> None:
    forged = org.assertion()[:-4] + "AAAA"
    response = org.session().post(f"{org.url}/services/oauth2/token",
                                  data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                        "assertion": forged})
    assert response.json() == {"error": "invalid_grant", "error_description": "invalid assertion"}


def test_client_credentials_flow(org: Org) -> None:
    s = org.session()
    ok = s.post(f"{org.url}/services/oauth2/token", data={"grant_type": "client_credentials"},
                auth=(org.creds["client_id"], org.creds["client_secret"]))
    assert ok.status_code == 200
    bad = s.post(f"{org.url}/services/oauth2/token", data={"grant_type": "client_credentials"},
                 auth=(org.creds["client_id"], "wrong"))
    assert bad.json()["error"] == "invalid_client"


def test_missing_token_is_401(org: Org) -> None:
    r = org.session().get(f"{org.url}/services/data/v62.0/sobjects")
    assert r.status_code == 401
    assert r.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


@pytest.fixture
def short_org(tmp_path: Path) -> Iterator[Org]:
    yield from start_org(tmp_path, session_ttl_seconds=0.5, daily_api_limit=5)


def test_session_expiry(short_org: Org) -> None:
    sf = short_org.client()
    sf.describe()
    time.sleep(0.6)
    with pytest.raises(SalesforceExpiredSession) as exc:
        sf.describe()
    assert exc.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


def test_daily_limit_and_header(short_org: Org) -> None:
    accounts = short_org.client().Account  # SFType keeps the parsed Sforce-Limit-Info of its last call
    for n in range(1, 6):
        accounts.create({"Name": f"a{n}"})
        assert accounts.api_usage["api-usage"].used == n and accounts.api_usage["api-usage"].total == 5
    with pytest.raises(SalesforceRefusedRequest) as exc:
        accounts.create({"Name": "over"})
    assert exc.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    stats = short_org.admin("stats")
    assert stats["daily_api_requests"] == {"used": 5, "max": 5} and stats["records"]["Account"] == 5


def test_limits_resource_and_stats(org: Org, sf: Salesforce) -> None:
    limits = sf.limits()
    assert limits["DailyApiRequests"]["Max"] == 1_000_000
    assert limits["DailyApiRequests"]["Remaining"] == 1_000_000 - sf.api_usage["api-usage"].used
    sf.Account.create({"Name": "x"})
    stats = org.admin("stats")
    assert stats["by_endpoint"]["POST /services/data/vXX.X/sobjects/{sobject}"] == 1
    assert stats["by_endpoint"]["GET /services/data/vXX.X/limits"] == 1
    assert stats["api_calls"] == 2  # the token call and the admin routes are not counted
    (record,) = org.admin("records/Account")
    assert record["Name"] == "x" and record["Id"].startswith("001")


def test_injected_faults(org: Org, sf: Salesforce) -> None:
    s = org.session()
    s.post(f"{org.url}/__sandbox/faults", json={"rules": [{"status": 503, "path": "sobjects", "count": 1}]})
    with pytest.raises(Exception) as exc:
        sf.Account.create({"Name": "x"})
    assert "503" in str(exc.value)
    assert sf.Account.create({"Name": "x"})["success"]
    s.post(f"{org.url}/__sandbox/faults", json={"lock_row_rate": 1.0})
    out = sf.restful("composite/sobjects", method="POST",
                     json={"records": [{"attributes": {"type": "Account"}, "Name": "y"}]})
    assert out[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    s.delete(f"{org.url}/__sandbox/faults")
