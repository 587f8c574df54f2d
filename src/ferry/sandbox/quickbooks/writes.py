"""Create, update (full and sparse), delete and void, with the business rules QuickBooks enforces.

Rules that bite real integrations and are modelled here:

* ``SyncToken`` must be the current one on every update, delete and void (else ``5010 Stale Object Error``).
* A full update clears every writable field it does not send; ``"sparse": true`` changes only those sent
  (a sent ``Line`` array replaces all lines).
* ``DisplayName`` is unique across customers, vendors and employees, inactive ones included (``6240``);
  an Item's ``Name`` is unique among items. Name-list entities are never deleted: ``Active: false``.
* A DisplayName or an Item's Name holding ':' (the parent:child separator), a tab or a newline is refused
  (``2040 Invalid String``).
* ``DocNumber`` is at most 21 characters (``2050``) and unique per transaction type (``6140``; QuickBooks
  checks it when the company's "warn on duplicate numbers" preference is on, which this company has).
* A sales line's ``Amount`` must equal ``Qty * UnitPrice`` rounded to cents (``6070``); totals are computed
  by the server (a sent ``TotalAmt`` is ignored), so lines always add up.
* A sales Item needs an ``IncomeAccountRef``; references must name an existing (``2500``), active (``610``)
  object.
* A Payment applied to invoices lowers their ``Balance``; deleting or voiding it restores them.
"""

from __future__ import annotations

import copy
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ferry.sandbox.quickbooks import errors
from ferry.sandbox.quickbooks.company import NAME_LISTS, PEOPLE, Company, Record
from ferry.sandbox.quickbooks.times import fmt_date

DOC_NUMBER_MAX = 21
SALES_DOCS = ("Invoice", "SalesReceipt", "CreditMemo", "RefundReceipt")
# Fields the server owns: never taken from a request, never cleared by a full update.
SYSTEM_FIELDS = {"Id", "SyncToken", "MetaData", "domain", "sparse", "status"}
COMPUTED = {
    "Customer": {"Balance", "BalanceWithJobs", "FullyQualifiedName"},
    "Vendor": {"Balance"},
    "Item": {"FullyQualifiedName"},
    "Account": {"FullyQualifiedName", "CurrentBalance", "CurrentBalanceWithSubAccounts", "Classification"},
    "Invoice": {"TotalAmt", "Balance", "LinkedTxn", "HomeBalance", "HomeTotalAmt"},
    "SalesReceipt": {"TotalAmt", "Balance"},
    "CreditMemo": {"TotalAmt", "Balance", "RemainingCredit"},
    "RefundReceipt": {"TotalAmt", "Balance"},
    "Payment": {"UnappliedAmt"},
}
USD = {"value": "USD", "name": "United States Dollar"}
CENT = Decimal("0.01")
ACCOUNT_TYPES = {
    "Bank": "Asset", "Other Current Asset": "Asset", "Fixed Asset": "Asset", "Other Asset": "Asset",
    "Accounts Receivable": "Asset", "Equity": "Equity", "Expense": "Expense", "Other Expense": "Expense",
    "Cost of Goods Sold": "Expense", "Accounts Payable": "Liability", "Credit Card": "Liability",
    "Long Term Liability": "Liability", "Other Current Liability": "Liability", "Income": "Revenue",
    "Other Income": "Revenue",
}


