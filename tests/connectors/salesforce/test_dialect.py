"""Salesforce's validation dialect: UTF-16 lengths and relationship-name references."""

from __future__ import annotations

from ferry.connectors.salesforce.dialect import SALESFORCE, relationship_name
from ferry.core.dialect import PlainDialect
from ferry.core.records import Reference
from ferry.core.schema import FieldSchema, ObjectSchema


def test_relationship_names() -> None:
    assert relationship_name("AccountId", None) == "Account"
    assert relationship_name("Parent_Order__c", None) == "Parent_Order__r"
    schema = ObjectSchema("X", {"WhoId": FieldSchema("WhoId", "reference", relationship_name="Who")})
    assert relationship_name("WhoId", schema) == "Who"


def test_text_is_measured_and_cut_in_utf16_units() -> None:
    assert SALESFORCE.text_length("a🐟") == 3
    assert PlainDialect().text_length("a🐟") == 2
    assert SALESFORCE.truncate("ab🐟c", 3) == "ab"  # never half a surrogate pair
    assert SALESFORCE.max_char_units == 2


def test_a_reference_renders_as_relationship_dot_external_id_and_reads_back() -> None:
    schema = ObjectSchema(
        "Contact",
        {"AccountId": FieldSchema("AccountId", "reference", reference_to=["Account"], relationship_name="Account")},
    )
    ref = Reference("Account", "AccountId", "Ext__c")
    key = SALESFORCE.reference_key(ref, schema)
    assert key == "Account.Ext__c"
    assert SALESFORCE.reference_of(key, schema) == ref
    assert SALESFORCE.reference_key(Reference("Order", "Parent__c", "Ext__c"), None) == "Parent__r.Ext__c"
    assert SALESFORCE.reference_of("LastName", schema) is None
    # A polymorphic key names its parent's type itself.
    assert SALESFORCE.reference_of("Lead:Who.Email", None) == Reference("Lead", "Who", "Email")
