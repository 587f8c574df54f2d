"""The wire format where the real clients do not look: OAuth error bodies, the gateway's 401, throttles,
minor versions, query edge cases, faults (``commit_then_reset`` with ``requestid``), batch and CDC limits."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.quickbooks.query import parse

from .conftest import Served


@pytest.fixture(scope="module")
def token(served: Served) -> str:
    return _tokens(served, served.new_refresh_token())["access_token"]


def _tokens(served: Served, refresh_token: str, secret: str | None = None,
            client_id: str | None = None) -> dict[str, Any]:
    app = f"{client_id or served.sandbox.client_id}:{secret or served.sandbox.client_secret}"
    basic = base64.b64encode(app.encode())
    response = served.raw("POST", "/oauth2/v1/tokens/bearer", None,
                          headers={"Authorization": f"Basic {basic.decode()}"},
                          data={"grant_type": "refresh_token", "refresh_token": refresh_token})
    return {"status": response.status_code, **response.json()}


def _api(served: Served, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
    params = {"minorversion": "75", **kwargs.pop("params", {})}
    return served.raw(method, f"/v3/company/{served.sandbox.realm_id}/{path}", token, params=params, **kwargs)


def test_discovery_document_names_every_endpoint(served: Served) -> None:
    for path in ("/.well-known/openid_configuration", "/.well-known/openid_sandbox_configuration/"):
        doc = served.raw("GET", path, None).json()
        assert doc["token_endpoint"] == f"{served.url}/oauth2/v1/tokens/bearer"
        assert doc["authorization_endpoint"] == f"{served.url}/connect/oauth2"
        assert {"revocation_endpoint", "userinfo_endpoint", "jwks_uri", "issuer"} <= set(doc)


def test_token_endpoint_errors(served: Served) -> None:
    assert _tokens(served, "RT1-unknown") == {"status": 400, "error": "invalid_grant",
                                              "error_description": "Incorrect or invalid refresh token"}
    assert _tokens(served, served.new_refresh_token(), secret="wrong") == {"status": 401, "error": "invalid_client"}
    answer = _tokens(served, served.new_refresh_token())
    assert answer["status"] == 200 and answer["token_type"] == "bearer" and answer["expires_in"] == 3600
    assert set(answer) == {"status", "token_type", "expires_in", "refresh_token", "x_refresh_token_expires_in",
                           "access_token"}


def test_revoked_refresh_token_and_its_access_tokens_stop_working(served: Served) -> None:
    refresh = served.new_refresh_token()
    access = _tokens(served, refresh)["access_token"]
    basic = base64.b64encode(f"{served.sandbox.client_id}:{served.sandbox.client_secret}".encode()).decode()
    revoked = served.raw("POST", "/v2/oauth2/tokens/revoke", None, headers={"Authorization": f"Basic {basic}"},
                         json={"token": refresh})
    assert revoked.status_code == 200
    assert _tokens(served, refresh)["error"] == "invalid_grant"
    assert _api(served, "GET", "customer/1", access).status_code == 401


def test_unknown_token_gets_the_gateway_401_body(served: Served) -> None:
    response = _api(served, "GET", "customer/1", "not-a-token")
    assert response.status_code == 401
    error = response.json()["fault"]["error"][0]
    assert error["code"] == "3200" and error["message"] == \
        "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    assert response.json()["fault"]["type"] == "AUTHENTICATION"


def test_another_realm_is_403(served: Served, token: str) -> None:
    response = served.raw("GET", "/v3/company/123/customer/1", token)
    assert response.status_code == 403 and response.json()["Fault"]["type"] == "AuthorizationFault"


def test_minor_versions_below_75_are_answered_as_75(served: Served, token: str) -> None:
    old = _api(served, "GET", "customer/1", token, params={"minorversion": "40"})
    new = _api(served, "GET", "customer/1", token)
    assert old.status_code == new.status_code == 200
    assert old.json()["Customer"] == new.json()["Customer"]
    assert served.admin("GET", "stats")["minor_versions"]["40"] >= 1


def test_query_by_get_projection_empty_and_count(served: Served, token: str) -> None:
    projected = _api(served, "GET", "query", token,
                     params={"query": "SELECT Id, DisplayName FROM Customer ORDERBY Id DESC MAXRESULTS 2"}).json()
    rows = projected["QueryResponse"]["Customer"]
    assert projected["QueryResponse"]["startPosition"] == 1 and projected["QueryResponse"]["maxResults"] == 2
    assert set(rows[0]) <= {"Id", "DisplayName", "domain", "sparse"} and int(rows[0]["Id"]) > int(rows[1]["Id"])
    empty = _api(served, "GET", "query", token,
                 params={"query": "select * from Invoice where DocNumber = 'no-such-doc'"}).json()
    assert empty["QueryResponse"] == {} and "time" in empty
    counted = _api(served, "POST", "query", token, data="SELECT COUNT(*) FROM Item",
                   headers={"Content-Type": "application/text"}).json()
    assert counted["QueryResponse"] == {"totalCount": sum(1 for i in served.admin("GET", "records/item")
                                                          if i["Active"])}


def test_query_language_rules() -> None:
    assert parse("select * from customer maxresults 5000").max_results == 1000
    assert parse("SELECT * FROM Invoice").max_results == 100
    query = parse("SELECT *, Sku FROM Item ORDER BY Name STARTPOSITION 3")
    assert query.entity == "Item" and query.fields is None and query.order == [("Name", False)] and query.start == 3
    query = parse("select * from Customer where DisplayName = 'O\\'Brien' and Balance >= 10.5 and Id in ('1','2')")
    assert [(c.field, c.op) for c in query.where] == [("DisplayName", "="), ("Balance", ">="), ("Id", "IN")]
    assert query.where[0].values == ["O'Brien"]


@pytest.mark.parametrize(("text", "code"), [
    ("select * from Customer where Id = '1' or Id = '2'", "4000"),
    ("select * from Nonsense", "4001"),
    ("select * from Customer where", "4000"),
    ("select * from Customer maxresults ten", "4000"),
])
def test_bad_queries_are_faults(served: Served, token: str, text: str, code: str) -> None:
    response = _api(served, "GET", "query", token, params={"query": text})
    assert response.status_code == 400
    assert response.json()["Fault"]["Error"][0]["code"] == code
    assert response.json()["Fault"]["type"] == "ValidationFault"


def test_sparse_update_lines_replace_all_lines(served: Served, token: str) -> None:
    unpaid = next(i for i in served.admin("GET", "records/invoice") if not i["LinkedTxn"])
    current = _api(served, "GET", f"invoice/{unpaid['Id']}", token).json()["Invoice"]
    line = {"DetailType": "SalesItemLineDetail", "Amount": 10,
            "SalesItemLineDetail": {"ItemRef": {"value": "2"}, "Qty": 2, "UnitPrice": 5}}
    updated = _api(served, "POST", "invoice", token, json={"Id": current["Id"], "SyncToken": current["SyncToken"],
                                                          "sparse": True, "Line": [line]}).json()["Invoice"]
    assert [ln["DetailType"] for ln in updated["Line"]] == ["SalesItemLineDetail", "SubTotalLineDetail"]
    assert updated["TotalAmt"] == 10.0 and updated["DocNumber"] == current["DocNumber"]


def test_voiding_a_payment_reopens_its_invoice(served: Served, token: str) -> None:
    payments = served.admin("GET", "records/payment")
    payment = next(p for p in payments if p["Line"])
    invoice_id = payment["Line"][0]["LinkedTxn"][0]["TxnId"]
    before = _api(served, "GET", f"invoice/{invoice_id}", token).json()["Invoice"]["Balance"]
    voided = _api(served, "POST", "payment", token, params={"operation": "update", "include": "void"},
                  json={"Id": payment["Id"], "SyncToken": payment["SyncToken"], "sparse": True})
    assert voided.status_code == 200 and voided.json()["Payment"]["TotalAmt"] == 0
    after = _api(served, "GET", f"invoice/{invoice_id}", token).json()["Invoice"]["Balance"]
    assert after == pytest.approx(before + payment["Line"][0]["Amount"])


def test_name_list_entities_cannot_be_deleted(served: Served, token: str) -> None:
    response = _api(served, "POST", "customer", token, params={"operation": "delete"},
                    json={"Id": "1", "SyncToken": "0"})
    assert response.status_code == 400 and response.json()["Fault"]["Error"][0]["code"] == "500"


def test_batch_over_30_items_is_refused(served: Served, token: str) -> None:
    items = [{"bId": str(n), "Query": "select * from Item maxresults 1"} for n in range(31)]
    response = _api(served, "POST", "batch", token, json={"BatchItemRequest": items})
    assert response.status_code == 400 and response.json()["Fault"]["type"] == "ValidationFault"


def test_cdc_looks_back_at_most_30_days(served: Served, token: str) -> None:
    response = _api(served, "GET", "cdc", token, params={"entities": "Customer", "changedSince": "2020-01-01"})
    assert response.status_code == 400


def test_commit_then_reset_commits_and_requestid_recovers_the_answer(served: Served, token: str) -> None:
    served.admin("POST", "faults", json={"rules": [{"kind": "commit_then_reset", "path": "customer",
                                                    "method": "POST", "count": 1}]})
    try:
        before = len(served.admin("GET", "records/customer"))
        request_id = str(uuid.uuid4())
        with pytest.raises(requests.ConnectionError):
            _api(served, "POST", "customer", token, params={"requestid": request_id},
                 json={"DisplayName": "Lost Answer Person"})
        assert len(served.admin("GET", "records/customer")) == before + 1  # committed
        retry = _api(served, "POST", "customer", token, params={"requestid": request_id},
                     json={"DisplayName": "Lost Answer Person"})
        assert retry.status_code == 200 and retry.json()["Customer"]["DisplayName"] == "Lost Answer Person"
        assert len(served.admin("GET", "records/customer")) == before + 1  # nothing more
        assert served.admin("GET", "faults")["injected"] == {"commit_then_reset": 1}
    finally:
        served.admin("DELETE", "faults")


def test_status_faults_answer_as_intuit(served: Served, token: str) -> None:
    served.admin("POST", "faults", json={"rules": [{"kind": "503", "count": 1}, {"kind": "429", "count": 1}]})
    try:
        unavailable = _api(served, "GET", "customer/1", token)
        assert unavailable.status_code == 503 and unavailable.json()["Fault"]["type"] == "SystemFault"
        throttled = _api(served, "GET", "customer/1", token)
        assert throttled.status_code == 429 and throttled.json()["Fault"]["Error"][0]["code"] == "3001"
        assert _api(served, "GET", "customer/1", token).status_code == 200
    finally:
        served.admin("DELETE", "faults")


@pytest.fixture
def throttled_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state_dir = tmp_path_factory.mktemp("quickbooks-limits")
    sandbox = QuickBooksSandbox(state_dir, seed=2, customers=5, products=3, orders=5)
    running = sandbox.start()
    try:
        yield Served(sandbox, running)
    finally:
        running.stop()


def test_more_than_10_calls_a_second_or_500_a_minute_are_429(throttled_sandbox: Served) -> None:
    served = throttled_sandbox
    token = _tokens(served, served.sandbox.refresh_token)["access_token"]
    statuses = [_api(served, "GET", "customer/1", token).status_code for _ in range(12)]
    assert statuses[:10] == [200] * 10 and 429 in statuses[10:]
    body = _api(served, "GET", "customer/1", token).json()
    assert body["Fault"]["Error"][0]["Message"] == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    served.admin("PATCH", "limits", json={"per_second": 0, "per_minute": 3})
    statuses = [_api(served, "GET", "customer/1", token).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert served.admin("GET", "limits")["throttled"] >= 2


def _batch(served: Served, token: str) -> requests.Response:
    body = {"BatchItemRequest": [{"bId": "1", "Query": "SELECT * FROM Customer MAXRESULTS 1"}]}
    return _api(served, "POST", "batch", token, json=body)


def test_batch_calls_are_40_a_minute_per_app(throttled_sandbox: Served) -> None:
    served = throttled_sandbox
    served.admin("PATCH", "limits", json={"per_second": 0})  # only the batch limits in play
    token = _tokens(served, served.sandbox.refresh_token)["access_token"]
    statuses = [_batch(served, token).status_code for _ in range(41)]
    assert statuses == [200] * 40 + [429]
    throttled = _batch(served, token)
    assert throttled.json()["Fault"]["Error"][0]["code"] == "3001"
    assert throttled.json()["Fault"]["type"] == "SERVICE"
    assert _api(served, "GET", "customer/1", token).status_code == 200  # other calls still pass
    limits = served.admin("GET", "limits")
    assert limits["batch_per_app_minute"] == 40 and limits["batch_per_minute"] == 120
    assert limits["batch_throttled"] == 2


def test_batch_calls_of_every_app_count_against_the_company(throttled_sandbox: Served) -> None:
    served = throttled_sandbox
    served.admin("PATCH", "limits", json={"per_second": 0, "batch_per_app_minute": 2, "batch_per_minute": 3})
    other = served.admin("POST", "oauth/apps")
    first = _tokens(served, served.sandbox.refresh_token)["access_token"]
    second = _tokens(served, served.new_refresh_token(), secret=other["client_secret"],
                     client_id=other["client_id"])["access_token"]
    assert [_batch(served, first).status_code for _ in range(3)] == [200, 200, 429]  # the app's 2
    assert [_batch(served, second).status_code for _ in range(2)] == [200, 429]  # the company's 3
    assert _tokens(served, served.new_refresh_token(), secret="wrong", client_id=other["client_id"])["status"] == 401


def test_one_requestid_sent_by_several_callers_at_once_writes_once(served: Served, token: str) -> None:
    request_id, answers = str(uuid.uuid4()), []

    def slow_body() -> Iterator[bytes]:  # the body arrives in two parts: the calls overlap on the server
        yield b'{"DisplayName": '
        time.sleep(0.2)
        yield b'"Concurrent Retry Person"}'

    def post() -> None:
        answers.append(_api(served, "POST", "customer", token, params={"requestid": request_id},
                            data=slow_body(), headers={"Content-Type": "application/json"}).json())

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({a["Customer"]["Id"] for a in answers}) == 1 and len(answers) == 6
    stored = [c for c in served.admin("GET", "records/customer") if c["DisplayName"] == "Concurrent Retry Person"]
    assert len(stored) == 1


def test_credit_memo_lowers_the_balance_and_a_refund_needs_its_account(served: Served, token: str) -> None:
    customer = _api(served, "POST", "customer", token, json={"DisplayName": "Credit Person"}).json()["Customer"]
    line = {"DetailType": "SalesItemLineDetail", "Amount": 40,
            "SalesItemLineDetail": {"ItemRef": {"value": "2"}, "Qty": 1, "UnitPrice": 40}}
    ref = {"value": customer["Id"]}
    memo = _api(served, "POST", "creditmemo", token, json={"CustomerRef": ref, "Line": [line]}).json()
    assert memo["CreditMemo"]["TotalAmt"] == 40.0 and memo["CreditMemo"]["RemainingCredit"] == 40.0
    assert _api(served, "GET", f"customer/{customer['Id']}", token).json()["Customer"]["Balance"] == -40.0
    refused = _api(served, "POST", "refundreceipt", token, json={"CustomerRef": ref, "Line": [line]})
    assert refused.status_code == 400 and refused.json()["Fault"]["Error"][0]["code"] == "2020"
    checking = next(a for a in served.admin("GET", "records/account") if a["Name"] == "Checking")
    refund = _api(served, "POST", "refundreceipt", token,
                  json={"CustomerRef": ref, "Line": [line], "DepositToAccountRef": {"value": checking["Id"]}})
    assert refund.status_code == 200
    assert refund.json()["RefundReceipt"]["DepositToAccountRef"] == {"value": checking["Id"], "name": "Checking"}
