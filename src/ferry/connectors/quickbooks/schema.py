"""What ferry knows of the QuickBooks entities it writes, as ``ObjectSchema``s (QuickBooks has no describe).

Field names are the API's; a nested field is written dotted (``BillAddr.City``, ``PrimaryEmailAddr.Address``)
and nested by the sink. ``Ref`` fields are references (``{"value": id}`` on the wire). Lengths are Intuit's
documented maximums, in characters. Each entity's *lookup field* (``id_lookup``) is the one the sink finds a
record by when its id is not in ferry's id map, and which QuickBooks keeps unique, so a create whose answer
was lost meets a duplicate fault and is found instead of made twice:

* Customer: ``DisplayName`` (unique across customers, vendors and employees: 6240);
* Item: ``Name`` (unique among items: 6240); ``Sku`` is queryable but not unique, so it is not one;
* Invoice, SalesReceipt: ``DocNumber`` (unique per type: 6140; at most 21 characters).
"""

from __future__ import annotations

from ferry.connectors.quickbooks.names import SOURCE_KEY
from ferry.core.schema import FieldSchema, ObjectSchema


def _text(name: str, length: int, *, lookup: bool = False, required: bool = False) -> FieldSchema:
    return FieldSchema(name, "string", length, nillable=not required, id_lookup=lookup, unique=lookup)


def _ref(name: str, target: str, *, required: bool = False) -> FieldSchema:
    return FieldSchema(name, "reference", 0, nillable=not required, reference_to=[target], relationship_name=name)


def _address(prefix: str) -> list[FieldSchema]:
    return [
        _text(f"{prefix}.Line1", 500), _text(f"{prefix}.Line2", 500), _text(f"{prefix}.City", 255),
        _text(f"{prefix}.CountrySubDivisionCode", 255), _text(f"{prefix}.PostalCode", 30),
        _text(f"{prefix}.Country", 255),
    ]


def _schema(name: str, fields: list[FieldSchema]) -> ObjectSchema:
    # ``SourceKey`` is ferry's, never sent: the record's source key, to find a create whose answer was lost
    # after the record was renamed (``names.py``).
    source_key = FieldSchema(SOURCE_KEY, "string", 255)
    return ObjectSchema(name, {f.name: f for f in [*fields, source_key]})


_SALES_DOC = [
    _text("DocNumber", 21, lookup=True),
    FieldSchema("TxnDate", "date"),
    FieldSchema("DueDate", "date"),
    _ref("CustomerRef", "Customer", required=True),
    FieldSchema("Line", "anyType", nillable=False),
    _text("PrivateNote", 4000),
    _text("CustomerMemo.value", 1000),
    FieldSchema("BillEmail.Address", "email", 100),
    _ref("CurrencyRef", "Currency"),
    *_address("BillAddr"),
    *_address("ShipAddr"),
]

SCHEMAS: dict[str, ObjectSchema] = {
    "Customer": _schema("Customer", [
        _text("DisplayName", 500, lookup=True),
        _text("Title", 16), _text("GivenName", 100), _text("MiddleName", 100), _text("FamilyName", 100),
        _text("Suffix", 16), _text("CompanyName", 100), _text("Notes", 2000),
        FieldSchema("PrimaryEmailAddr.Address", "email", 100),
        _text("PrimaryPhone.FreeFormNumber", 30), _text("Mobile.FreeFormNumber", 30),
        FieldSchema("Active", "boolean"), FieldSchema("Taxable", "boolean"),
        _ref("CurrencyRef", "Currency"),
        *_address("BillAddr"), *_address("ShipAddr"),
    ]),
    "Item": _schema("Item", [
        _text("Name", 100, lookup=True), _text("Sku", 100), _text("Description", 4000),
        _text("PurchaseDesc", 1000),
        FieldSchema("Type", "picklist", 0, picklist_values=["Service", "NonInventory", "Inventory"],
                    restricted_picklist=True),
        FieldSchema("UnitPrice", "currency", precision=18, scale=2), FieldSchema("PurchaseCost", "currency"),
        FieldSchema("Active", "boolean"), FieldSchema("Taxable", "boolean"),
        _ref("IncomeAccountRef", "Account"), _ref("ExpenseAccountRef", "Account"),
        _ref("AssetAccountRef", "Account"),
    ]),
    "Invoice": _schema("Invoice", _SALES_DOC),
    "SalesReceipt": _schema("SalesReceipt", [*_SALES_DOC, _ref("DepositToAccountRef", "Account")]),
}