def money(value: Any, element: str) -> Decimal:
    try:
        return Decimal(str(value)).quantize(CENT, ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        raise errors.bad_request(element, element) from None


def as_number(amount: Decimal) -> float | int:
    """JSON numbers as QuickBooks writes them (``100.0``, ``12.5``)."""
    return float(amount)


class Writer:
    """Applies writes to one company; every method raises ``QboFault`` on a rule violation, leaving the
    company unchanged."""

    def __init__(self, company: Company) -> None:
        self.company = company

    # -- entry points ------------------------------------------------------------------------------------------

    def create(self, entity: str, body: Record) -> Record:
        if body.get("Id"):
            # A body with an Id is an update on QuickBooks (the same POST endpoint).
            return self.update(entity, body)
        record = {k: copy.deepcopy(v) for k, v in body.items() if k not in SYSTEM_FIELDS and
                  k not in COMPUTED.get(entity, set())}
        record = self._prepare(entity, record, None)
        self.company.add(entity, record)
        self._after_write(entity, record, None)
        return record

    def update(self, entity: str, body: Record) -> Record:
        current = self._current(entity, body)
        sparse = body.get("sparse") is True or str(body.get("sparse")).lower() == "true"
        sent = {k: copy.deepcopy(v) for k, v in body.items() if k not in SYSTEM_FIELDS and
                k not in COMPUTED.get(entity, set())}
        if sparse:
            merged = {k: v for k, v in current.items() if k not in SYSTEM_FIELDS}
            merged.update(sent)
        else:
            # A full update: what is not sent is cleared (computed and system fields stay the server's).
            merged = sent
            if entity in NAME_LISTS and "Active" not in merged:
                merged["Active"] = True
        before = copy.deepcopy(current)
        prepared = self._prepare(entity, merged, current)
        for key in [k for k in current if k not in SYSTEM_FIELDS]:
            del current[key]
        current.update(prepared)
        self.company.touch(current)
        self._after_write(entity, current, before)
        return current

    def delete(self, entity: str, body: Record) -> Record:
        if entity in NAME_LISTS:
            raise errors.unsupported(f"Delete is not supported for {entity}; make it inactive (Active: false)")
        current = self._current(entity, body)
        if entity == "Invoice" and current.get("LinkedTxn") and any(
                t.get("TxnType") == "Payment" for t in current["LinkedTxn"]):
            raise errors.business("This transaction has payments applied to it. Delete the payments first.",
                                  "6480")
        before = copy.deepcopy(current)
        self.company.remove(entity, current["Id"])
        self._after_delete(entity, before)
        return {"Id": current["Id"], "status": "Deleted", "domain": "QBO"}

    def void(self, entity: str, body: Record) -> Record:
        if entity not in ("Invoice", "SalesReceipt", "Payment", "RefundReceipt", "CreditMemo"):
            raise errors.unsupported(f"void on {entity}")
        current = self._current(entity, body)
        before = copy.deepcopy(current)
        if entity == "Payment":
            self._unapply_payment(before)
            current["Line"] = []
            current["UnappliedAmt"] = 0.0
        elif entity == "Invoice" and any(t.get("TxnType") == "Payment" for t in current.get("LinkedTxn", [])):
            raise errors.business("This transaction has payments applied to it. Delete the payments first.",
                                  "6480")
        for line in current.get("Line", []):
            line["Amount"] = 0.0
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict) and "Qty" in detail:
                detail["Qty"] = 0
        current["TotalAmt"] = 0.0
        if "Balance" in current:
            current["Balance"] = 0.0
        current["PrivateNote"] = f"Voided{(' - ' + before['PrivateNote']) if before.get('PrivateNote') else ''}"
        self.company.touch(current)
        self._refresh_customer(current.get("CustomerRef"))
        return current

    # -- shared checks -----------------------------------------------------------------------------------------

    def _current(self, entity: str, body: Record) -> Record:
        rid = body.get("Id")
        if rid in (None, ""):
            raise errors.required("Id", "Id")
        if body.get("SyncToken") in (None, ""):
            raise errors.required("SyncToken", "SyncToken")
        current = self.company.get(entity, str(rid))
        if current is None:
            raise errors.not_found(f"Object Not Found : Something you're trying to use has been made inactive. "
                                   f"Check the fields with accounts, customers, items, vendors or employees. "
                                   f"{entity} Id={rid}")
        if str(body["SyncToken"]) != current["SyncToken"]:
            raise errors.stale_object()
        return current

    def _ref(self, entity: str, ref: Any, element: str, *, fill_name: str | None = None) -> dict[str, Any]:
        """A reference ``{"value": id}``: the object must exist and be active; its ``name`` is filled in."""
        if not isinstance(ref, dict) or ref.get("value") in (None, ""):
            raise errors.required(element, element)
        target = self.company.get(entity, str(ref["value"]))
        if target is None:
            raise errors.invalid_reference(entity, str(ref["value"]), element)
        if target.get("Active") is False:
            raise errors.not_found()
        name = target.get(fill_name or ("DisplayName" if entity in PEOPLE else "Name"))
        return {"value": target["Id"], "name": name} if name else {"value": target["Id"]}

    def _prepare(self, entity: str, record: Record, current: Record | None) -> Record:
        prepare = {
            "Customer": self._person, "Vendor": self._person, "Employee": self._person,
            "Item": self._item, "Account": self._account, "Payment": self._payment,
        }.get(entity)
        if prepare is not None:
            return prepare(entity, record, current)
        return self._sales_doc(entity, record, current)

    # -- name lists --------------------------------------------------------------------------------------------

    def _person(self, entity: str, record: Record, current: Record | None) -> Record:
        if not record.get("DisplayName"):
            parts = [record.get(k) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")]
            composed = " ".join(str(p).strip() for p in parts if p and str(p).strip())
            if not composed:
                raise errors.required("Either DisplayName or at least one of Title, GivenName, MiddleName, "
                                      "FamilyName, or Suffix", "DisplayName")
            record["DisplayName"] = composed
        record = {k: v for k, v in record.items() if v != ""}
        _no_name_separators(str(record["DisplayName"]), "DisplayName")
        self._unique_display_name(record["DisplayName"], entity, current)
        record.setdefault("Active", True)
        record.setdefault("PrintOnCheckName", record["DisplayName"])
        if entity == "Customer":
            record["FullyQualifiedName"] = record["DisplayName"]
            record.setdefault("Taxable", True)
            record.setdefault("Job", False)
            record.setdefault("BillWithParent", False)
            record.setdefault("CurrencyRef", USD)
            record.setdefault("PreferredDeliveryMethod", "Print")
            record["Balance"] = current.get("Balance", 0.0) if current else 0.0
            record["BalanceWithJobs"] = record["Balance"]
        if entity == "Vendor":
            record["Balance"] = current.get("Balance", 0.0) if current else 0.0
        return record

    def _unique_display_name(self, name: str, entity: str, current: Record | None) -> None:
        wanted = name.strip().lower()
        for kind in PEOPLE:
            for other in self.company.records[kind].values():
                if current is not None and kind == entity and other["Id"] == current["Id"]:
                    continue
                if str(other.get("DisplayName", "")).strip().lower() == wanted:
                    raise errors.duplicate_name(other["Id"])

    def _item(self, entity: str, record: Record, current: Record | None) -> Record:
        record = {k: v for k, v in record.items() if v != ""}
        if not record.get("Name"):
            raise errors.required("Name", "Name")
        _no_name_separators(str(record["Name"]), "Name")
        for other in self.company.records["Item"].values():
            if (current is None or other["Id"] != current["Id"]) and \
                    str(other["Name"]).strip().lower() == str(record["Name"]).strip().lower():
                raise errors.duplicate_name(other["Id"])
        item_type = record.setdefault("Type", "NonInventory")
        if item_type not in ("Inventory", "NonInventory", "Service", "Category", "Group"):
            raise errors.QboFault("2170", "Invalid Enumeration", f"Invalid Enumeration : {item_type}", "Type")
        if item_type in ("Inventory", "NonInventory", "Service"):
            if not record.get("IncomeAccountRef"):
                raise errors.business("Select an income account for this item (IncomeAccountRef).", "6000",
                                      "IncomeAccountRef")
            record["IncomeAccountRef"] = self._ref("Account", record["IncomeAccountRef"], "IncomeAccountRef")
        if item_type == "Inventory":
            for needed in ("AssetAccountRef", "QtyOnHand", "InvStartDate"):
                if record.get(needed) in (None, ""):
                    raise errors.required(needed, needed)
            record["AssetAccountRef"] = self._ref("Account", record["AssetAccountRef"], "AssetAccountRef")
            record["TrackQtyOnHand"] = True
        else:
            record.setdefault("TrackQtyOnHand", False)
        if record.get("ExpenseAccountRef"):
            record["ExpenseAccountRef"] = self._ref("Account", record["ExpenseAccountRef"], "ExpenseAccountRef")
        record.setdefault("Active", True)
        record.setdefault("Taxable", False)
        record["UnitPrice"] = as_number(money(record.get("UnitPrice", 0), "UnitPrice"))
        record["FullyQualifiedName"] = record["Name"]
        return record

    def _account(self, entity: str, record: Record, current: Record | None) -> Record:
        record = {k: v for k, v in record.items() if v != ""}
        if not record.get("Name"):
            raise errors.required("Name", "Name")
        _no_name_separators(str(record["Name"]), "Name")
        for other in self.company.records["Account"].values():
            if (current is None or other["Id"] != current["Id"]) and other["Name"].lower() == record["Name"].lower():
                raise errors.duplicate_name(other["Id"])
        account_type = record.get("AccountType")
        if account_type not in ACCOUNT_TYPES:
            raise errors.required("AccountType", "AccountType")
        record["Classification"] = ACCOUNT_TYPES[account_type]
        record.setdefault("Active", True)
        record.setdefault("SubAccount", False)
        record.setdefault("CurrencyRef", USD)
        record["FullyQualifiedName"] = record["Name"]
        record.setdefault("CurrentBalance", current.get("CurrentBalance", 0) if current else 0)
        return record

    # -- transactions ------------------------------------------------------------------------------------------

    def _doc_number(self, entity: str, record: Record, current: Record | None) -> None:
        doc = record.get("DocNumber")
        if doc in (None, ""):
            if entity in ("Invoice", "SalesReceipt", "CreditMemo", "RefundReceipt") and current is None:
                record["DocNumber"] = self._next_doc_number(entity)
            else:
                record.pop("DocNumber", None)
            return
        doc = str(doc)
        if len(doc) > DOC_NUMBER_MAX:
            raise errors.string_length("DocNumber", DOC_NUMBER_MAX, len(doc))
        record["DocNumber"] = doc
        for other in self.company.records[entity].values():
            if (current is None or other["Id"] != current["Id"]) and other.get("DocNumber") == doc:
                raise errors.duplicate_doc_number(doc, entity, other["Id"])

    def _next_doc_number(self, entity: str) -> str:
        """Automatic numbering: one more than the highest numeric DocNumber of this type."""
        numbers = [int(r["DocNumber"]) for r in self.company.records[entity].values()
                   if str(r.get("DocNumber", "")).isdigit()]
        return str(max(numbers, default=1000) + 1)

    def _txn_dates(self, entity: str, record: Record) -> None:
        today = fmt_date(self.company.clock.now())
        txn_date = str(record.get("TxnDate") or today)
        try:
            date.fromisoformat(txn_date)
        except ValueError:
            raise errors.QboFault("2040", "Invalid Date", f"Invalid Date : {txn_date}", "TxnDate") from None
        record["TxnDate"] = txn_date
        if entity == "Invoice":
            record.setdefault("DueDate", (date.fromisoformat(txn_date) + timedelta(days=30)).isoformat())

    def _sales_doc(self, entity: str, record: Record, current: Record | None) -> Record:
        record = {k: v for k, v in record.items() if v != ""}  # clients send "" for unset dates and totals
        record["CustomerRef"] = self._ref("Customer", record.get("CustomerRef"), "CustomerRef")
        self._doc_number(entity, record, current)
        self._txn_dates(entity, record)
        lines = record.get("Line")
        if not isinstance(lines, list) or not lines:
            raise errors.required("Line", "Line")
        record["Line"], total = self._sales_lines(lines)
        record["TotalAmt"] = as_number(total)
        record.setdefault("CurrencyRef", USD)
        record.setdefault("TxnTaxDetail", {"TotalTax": 0})
        record.setdefault("PrintStatus", "NotSet")
        record.setdefault("EmailStatus", "NotSet")
        if entity == "Invoice":
            paid = self._paid_on_invoice(current)
            if paid > total:
                raise errors.business("The invoice total cannot be less than the payments applied to it.")
            record["Balance"] = as_number(total - paid)
            record["LinkedTxn"] = [t for t in (current or {}).get("LinkedTxn", [])]
        elif entity == "CreditMemo":
            record["Balance"] = as_number(total)
            record["RemainingCredit"] = as_number(total)
        else:  # SalesReceipt, RefundReceipt: paid (refunded) in full at once
            record["Balance"] = 0.0
            if entity == "RefundReceipt" and not record.get("DepositToAccountRef"):
                raise errors.required("DepositToAccountRef", "DepositToAccountRef")
            default = self._account_named("Undeposited Funds")
            ref = record.get("DepositToAccountRef") or default
            if ref:
                record["DepositToAccountRef"] = self._ref("Account", ref, "DepositToAccountRef")
        return record

    def _account_named(self, name: str) -> dict[str, str] | None:
        for account in self.company.records["Account"].values():
            if account["Name"] == name:
                return {"value": account["Id"], "name": name}
        return None

    def _sales_lines(self, lines: list[Any]) -> tuple[list[Record], Decimal]:
        out: list[Record] = []
        subtotal = Decimal(0)
        discount = Decimal(0)
        number = 0
        for raw in lines:
            if not isinstance(raw, dict):
                raise errors.bad_request("Line", "Line")
            line = copy.deepcopy(raw)
            kind = line.get("DetailType")
            if kind == "SubTotalLineDetail":
                continue  # the server writes its own subtotal line
            number += 1
            line["Id"] = str(number)
            line["LineNum"] = number
            if kind == "SalesItemLineDetail":
                subtotal += self._item_line(line)
            elif kind == "DiscountLineDetail":
                detail = line.setdefault("DiscountLineDetail", {})
                if detail.get("PercentBased"):
                    pct = Decimal(str(detail.get("DiscountPercent", 0)))
                    line["Amount"] = as_number((subtotal * pct / 100).quantize(CENT, ROUND_HALF_UP))
                discount += money(line.get("Amount", 0), "Line.Amount")
                line.pop("Id", None)
                line.pop("LineNum", None)
                number -= 1
            elif kind == "DescriptionOnly":
                line.setdefault("DescriptionLineDetail", {})
                line.setdefault("Amount", 0)
            elif kind == "GroupLineDetail":
                subtotal += money(line.get("Amount", 0), "Line.Amount")
            else:
                raise errors.QboFault("2170", "Invalid Enumeration", f"Invalid Enumeration : {kind}", "DetailType")
            out.append(line)
        out.append({"Amount": as_number(subtotal), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        return out, subtotal - discount

    def _item_line(self, line: Record) -> Decimal:
        detail = line.get("SalesItemLineDetail")
        if not isinstance(detail, dict):
            detail = line["SalesItemLineDetail"] = {}
        if line.get("Amount") in (None, ""):
            raise errors.required("Amount", "Line.Amount")
        amount = money(line["Amount"], "Line.Amount")
        item_ref = detail.get("ItemRef") or {"value": "1"}  # no item: QuickBooks uses "Services"
        detail["ItemRef"] = self._ref("Item", item_ref, "ItemRef")
        qty, price = detail.get("Qty"), detail.get("UnitPrice")
        if qty is not None and price is not None:
            expected = (Decimal(str(qty)) * Decimal(str(price))).quantize(CENT, ROUND_HALF_UP)
            if expected != amount:
                raise errors.QboFault("6070", "Amount is not equal to UnitPrice * Qty",
                                      f"Amount is not equal to UnitPrice * Qty. Supplied value:{line['Amount']}",
                                      "Line.Amount")
        elif qty is not None and Decimal(str(qty)) != 0:
            detail["UnitPrice"] = as_number(amount / Decimal(str(qty)))
        elif price is not None and Decimal(str(price)) != 0:
            detail["Qty"] = as_number(amount / Decimal(str(price)))
        detail.setdefault("TaxCodeRef", {"value": "NON"})
        line["Amount"] = as_number(amount)
        return amount

    def _paid_on_invoice(self, invoice: Record | None) -> Decimal:
        if invoice is None:
            return Decimal(0)
        paid = Decimal(0)
        for payment in self.company.records["Payment"].values():
            for line in payment.get("Line", []):
                for txn in line.get("LinkedTxn", []):
                    if txn.get("TxnType") == "Invoice" and str(txn.get("TxnId")) == invoice["Id"]:
                        paid += money(line.get("Amount", 0), "Line.Amount")
        return paid

    # -- payments ----------------------------------------------------------------------------------------------

    def _payment(self, entity: str, record: Record, current: Record | None) -> Record:
        record = {k: v for k, v in record.items() if v != ""}
        record["CustomerRef"] = self._ref("Customer", record.get("CustomerRef"), "CustomerRef")
        if record.get("TotalAmt") in (None, ""):
            raise errors.required("TotalAmt", "TotalAmt")
        total = money(record["TotalAmt"], "TotalAmt")
        self._txn_dates(entity, record)
        applied = Decimal(0)
        lines = record.get("Line") or []
        for line in lines:
            amount = money(line.get("Amount", 0), "Line.Amount")
            for txn in line.get("LinkedTxn", []):
                invoice = self.company.get("Invoice", str(txn.get("TxnId")))
                if txn.get("TxnType") != "Invoice" or invoice is None:
                    raise errors.invalid_reference("Invoice", str(txn.get("TxnId")), "LinkedTxn")
                if invoice["CustomerRef"]["value"] != record["CustomerRef"]["value"]:
                    raise errors.business("The payment and the invoice it pays are for different customers.")
                already = self._paid_on_invoice(invoice) - self._paid_by(current, invoice["Id"])
                if already + amount > money(invoice["TotalAmt"], "TotalAmt"):
                    raise errors.business(f"The payment amount exceeds the open balance of invoice {invoice['Id']}.")
            applied += amount
        if applied > total:
            raise errors.business("The amount applied to invoices is more than the payment amount.")
        record["TotalAmt"] = as_number(total)
        record["UnappliedAmt"] = as_number(total - applied)
        record["Line"] = lines
        record.setdefault("CurrencyRef", USD)
        record.setdefault("ProcessPayment", False)
        deposit = record.get("DepositToAccountRef") or self._account_named("Undeposited Funds")
        if deposit:
            record["DepositToAccountRef"] = self._ref("Account", deposit, "DepositToAccountRef")
        return record

    @staticmethod
    def _paid_by(payment: Record | None, invoice_id: str) -> Decimal:
        if payment is None:
            return Decimal(0)
        return sum((money(line.get("Amount", 0), "Line.Amount") for line in payment.get("Line", [])
                    for txn in line.get("LinkedTxn", [])
                    if txn.get("TxnType") == "Invoice" and str(txn.get("TxnId")) == invoice_id), Decimal(0))

    def _invoices_of(self, payment: Record | None) -> set[str]:
        if payment is None:
            return set()
        return {str(t.get("TxnId")) for line in payment.get("Line", []) for t in line.get("LinkedTxn", [])
                if t.get("TxnType") == "Invoice"}

    def _refresh_invoices(self, invoice_ids: set[str]) -> None:
        """Recompute each invoice's Balance and LinkedTxn from the payments applied to it."""
        for invoice_id in invoice_ids:
            invoice = self.company.get("Invoice", invoice_id)
            if invoice is None:
                continue
            invoice["Balance"] = as_number(money(invoice["TotalAmt"], "TotalAmt") - self._paid_on_invoice(invoice))
            invoice["LinkedTxn"] = [{"TxnId": p["Id"], "TxnType": "Payment"}
                                    for p in self.company.all("Payment") if invoice_id in self._invoices_of(p)]

    def _unapply_payment(self, payment: Record) -> None:
        stored = self.company.get("Payment", payment["Id"])
        if stored is not None:
            stored["Line"] = []
        self._refresh_invoices(self._invoices_of(payment))

    # -- after a write -----------------------------------------------------------------------------------------

    def _after_write(self, entity: str, record: Record, before: Record | None) -> None:
        if entity == "Payment":
            self._refresh_invoices(self._invoices_of(record) | self._invoices_of(before))
        if entity in ("Invoice", "Payment", "CreditMemo"):
            self._refresh_customer(record.get("CustomerRef"))
            if before is not None and before.get("CustomerRef") != record.get("CustomerRef"):
                self._refresh_customer(before.get("CustomerRef"))

    def _after_delete(self, entity: str, before: Record) -> None:
        if entity == "Payment":
            self._refresh_invoices(self._invoices_of(before))
        self._refresh_customer(before.get("CustomerRef"))

    def _refresh_customer(self, ref: Any) -> None:
        """A customer's Balance: open invoices less unapplied payments and open credit."""
        if not isinstance(ref, dict):
            return
        customer = self.company.get("Customer", str(ref.get("value")))
        if customer is None:
            return
        cid = customer["Id"]

        def owned(entity: str, key: str) -> Decimal:
            return sum((money(r.get(key, 0), key) for r in self.company.records[entity].values()
                        if r.get("CustomerRef", {}).get("value") == cid), Decimal(0))

        balance = owned("Invoice", "Balance") - owned("Payment", "UnappliedAmt") - owned("CreditMemo", "Balance")
        customer["Balance"] = as_number(balance)
        customer["BalanceWithJobs"] = as_number(balance)


_NAME_SEPARATORS = (":", "\t", "\n", "\r")


def _no_name_separators(name: str, element: str) -> None:
    """A name-list entity's name may not hold ':' (it separates a parent from a sub-customer or sub-item in
    ``FullyQualifiedName``), a tab or a newline: Intuit answers 2040."""
    if any(c in name for c in _NAME_SEPARATORS):
        raise errors.invalid_characters(name, element)
