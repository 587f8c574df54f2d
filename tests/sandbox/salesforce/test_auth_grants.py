"""Auth grants through simple-salesforce's own login code: SOAP login (username, password, security token),
the OAuth username-password, JWT and refresh-token grants, revocation, and session expiry with re-login.

simple-salesforce always posts logins to https://<domain>.salesforce.com; the only change made to point it
at the sandbox is a transport adapter on its requests session that sends that host to the sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceExpiredSession

from .conftest import Org, start_org

LOGIN_HOST = "https://login.salesforce.com"


class ToSandbox(HTTPAdapter):
    """Send requests for login.salesforce.com to the sandbox (TLS checked against the sandbox CA)."""

    def __init__(self, sandbox_url: str) -> None:
        super().__init__()
        self.sandbox_url = sandbox_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        assert request.url is not None
        request.url = self.sandbox_url + request.url[len(LOGIN_HOST):]
        return super().send(request, **kwargs)


def login_session(org: Org) -> requests.Session:
    s = org.session()
    s.mount(LOGIN_HOST, ToSandbox(org.url))
    return s


def soap_login(org: Org, **overrides: Any) -> Salesforce:
    creds = {**org.sandbox.login_credentials(), **overrides}
    return Salesforce(username=creds["username"], password=creds["password"], security_token=creds["security_token"],
                      session=login_session(org), version="62.0")


def token(org: Org, **form: str) -> requests.Response:
    return org.session().post(f"{org.url}/services/oauth2/token", data=form)


def test_soap_login_with_security_token(org: Org) -> None:
    sf = soap_login(org)
    assert sf.sf_instance == org.url.removeprefix("https://")
    assert sf.query("SELECT Username FROM User")["records"][0]["Username"] == "integration@ferry.sandbox"


@pytest.mark.parametrize("overrides", [{"password": "wrong"}, {"security_token": ""},
                                       {"username": "nobody@example.com"}])
def test_soap_login_failure_is_invalid_login(org: Org, overrides: dict[str, str]) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        soap_login(org, **overrides)
    assert err.value.code == "INVALID_LOGIN"
    assert err.value.auth_message == "Invalid username, password, security token; or user locked out."


def test_soap_fault_envelope(org: Org) -> None:
    response = org.session().post(f"{org.url}/services/Soap/u/62.0", headers={
        "Content-Type": "text/xml", "SOAPAction": "login"}, data=(
        '<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>'
        '<n1:login xmlns:n1="urn:partner.soap.sforce.com"><n1:username>x</n1:username>'
        '<n1:password>y</n1:password></n1:login></env:Body></env:Envelope>'))
    assert response.status_code == 500
    assert "<faultcode>sf:INVALID_LOGIN</faultcode>" in response.text
    assert "<faultstring>INVALID_LOGIN: Invalid username, password, security token; or user locked out." \
           "</faultstring>" in response.text


def test_username_password_grant(org: Org) -> None:
    creds = org.sandbox.login_credentials()
    sf = Salesforce(username=creds["username"], password=creds["password"] + creds["security_token"],
                    consumer_key=creds["client_id"], consumer_secret=creds["client_secret"],
                    session=login_session(org), version="62.0")
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] >= 0
    base = {"grant_type": "password", "client_id": creds["client_id"], "client_secret": creds["client_secret"],
            "username": creds["username"]}
    ok = token(org, **base, password=creds["password"] + creds["security_token"]).json()
    assert {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"} <= set(ok)
    assert "refresh_token" not in ok
    for password in (creds["password"], "wrong" + creds["security_token"]):
        bad = token(org, **base, password=password)
        assert bad.status_code == 400
        assert bad.json() == {"error": "invalid_grant", "error_description": "authentication failure"}
    wrong_secret = token(org, **{**base, "client_secret": "nope"}, password=creds["password"])
    assert wrong_secret.json() == {"error": "invalid_client", "error_description": "invalid client credentials"}
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(username=creds["username"], password="wrong", consumer_key=creds["client_id"],
                   consumer_secret=creds["client_secret"], session=login_session(org))
    assert err.value.code == "invalid_grant"


def test_refresh_token_grant_and_revocation(org: Org) -> None:
    creds = org.sandbox.login_credentials()
    form = {"grant_type": "refresh_token", "client_id": creds["client_id"], "refresh_token": creds["refresh_token"]}
    renewed = token(org, **form).json()
    assert renewed["scope"] == "refresh_token api id" and "refresh_token" not in renewed
    sf = Salesforce(instance_url=renewed["instance_url"], session_id=renewed["access_token"], version="62.0",
                    session=org.session())
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] >= 1
    spare = org.sandbox.state.oauth.issue_refresh_token(org.sandbox.state.org.user_id)
    session = token(org, **{**form, "refresh_token": spare}).json()["access_token"]
    assert org.session().post(f"{org.url}/services/oauth2/revoke", data={"token": spare}).status_code == 200
    revoked = token(org, **{**form, "refresh_token": spare})
    assert revoked.status_code == 400
    assert revoked.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}
    with pytest.raises(SalesforceExpiredSession):  # revoking the refresh token ended its sessions too
        Salesforce(instance_url=org.url, session_id=session, version="62.0", session=org.session()).describe()
    unknown = token(org, **{**form, "refresh_token": "5Aep861notatoken"})
    assert unknown.json()["error_description"] == "expired access/refresh token"
    assert org.session().post(f"{org.url}/services/oauth2/revoke", data={"token": "nope"}).status_code == 400


def test_jwt_login_through_simple_salesforce(org: Org) -> None:
    creds = org.creds
    sf = Salesforce(username=creds["username"], consumer_key=creds["client_id"],
                    privatekey_file=creds["private_key_file"], session=login_session(org), version="62.0")
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] >= 0
    with pytest.raises(SalesforceAuthenticationFailed) as err, pytest.warns(UserWarning):
        Salesforce(username="someone@else.example", consumer_key=creds["client_id"],
                   privatekey_file=creds["private_key_file"], session=login_session(org))
    assert (err.value.code, err.value.auth_message) == ("invalid_grant", "user hasn't approved this consumer")


@pytest.fixture
def expiring_org(tmp_path: Path) -> Iterator[Org]:
    yield from start_org(tmp_path, session_ttl_seconds=1.0)


def test_expired_session_relogs_in_with_a_login_but_not_with_a_bare_session_id(expiring_org: Org) -> None:
    logged_in = soap_login(expiring_org)
    bare = Salesforce(instance_url=expiring_org.url, session_id=logged_in.session_id, version="62.0",
                      session=expiring_org.session())
    first_session = logged_in.session_id
    time.sleep(1.3)
    with pytest.raises(SalesforceExpiredSession) as err:
        bare.query("SELECT COUNT() FROM Account")
    assert err.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    # simple-salesforce sees INVALID_SESSION_ID, logs in again over SOAP and retries the call
    assert logged_in.query("SELECT COUNT() FROM Account")["totalSize"] == 0
    assert logged_in.session_id != first_session


def test_logins_and_revocations_survive_a_restart_with_persist(tmp_path: Path) -> None:
    for org in start_org(tmp_path, persist=True):
        login = org.admin("login")
        assert login == org.sandbox.login_credentials() and len(login["security_token"]) == 24
        spare = org.sandbox.state.oauth.issue_refresh_token(org.sandbox.state.org.user_id)
        org.sandbox.flush(force=True)
        assert org.session().post(f"{org.url}/services/oauth2/revoke", data={"token": spare}).status_code == 200
    for org in start_org(tmp_path, persist=True):
        assert org.sandbox.login_credentials() == login
        assert soap_login(org).query("SELECT COUNT() FROM User")["totalSize"] == 1
        form = {"grant_type": "refresh_token", "client_id": login["client_id"]}
        assert token(org, **form, refresh_token=login["refresh_token"]).status_code == 200
        assert token(org, **form, refresh_token=spare).json()["error_description"] == "expired access/refresh token"
