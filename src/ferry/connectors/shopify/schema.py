"""What ferry writes to Shopify, as ``ObjectSchema``s (the GraphQL Admin API's ``CustomerInput``).

Field names are ``CustomerInput``'s; ``address.<field>`` fields are one ``MailingAddressInput`` (the canonical
customer carries one address), sent as ``addresses: [{...}]``, which replaces the customer's addresses: ferry
owns the address it maps. Lengths are Shopify's documented maximums (255 for names and email).

The lookup field is ``email``: Shopify keeps it unique per shop ("Email has already been taken"), so a create
whose answer was lost meets that error on its next attempt and the sink finds the customer by it instead of
creating a second one. ``phone`` is unique per shop too and serves the same way for a customer without email.
"""

from __future__ import annotations

from ferry.core.schema import FieldSchema, ObjectSchema

LOOKUP_FIELDS = ("email", "phone")  # unique per shop, in the order the sink tries them


def _text(name: str, length: int = 255) -> FieldSchema:
    return FieldSchema(name, "string", length)


CUSTOMER = ObjectSchema("Customer", {f.name: f for f in [
    FieldSchema("email", "email", 255, id_lookup=True, unique=True),
    FieldSchema("phone", "phone", 40, id_lookup=True, unique=True),
    _text("firstName"), _text("lastName"),
    FieldSchema("note", "textarea", 5000),
    FieldSchema("tags", "multipicklist", 5000),
    _text("locale", 20),
    FieldSchema("taxExempt", "boolean"),
    _text("address.address1"), _text("address.address2"), _text("address.city"), _text("address.company"),
    FieldSchema("address.countryCode", "string", 2), _text("address.provinceCode", 10), _text("address.zip", 20),
    _text("address.firstName"), _text("address.lastName"), FieldSchema("address.phone", "phone", 40),
]})

SCHEMAS: dict[str, ObjectSchema] = {"Customer": CUSTOMER}
