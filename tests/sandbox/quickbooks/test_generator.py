"""The seeded company: deterministic, internally consistent (balances, references), and a little messy."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ferry.sandbox.quickbooks import generate_company
from ferry.sandbox.quickbooks.company import Company
from ferry.sandbox.quickbooks.errors import QboFault
from ferry.sandbox.quickbooks.writes import Writer


@pytest.fixture(scope="module")
def company() -> Company:
    return generate_company("4620816365", seed=3, customers=120, products=25, orders=300)


def _stable(company: Company) -> dict[str, list[tuple[str, str]]]:
    return {e: [(r["Id"], str(r.get("DisplayName") or r.get("Name") or r.get("TotalAmt"))) for r in company.all(e)]
            for e in company.records}


def test_same_seed_same_company(company: Company) -> None:
    again = generate_company("4620816365", seed=3, customers=120, products=25, orders=300)
    assert _stable(again) == _stable(company)
    assert _stable(generate_company("4620816365", seed=4, customers=120, products=25, orders=300)) != _stable(company)


def test_balances_add_up(company: Company) -> None:
    for invoice in company.all("Invoice"):
        lines = sum(Decimal(str(ln["Amount"])) for ln in invoice["Line"] if ln["DetailType"] == "SalesItemLineDetail")
        assert Decimal(str(invoice["TotalAmt"])) == lines
        paid = sum(Decimal(str(ln["Amount"])) for p in company.all("Payment") for ln in p["Line"]
                   for t in ln["LinkedTxn"] if t["TxnId"] == invoice["Id"])
        assert Decimal(str(invoice["Balance"])) == lines - paid
    for customer in company.all("Customer"):
        open_invoices = sum(Decimal(str(i["Balance"])) for i in company.all("Invoice")
                            if i["CustomerRef"]["value"] == customer["Id"])
        credit = sum(Decimal(str(c["Balance"])) for c in company.all("CreditMemo")
                     if c["CustomerRef"]["value"] == customer["Id"])
        assert Decimal(str(customer["Balance"])) == open_invoices - credit


def test_it_is_messy_like_real_books(company: Company) -> None:
    customers = company.all("Customer")
    assert any("PrimaryEmailAddr" not in c for c in customers)
    assert any(c["Active"] is False for c in customers)
    assert len({c["DisplayName"].strip().lower() for c in customers}) == len(customers)  # yet never duplicates
    assert {"Invoice", "SalesReceipt", "CreditMemo", "Payment"} <= {e for e in company.records if company.records[e]}
    assert any(0 < i["Balance"] < i["TotalAmt"] for i in company.all("Invoice"))  # partly paid


def test_payments_cannot_overpay_an_invoice(company: Company) -> None:
    invoice = next(i for i in company.all("Invoice") if i["Balance"] > 0)
    too_much = float(invoice["Balance"]) + 1
    with pytest.raises(QboFault) as over:
        Writer(company).create("Payment", {
            "CustomerRef": invoice["CustomerRef"], "TotalAmt": too_much,
            "Line": [{"Amount": too_much, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]})
    assert over.value.code == "6000"


def test_an_inventory_item_needs_its_asset_account_and_quantity(company: Company) -> None:
    income = next(a for a in company.all("Account") if a["AccountType"] == "Income")
    with pytest.raises(QboFault) as missing:
        Writer(company).create("Item", {"Name": "Stocked Thing", "Type": "Inventory",
                                        "IncomeAccountRef": {"value": income["Id"]}})
    assert missing.value.code == "2020"
