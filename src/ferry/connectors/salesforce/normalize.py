"""Raw Salesforce records (as the Salesforce source reads them) -> canonical records.

A raw record is the sObject's row as REST query returns it (JSON types) or as a Bulk API 2.0 query returns
it (CSV text: ``""`` for null, ``"true"``/``"false"``, numbers as text), plus what the source embeds from
its children, under keys no Salesforce field can have (they start with ``_``):

* Account: ``_contact``, its primary Contact (the first one created), or absent;
* Product2: ``_price``, its standard PricebookEntry (``UnitPrice``, ``SystemModstamp``), or absent;
* Order: ``_items``, its OrderItems (Id order).

Both shapes normalize to the same canonical values (money and quantities as normalized decimal text), so a
record read by Bulk and read again by REST maps to the same target payload. The version is the newest
``SystemModstamp`` of the record and what is embedded: a child's change is a change of the record.

A deleted record (``IsDeleted``, read through ``queryAll``) yields nothing: deletes are not propagated to
targets yet (docs/connectors/salesforce-reads.md says why), but reading them keeps the cursor moving.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ferry.core.contracts import Normalized
from ferry.model.canonical import Address, Customer, Order, OrderLine, Product, ProductVariant
from ferry.model.values import MIN_VERSION, MISSING_KEY_PREFIX, text, utc_timestamp

CONTACT, PRICE, ITEMS = "_contact", "_price", "_items"
STREAMS = ("Account", "Product2", "Order")

ACCOUNT_FIELDS = (
    "Name", "AccountNumber", "Type", "Phone", "Website", "Description", "BillingStreet", "BillingCity",
    "BillingState", "BillingPostalCode", "BillingCountry", "CreatedDate", "LastModifiedDate", "IsDeleted",
)
CONTACT_FIELDS = ("AccountId", "FirstName", "LastName", "Email", "Phone", "CreatedDate")
PRODUCT_FIELDS = (
    "Name", "ProductCode", "Description", "IsActive", "Family", "StockKeepingUnit", "CreatedDate",
    "LastModifiedDate", "IsDeleted",
)
PRICE_FIELDS = ("Product2Id", "UnitPrice")
ORDER_FIELDS = (
    "AccountId", "EffectiveDate", "Status", "Name", "OrderNumber", "PoNumber", "Description", "BillingStreet",
    "BillingCity", "BillingState", "BillingPostalCode", "BillingCountry", "CreatedDate", "LastModifiedDate",
    "IsDeleted",
)
ITEM_FIELDS = ("OrderId", "Product2Id", "PricebookEntryId", "Quantity", "UnitPrice", "Description", "OrderItemNumber")

FIELDS: dict[str, tuple[str, ...]] = {"Account": ACCOUNT_FIELDS, "Product2": PRODUCT_FIELDS, "Order": ORDER_FIELDS}


def record_key(raw: dict[str, Any]) -> str:
    key = text(raw.get("Id"))
    if key:
        return key
    # Every record Salesforce returns has an Id; a hand-made one without is keyed by its content, stably.
    return MISSING_KEY_PREFIX + hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def record_version(raw: dict[str, Any]) -> str:
    """The newest SystemModstamp of the record and its embedded children, as a fixed-width UTC version."""
    stamps = [_stamp(raw)]
    contact, price = raw.get(CONTACT), raw.get(PRICE)
    if isinstance(contact, dict):
        stamps.append(_stamp(contact))
    if isinstance(price, dict):
        stamps.append(_stamp(price))
    stamps += [_stamp(item) for item in raw.get(ITEMS) or () if isinstance(item, dict)]
    return max(stamps)


def is_deleted(raw: dict[str, Any]) -> bool:
    return _flag(raw.get("IsDeleted")) is True


def normalize(stream: str, raw: dict[str, Any]) -> Normalized:
    if is_deleted(raw):
        return []
    if stream == "Account":
        return [("customer", customer(raw))]
    if stream == "Product2":
        product, variant = product_records(raw)
        return [("product", product), ("product_variant", variant)]
    if stream == "Order":
        order_record = order(raw)
        return [("order", order_record), *(("order_line", line) for line in order_record.lines)]
    return []


def customer(raw: dict[str, Any]) -> Customer:
    key, version = record_key(raw), record_version(raw)
    contact = _child(raw, CONTACT)
    name = text(raw.get("Name"))
    address = Address(
        street=text(raw.get("BillingStreet")), city=text(raw.get("BillingCity")),
        province=text(raw.get("BillingState")), province_code=text(raw.get("BillingState")),
        zip=text(raw.get("BillingPostalCode")), country=text(raw.get("BillingCountry")),
        country_code=text(raw.get("BillingCountry")), company=name,
        first_name=text(contact.get("FirstName")), last_name=text(contact.get("LastName")),
    )
    return Customer(
        key=key, version=version, source_id=text(raw.get("Id")),
        email=text(contact.get("Email")),
        first_name=text(contact.get("FirstName")), last_name=text(contact.get("LastName")),
        # An Account is a company: its name is what the books call the customer.
        full_name=name, company=name,
        phone=text(raw.get("Phone")) or text(contact.get("Phone")),
        note=text(raw.get("Description")),
        state=text(raw.get("Type")),
        address=address if any((address.street, address.city, address.zip, address.country)) else None,
        created_at=utc_timestamp(text(raw.get("CreatedDate"))),
        updated_at=utc_timestamp(text(raw.get("LastModifiedDate"))),
    )


def product_records(raw: dict[str, Any]) -> tuple[Product, ProductVariant]:
    """A Product2 is one sellable thing: the canonical product and its one variant (the priced, SKU'd unit
    targets such as QuickBooks Items map from), under the same key."""
    key, version = record_key(raw), record_version(raw)
    price = _child(raw, PRICE)
    name = text(raw.get("Name"))
    active = _flag(raw.get("IsActive"))
    status = None if active is None else "active" if active else "archived"
    created, updated = utc_timestamp(text(raw.get("CreatedDate"))), utc_timestamp(text(raw.get("LastModifiedDate")))
    product = Product(
        key=key, version=version, title=name, product_type=text(raw.get("Family")), status=status,
        handle=text(raw.get("ProductCode")), description=text(raw.get("Description")), variant_keys=(key,),
        created_at=created, updated_at=updated,
    )
    variant = ProductVariant(
        key=key, version=version, product_key=key, title=name, product_title=name, display_name=name,
        sku=text(raw.get("StockKeepingUnit")) or text(raw.get("ProductCode")),
        price=decimal_text(price.get("UnitPrice")), description=text(raw.get("Description")), status=status,
        created_at=created, updated_at=updated,
    )
    return product, variant


def order(raw: dict[str, Any]) -> Order:
    key, version = record_key(raw), record_version(raw)
    items = [i for i in raw.get(ITEMS) or () if isinstance(i, dict) and not is_deleted(i)]
    lines = tuple(_line(item, key, version) for item in items)
    effective = text(raw.get("EffectiveDate"))
    billing = Address(
        street=text(raw.get("BillingStreet")), city=text(raw.get("BillingCity")),
        province=text(raw.get("BillingState")), zip=text(raw.get("BillingPostalCode")),
        country=text(raw.get("BillingCountry")),
    )
    return Order(
        key=key, version=version, name=text(raw.get("OrderNumber")), number=text(raw.get("OrderNumber")),
        customer_key=text(raw.get("AccountId")),
        financial_status=(text(raw.get("Status")) or "").lower() or None,
        processed_at=utc_timestamp(effective), processed_on=effective[:10] if effective else None,
        created_at=utc_timestamp(text(raw.get("CreatedDate"))),
        updated_at=utc_timestamp(text(raw.get("LastModifiedDate"))),
        note=text(raw.get("Description")) or text(raw.get("Name")),
        total_price=_total(items),
        billing_address=billing if any((billing.street, billing.city, billing.zip, billing.country)) else None,
        lines=lines,
    )


def _line(item: dict[str, Any], order_key: str, version: str) -> OrderLine:
    product = text(item.get("Product2Id"))
    return OrderLine(
        key=record_key(item), version=version, order_key=order_key, variant_key=product, product_key=product,
        title=text(item.get("Description")), name=text(item.get("OrderItemNumber")),
        quantity=quantity(item.get("Quantity")), unit_price=decimal_text(item.get("UnitPrice")),
        is_custom=product is None,
    )


def _total(items: list[dict[str, Any]]) -> str | None:
    """Sum of Quantity x UnitPrice; None when any line's amount is not a number (the validator judges it)."""
    total = Decimal(0)
    for item in items:
        try:
            total += Decimal(str(item.get("Quantity"))) * Decimal(str(item.get("UnitPrice")))
        except (InvalidOperation, ValueError):
            return None
    return _plain(total)


def decimal_text(value: Any) -> str | None:
    """A number as normalized decimal text ("10.5", "3"), the same from JSON (10.5) and from CSV ("10.50");
    blank -> None; anything else as it came, for the validator to judge."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return text(value)
    return _plain(number) if number.is_finite() else text(value)


def quantity(value: Any) -> int | str | None:
    """A whole quantity as int (Salesforce sends Quantity as a double: 2.0), a fractional one as text."""
    normalized = decimal_text(value)
    if normalized is None:
        return None
    try:
        number = Decimal(normalized)
    except InvalidOperation:
        return normalized
    return int(number) if number == number.to_integral_value() else normalized


def _plain(number: Decimal) -> str:
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _child(raw: dict[str, Any], name: str) -> dict[str, Any]:
    child = raw.get(name)
    return child if isinstance(child, dict) else {}


def _stamp(raw: dict[str, Any]) -> str:
    return utc_timestamp(text(raw.get("SystemModstamp"))) or MIN_VERSION


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None
