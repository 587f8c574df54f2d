"""Hand-built describes, shaped like Salesforce's for the objects the example pipeline writes."""

from __future__ import annotations

from ferry.core.schema import FieldSchema, ObjectSchema


def ext_id(name: str) -> FieldSchema:
    return FieldSchema(name, "string", 255, external_id=True, id_lookup=True, unique=True)


def ref(name: str, target: str, *, required: bool = False, updateable: bool = True) -> FieldSchema:
    return FieldSchema(
        name,
        "reference",
        18,
        nillable=not required,
        updateable=updateable,
        reference_to=[target],
        relationship_name=target,
        id_lookup=True,
    )


def schema(name: str, *fields: FieldSchema) -> ObjectSchema:
    return ObjectSchema(name, {f.name: f for f in fields})


ACCOUNT = schema(
    "Account",
    FieldSchema("Id", "id", 18, nillable=False, createable=False, updateable=False, defaulted_on_create=True),
    ext_id("Shopify_Customer_Id__c"),
    FieldSchema("Name", "string", 255, nillable=False),
    FieldSchema("Phone", "phone", 40),
    FieldSchema("BillingStreet", "textarea", 255),
    FieldSchema("BillingCity", "string", 40),
    FieldSchema("BillingState", "string", 80),
    FieldSchema("BillingPostalCode", "string", 20),
    FieldSchema("BillingCountry", "string", 80),
    FieldSchema("Description", "textarea", 32000),
    FieldSchema("OwnerId", "reference", 18, nillable=False, defaulted_on_create=True, relationship_name="Owner"),
)

CONTACT = schema(
    "Contact",
    ext_id("Shopify_Customer_Id__c"),
    ref("AccountId", "Account"),
    FieldSchema("FirstName", "string", 40),
    FieldSchema("LastName", "string", 80, nillable=False),
    FieldSchema("Email", "email", 80),
    FieldSchema("Phone", "phone", 40),
    FieldSchema("MailingCity", "string", 40),
    FieldSchema("MailingCountry", "string", 80),
    FieldSchema("HasOptedOutOfEmail", "boolean", nillable=False, defaulted_on_create=True),
)

PRODUCT2 = schema(
    "Product2",
    ext_id("Shopify_Product_Id__c"),
    FieldSchema("Name", "string", 255, nillable=False),
    FieldSchema("ProductCode", "string", 255),
    FieldSchema("Family", "picklist", 255, picklist_values=["None"]),
    FieldSchema("Description", "textarea", 4000),
    FieldSchema("IsActive", "boolean", nillable=False, defaulted_on_create=True),
)

PRICEBOOK_ENTRY = schema(
    "PricebookEntry",
    ext_id("Shopify_Variant_Id__c"),
    ref("Product2Id", "Product2", required=True, updateable=False),
    ref("Pricebook2Id", "Pricebook2", required=True, updateable=False),
    FieldSchema("UnitPrice", "currency", precision=18, scale=2, nillable=False),
    FieldSchema("IsActive", "boolean", nillable=False, defaulted_on_create=True),
)

ORDER = schema(
    "Order",
    ext_id("Shopify_Order_Id__c"),
    ref("AccountId", "Account"),
    ref("Pricebook2Id", "Pricebook2"),
    FieldSchema("Name", "string", 80),
    FieldSchema("EffectiveDate", "date", nillable=False),
    FieldSchema(
        "Status",
        "picklist",
        40,
        nillable=False,
        defaulted_on_create=True,
        picklist_values=["Draft", "Activated"],
        restricted_picklist=True,
    ),
    FieldSchema("Description", "textarea", 32000),
    FieldSchema("BillingStreet", "textarea", 255),
    FieldSchema("BillingCity", "string", 40),
    FieldSchema("BillingPostalCode", "string", 20),
    FieldSchema("BillingCountry", "string", 80),
    FieldSchema("Shopify_Financial_Status__c", "string", 40),
    FieldSchema("Shopify_Presentment_Currency__c", "string", 3),
    FieldSchema("Shopify_Total_Price__c", "currency", precision=18, scale=2),
    FieldSchema("Shopify_Total_Refunded__c", "currency", precision=18, scale=2),
    FieldSchema("Shopify_Cancelled_At__c", "datetime"),
)

ORDER_ITEM = schema(
    "OrderItem",
    ext_id("Shopify_Line_Item_Id__c"),
    ref("OrderId", "Order", required=True, updateable=False),
    ref("PricebookEntryId", "PricebookEntry", required=True, updateable=False),
    FieldSchema("Quantity", "double", precision=18, scale=2, nillable=False),
    FieldSchema("UnitPrice", "currency", precision=18, scale=2, nillable=False),
    FieldSchema("Description", "string", 255),
)

SCHEMAS = {s.name: s for s in (ACCOUNT, CONTACT, PRODUCT2, PRICEBOOK_ENTRY, ORDER, ORDER_ITEM)}
