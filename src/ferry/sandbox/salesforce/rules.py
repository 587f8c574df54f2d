"""Object-specific behaviour of the standard objects: derived fields and the price-book rules.

These are the org's built-in triggers that a client notices: an OrderItem needs a
PricebookEntry from the Order's price book, a custom price book needs a standard
price first, Contact.Name is computed, and so on.
"""

from __future__ import annotations

from collections.abc import Callable

from ferry.sandbox.salesforce.errors import RecordError
from ferry.sandbox.salesforce.store import Record, Store

Rule = Callable[[Record, Store, Record | None], None]


def _full_name(record: Record, _store: Store, _old: Record | None) -> None:
    record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p) or None


def _pricebook_entry(record: Record, store: Store, old: Record | None) -> None:
    if old is not None:
        return
    product = store.table("Product2").rows.get(record.get("Product2Id") or "")
    pricebook = store.table("Pricebook2").rows.get(record.get("Pricebook2Id") or "")
    if product is None or pricebook is None:
        return  # the reference check reports it
    entries = store.table("PricebookEntry").rows
    siblings = [entries[i] for i in store.child_ids("PricebookEntry", "Product2Id", product["Id"]) if i in entries]
    if any(e.get("Pricebook2Id") == pricebook["Id"] for e in siblings):
        raise RecordError("DUPLICATE_VALUE", "This price definition already exists in this price book", [])
    if not pricebook.get("IsStandard"):
        standard_ids = {pid for pid, pb in store.table("Pricebook2").rows.items() if pb.get("IsStandard")}
        if not any(e.get("Pricebook2Id") in standard_ids for e in siblings):
            raise RecordError("STANDARD_PRICE_NOT_DEFINED", "No standard price defined for this product", [])
    record["Name"] = product.get("Name")
    record["ProductCode"] = product.get("ProductCode")


def _line_item(parent_object: str, parent_field: str) -> Rule:
    def rule(record: Record, store: Store, old: Record | None) -> None:
        if old is None:
            parent = store.table(parent_object).rows.get(record.get(parent_field) or "")
            entry = store.table("PricebookEntry").rows.get(record.get("PricebookEntryId") or "")
            if parent is not None and entry is not None:
                if parent.get("Pricebook2Id") is None or parent.get("Pricebook2Id") != entry.get("Pricebook2Id"):
                    raise RecordError(
                        "FIELD_INTEGRITY_EXCEPTION",
                        "field integrity exception: PricebookEntryId (pricebook entry is in a different pricebook "
                        f"than the one assigned to the {parent_object}, or {parent_object} has no pricebook assigned)",
                        ["PricebookEntryId"],
                    )
                if record.get("Product2Id") is None:
                    record["Product2Id"] = entry.get("Product2Id")
                has_list_price = "ListPrice" in store.table(_child_of(parent_object)).schema.fields
                if record.get("ListPrice") is None and has_list_price:
                    record["ListPrice"] = entry.get("UnitPrice")
        quantity, price = record.get("Quantity"), record.get("UnitPrice")
        if quantity is not None and price is not None:
            record["TotalPrice"] = round(quantity * price, 2)

    return rule


def _user(record: Record, store: Store, old: Record | None) -> None:
    _full_name(record, store, old)
    if record.get("CommunityNickname") is None and record.get("Username"):
        # The org fills the nickname from the username when none is given.
        record["CommunityNickname"] = str(record["Username"]).split("@")[0][:40]


# The default sales process: stage -> (probability %, closed, won, forecast category).
_STAGES: dict[str, tuple[int, bool, bool, str]] = {
    "prospecting": (10, False, False, "Pipeline"), "qualification": (10, False, False, "Pipeline"),
    "needs analysis": (20, False, False, "Pipeline"), "value proposition": (50, False, False, "Pipeline"),
    "id. decision makers": (60, False, False, "Pipeline"), "perception analysis": (70, False, False, "Pipeline"),
    "proposal/price quote": (75, False, False, "Pipeline"), "negotiation/review": (90, False, False, "Pipeline"),
    "closed won": (100, True, True, "Closed"), "closed lost": (0, True, False, "Omitted"),
}


def _opportunity_stage(record: Record, _store: Store, old: Record | None) -> None:
    stage = _STAGES.get(str(record.get("StageName") or "").lower())
    if stage is not None:
        probability, closed, won, forecast = stage
        record["IsClosed"], record["IsWon"] = closed, won
        # The stage sets probability and forecast category unless the client gave them
        # (on update: unless the client changed them along with the stage).
        stage_changed = old is None or old.get("StageName") != record.get("StageName")
        for name, value in (("Probability", probability), ("ForecastCategoryName", forecast)):
            if record.get(name) is None or (stage_changed and old is not None and record.get(name) == old.get(name)):
                record[name] = value
    amount, percent = record.get("Amount"), record.get("Probability")
    record["ExpectedRevenue"] = round(amount * percent / 100, 2) if amount is not None and percent is not None \
        else None


def _case_closed(record: Record, store: Store, old: Record | None) -> None:
    closed = str(record.get("Status") or "").lower() == "closed"
    record["IsClosed"] = closed
    if closed and record.get("ClosedDate") is None:
        record["ClosedDate"] = record.get("LastModifiedDate")
    elif not closed:
        record["ClosedDate"] = None
    contact = store.table("Contact").rows.get(record.get("ContactId") or "")
    record["ContactEmail"] = contact.get("Email") if contact else None
    record["ContactPhone"] = contact.get("Phone") if contact else None


def _child_of(parent_object: str) -> str:
    return "OrderItem" if parent_object == "Order" else "OpportunityLineItem"


# Runs after field validation, before unique checks and the write; `old` is None on insert.
BEFORE_SAVE: dict[str, Rule] = {
    "Contact": _full_name,
    "Lead": _full_name,
    "User": _user,
    "Opportunity": _opportunity_stage,
    "Case": _case_closed,
    "PricebookEntry": _pricebook_entry,
    "OrderItem": _line_item("Order", "OrderId"),
    "OpportunityLineItem": _line_item("Opportunity", "OpportunityId"),
}


def auto_number_format(field_name: str, n: int) -> str:
    """Auto-number display formats of the standard objects (OrderNumber 00000100, OrderItemNumber 10 digits)."""
    width = 10 if field_name == "OrderItemNumber" else 8
    return f"{n:0{width}d}"


AUTO_NUMBER_START: dict[str, int] = {"OrderNumber": 100, "CaseNumber": 1000, "OrderItemNumber": 1}
