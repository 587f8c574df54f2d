"""Fidelity: python-quickbooks and intuit-oauth work against the sandbox with only the URLs and the CA changed."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import AuthorizationException, QuickbooksException, ValidationException
from quickbooks.objects.account import Account
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item
from quickbooks.objects.payment import Payment, PaymentLine
from quickbooks.objects.salesreceipt import SalesReceipt

from .conftest import Served

pytestmark = pytest.mark.usefixtures("trust_sandbox_ca")


def _customer(name: str) -> Customer:
    customer = Customer()
    customer.DisplayName = name
    customer.GivenName = name.split()[0]
    return customer


def _invoice(customer: Customer, item: Item, qty: int, price: float, doc: str | None = None) -> Invoice:
    line = SalesItemLine()
    line.Amount = round(qty * price, 2)
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = item.to_ref()
    line.SalesItemLineDetail.Qty = qty
    line.SalesItemLineDetail.UnitPrice = price
    invoice = Invoice()
    invoice.CustomerRef = customer.to_ref()
    invoice.Line = [line]
    invoice.DocNumber = doc
    return invoice


def _count(served: Served, entity: str) -> int:
    return len(served.admin("GET", f"records/{entity}"))


def test_authorization_code_flow_then_api_calls(served: Served) -> None:
    auth = served.auth_client()
    url = auth.get_authorization_url([Scopes.ACCOUNTING])
    assert url.startswith(f"{served.url}/connect/oauth2?")
    redirect = requests.get(url, allow_redirects=False, timeout=10)  # the user consents
    assert redirect.status_code == 302
    back = parse_qs(urlparse(redirect.headers["Location"]).query)
    assert back["state"] == [auth.state_token] and back["realmId"] == [served.sandbox.realm_id]
    auth.get_bearer_token(back["code"][0], realm_id=back["realmId"][0])
    assert auth.access_token and auth.refresh_token and auth.expires_in == 3600
    assert auth.x_refresh_token_expires_in == 8726400
    with pytest.raises(AuthClientError) as reused:  # a code is good for one exchange
        auth.get_bearer_token(back["code"][0])
    assert reused.value.status_code == 400 and reused.value.response.json() == {"error": "invalid_grant"}
    qb = served.client(auth)
    assert len(Customer.filter(max_results=3, qb=qb)) == 3


def test_create_read_query_and_sparse_update(served: Served, qb: QuickBooks) -> None:
    created = _customer("Ada Lovelace Client").save(qb=qb)
    assert created.Id and created.SyncToken == "0" and created.Active is True
    read = Customer.get(created.Id, qb=qb)
    assert read.DisplayName == "Ada Lovelace Client" and read.FullyQualifiedName == "Ada Lovelace Client"
    found = Customer.filter(DisplayName="ada lovelace client", qb=qb)  # string comparisons ignore case
    assert [c.Id for c in found] == [created.Id]
    assert [c.Id for c in Customer.where("DisplayName LIKE 'Ada Love%'", qb=qb)] == [created.Id]
    read.Notes = "prefers email"
    updated = read.save(qb=qb)
    assert updated.SyncToken == "1" and updated.Notes == "prefers email"
    body = json.dumps({"Id": created.Id, "SyncToken": "1", "sparse": True, "Notes": "x"})
    sparse = qb.update_object("Customer", body)["Customer"]
    assert sparse["SyncToken"] == "2" and sparse["Notes"] == "x" and sparse["GivenName"] == "Ada"


def test_stale_sync_token_is_5010(served: Served, qb: QuickBooks) -> None:
    created = _customer("Stale Token Person").save(qb=qb)
    first, second = Customer.get(created.Id, qb=qb), Customer.get(created.Id, qb=qb)
    first.Notes = "first writer"
    first.save(qb=qb)
    second.Notes = "second writer"
    with pytest.raises(QuickbooksException) as stale:
        second.save(qb=qb)
    assert stale.value.error_code == 5010 and stale.value.message == "Stale Object Error"
    assert Customer.get(created.Id, qb=qb).Notes == "first writer"


def test_duplicate_display_name_is_6240_even_for_another_case(qb: QuickBooks) -> None:
    _customer("Unique Name Holder").save(qb=qb)
    with pytest.raises(QuickbooksException) as duplicate:
        _customer("UNIQUE name holder").save(qb=qb)
    assert duplicate.value.error_code == 6240 and duplicate.value.message == "Duplicate Name Exists Error"


def test_item_needs_an_income_account(qb: QuickBooks) -> None:
    item = Item()
    item.Name = "Gift Wrap"
    item.Type = "Service"
    with pytest.raises(QuickbooksException) as missing:
        item.save(qb=qb)
    assert missing.value.error_code == 6000 and "income account" in missing.value.detail
    income = Account.filter(Name="Sales of Product Income", qb=qb)[0]
    item.IncomeAccountRef = income.to_ref()
    saved = item.save(qb=qb)
    assert saved.IncomeAccountRef.value == income.Id and saved.IncomeAccountRef.name == "Sales of Product Income"


def test_invoice_totals_payment_and_balance(served: Served, qb: QuickBooks) -> None:
    customer = _customer("Invoice Payer").save(qb=qb)
    item = Item.filter(Name="Hours", qb=qb)[0]
    invoice = _invoice(customer, item, 3, 85.0, doc="INV-TEST-1").save(qb=qb)
    assert invoice.TotalAmt == 255.0 and invoice.Balance == 255.0 and invoice.DocNumber == "INV-TEST-1"
    payment = Payment()
    payment.CustomerRef = customer.to_ref()
    payment.TotalAmt = 100
    line = PaymentLine()
    line.Amount = 100
    line.LinkedTxn = [invoice.to_linked_txn()]
    payment.Line = [line]
    payment.save(qb=qb)
    assert Invoice.get(invoice.Id, qb=qb).Balance == 155.0
    assert Customer.get(customer.Id, qb=qb).Balance == 155.0


def test_line_amount_must_equal_qty_times_unit_price(qb: QuickBooks) -> None:
    customer = _customer("Arithmetic Check").save(qb=qb)
    item = Item.filter(Name="Hours", qb=qb)[0]
    invoice = _invoice(customer, item, 3, 85.0)
    invoice.Line[0].Amount = 250
    with pytest.raises(QuickbooksException) as wrong:
        invoice.save(qb=qb)
    assert wrong.value.error_code == 6070


def test_duplicate_and_too_long_doc_numbers(qb: QuickBooks) -> None:
    customer = _customer("Doc Number Tester").save(qb=qb)
    item = Item.filter(Name="Hours", qb=qb)[0]
    _invoice(customer, item, 1, 85.0, doc="DUP-1").save(qb=qb)
    with pytest.raises(QuickbooksException) as duplicate:
        _invoice(customer, item, 1, 85.0, doc="DUP-1").save(qb=qb)
    assert duplicate.value.error_code == 6140
    with pytest.raises(ValidationException) as too_long:
        _invoice(customer, item, 1, 85.0, doc="X" * 22).save(qb=qb)
    assert too_long.value.error_code == 2050 and "Max:21" in too_long.value.detail


def test_delete_and_void_transactions_and_inactive_customers(served: Served, qb: QuickBooks) -> None:
    customer = _customer("Soon Inactive").save(qb=qb)
    item = Item.filter(Name="Hours", qb=qb)[0]
    doomed = _invoice(customer, item, 1, 85.0).save(qb=qb)
    answer = doomed.delete(qb=qb)
    assert answer["Invoice"] == {"Id": doomed.Id, "status": "Deleted", "domain": "QBO"}
    with pytest.raises(QuickbooksException) as gone:
        Invoice.get(doomed.Id, qb=qb)
    assert gone.value.error_code == 610
    voided = _invoice(customer, item, 2, 85.0).save(qb=qb)
    voided.void(qb=qb)
    assert Invoice.get(voided.Id, qb=qb).TotalAmt == 0
    customer = Customer.get(customer.Id, qb=qb)
    customer.Active = False
    customer.save(qb=qb)
    assert Customer.filter(DisplayName="Soon Inactive", qb=qb) == []
    assert len(Customer.where("DisplayName = 'Soon Inactive' AND Active IN (true, false)", qb=qb)) == 1
    with pytest.raises(QuickbooksException) as inactive:  # an inactive customer cannot be invoiced
        _invoice(customer, item, 1, 85.0).save(qb=qb)
    assert inactive.value.error_code == 610


def test_query_paging_count_and_last_updated_filter(served: Served, qb: QuickBooks) -> None:
    total = Customer.count(qb=qb)
    assert total == sum(1 for c in served.admin("GET", "records/customer") if c["Active"])
    pages, start = [], 1
    while batch := Customer.where("", order_by="Id", start_position=start, max_results=25, qb=qb):
        pages.append(batch)
        start += 25
    ids = [c.Id for page in pages for c in page]
    assert len(ids) == total == len(set(ids)) and [int(i) for i in ids] == sorted(int(i) for i in ids)
    stored = sorted(served.admin("GET", "records/invoice"), key=lambda r: r["MetaData"]["LastUpdatedTime"])
    bound = stored[len(stored) // 2]["MetaData"]["LastUpdatedTime"]
    newer = Invoice.where(f"MetaData.LastUpdatedTime > '{bound}'", max_results=1000, qb=qb)
    assert 0 < len(newer) < len(stored)
    assert all(i.MetaData.LastUpdatedTime > bound for i in newer)  # one timezone: string order = time order
    with pytest.raises(ValidationException) as no_or:
        Customer.where("DisplayName = 'a' OR DisplayName = 'b'", qb=qb)
    assert no_or.value.error_code == 4000


def test_batch_create_with_per_item_faults(served: Served, qb: QuickBooks) -> None:
    before = _count(served, "customer")
    people = [_customer(f"Batch Person {n}") for n in range(5)] + [_customer("Batch Person 1")]
    result = batch_create(people, qb=qb)
    assert len(result.successes) == 5 and len(result.faults) == 1
    assert result.faults[0].Error[0].code == "6240"
    assert _count(served, "customer") == before + 5
    answer = qb.batch_operation('{"BatchItemRequest": [{"bId": "q", "Query": "select count(*) from Item"}]}')
    assert answer["BatchItemResponse"][0]["bId"] == "q" and answer["BatchItemResponse"][0]["QueryResponse"][
        "totalCount"] > 0


def test_requestid_repeats_the_first_answer_and_creates_nothing(served: Served, qb: QuickBooks) -> None:
    before = _count(served, "customer")
    request_id = str(uuid.uuid4())
    first = _customer("Idempotent Person").save(qb=qb, request_id=request_id)
    again = _customer("Idempotent Person").save(qb=qb, request_id=request_id)
    assert again.Id == first.Id and again.MetaData == first.MetaData
    assert _count(served, "customer") == before + 1
    assert served.admin("GET", "stats")["replayed"] >= 1


def test_cdc_reports_changes_and_deletions(served: Served, qb: QuickBooks) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z")  # now, local time with offset
    customer = _customer("CDC Person").save(qb=qb)
    item = Item.filter(Name="Hours", qb=qb)[0]
    receipt = SalesReceipt()
    receipt.CustomerRef = customer.to_ref()
    receipt.Line = _invoice(customer, item, 1, 85.0).Line
    receipt = receipt.save(qb=qb)
    receipt.delete(qb=qb)
    changes = change_data_capture([Customer, SalesReceipt], since, qb=qb)
    assert customer.Id in [c.Id for c in changes.Customer]
    deleted = [r for r in changes.SalesReceipt if r.Id == receipt.Id]
    assert deleted and deleted[0].status == "Deleted"


def test_a_refresh_keeps_the_refresh_token_until_it_is_a_day_old(served: Served) -> None:
    auth = served.auth_client()
    first, access = auth.refresh_token, auth.access_token
    auth.refresh()
    assert auth.refresh_token == first and auth.access_token != access


def test_refresh_rotation_and_grace_period(served: Served) -> None:
    served.admin("PATCH", "oauth", json={"rotate_after": 0, "rotation_grace": 1})
    try:
        auth = served.auth_client()
        old = auth.refresh_token
        auth.refresh()
        rotated = auth.refresh_token
        assert rotated != old and auth.x_refresh_token_expires_in == 8726400
        auth.refresh(refresh_token=old)  # within the grace period the old token still works...
        assert auth.refresh_token != old  # ...and answers with a newer token
        time.sleep(1.3)
        with pytest.raises(AuthClientError) as late:
            auth.refresh(refresh_token=old)
        assert late.value.status_code == 400 and late.value.response.json()["error"] == "invalid_grant"
        auth.refresh()  # the newest token keeps working
    finally:
        served.admin("PATCH", "oauth", json={"rotate_after": 86400, "rotation_grace": 3600})


def test_expired_access_token_is_401_until_refreshed(served: Served) -> None:
    auth = served.auth_client()
    qb = served.client(auth)
    served.admin("POST", "oauth/expire")
    with pytest.raises(AuthorizationException) as expired:
        Customer.filter(max_results=1, qb=qb)
    assert expired.value.error_code == 401 and "003200" in expired.value.detail
    auth.access_token = None  # QuickBooks() refreshes when the AuthClient holds no access token
    assert len(Customer.filter(max_results=1, qb=served.client(auth))) == 1
