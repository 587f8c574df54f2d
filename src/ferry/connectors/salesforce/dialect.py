"""Salesforce's validation dialect (``ferry.core.dialect.Dialect``): how the org counts text and names a parent.

* Field lengths are counted in UTF-16 code units (an emoji outside the Basic Multilingual Plane is 2), so a
  text of ``n`` characters is ``n`` to ``2n`` units long.
* A reference to a parent travels as ``"<RelationshipName>.<ExternalIdField>"`` (the Bulk API 2.0 CSV column
  form; the REST paths nest it from there, ``collections.to_rest_record``). The relationship name is the one
  describe gives the reference field; without a describe, Salesforce's own naming convention:
  ``AccountId`` -> ``Account``, ``Foo__c`` -> ``Foo__r``.
* Multi-select picklist values are joined with ``;``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.core.records import Reference
from ferry.core.schema import ObjectSchema


def utf16_length(text: str) -> int:
    if text.isascii():  # one unit per character; CPython answers isascii from a flag, without a scan
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def truncate_utf16(text: str, limit: int) -> str:
    """The longest prefix of at most ``limit`` UTF-16 units, never splitting a surrogate pair."""
    if limit <= 0:
        return ""
    # Cut the UTF-16 encoding (C speed, not a loop over a 32,000-character note); a cut that lands
    # between the two halves of a pair leaves a lone high surrogate, which is dropped with the pair.
    head = text.encode("utf-16-le")[: 2 * limit]
    if head and 0xD8 <= head[-1] <= 0xDB:
        head = head[:-2]
    return head.decode("utf-16-le")


def relationship_name(field_name: str, schema: ObjectSchema | None) -> str:
    """From describe when known; else Salesforce's convention: AccountId -> Account, Foo__c -> Foo__r."""
    described = schema.field(field_name) if schema is not None else None
    if described is not None and described.relationship_name:
        return described.relationship_name
    if field_name.endswith("__c"):
        return field_name[:-3] + "__r"
    if field_name.endswith("Id") and len(field_name) > 2:
        return field_name[:-2]
    return field_name


@dataclass(frozen=True, slots=True)
class SalesforceDialect:
    name: str = "salesforce"
    multi_value_separator: str = ";"
    max_char_units: int = 2  # a code point is one or two UTF-16 units

    def text_length(self, text: str) -> int:
        return utf16_length(text)

    def truncate(self, text: str, limit: int) -> str:
        return truncate_utf16(text, limit)

    def reference_key(self, ref: Reference, schema: ObjectSchema | None) -> str:
        return f"{relationship_name(ref.field, schema)}.{ref.key_field}"

    def reference_of(self, key: str, schema: ObjectSchema | None) -> Reference | None:
        """``"Account.Ext__c"`` (or the polymorphic ``"Lead:Who.Email"``) -> the reference it stands for."""
        rel, dot, key_field = key.partition(".")
        if not dot:
            return None
        parent_type, colon, rel_name = rel.partition(":")
        if not colon:
            rel_name = rel
        described = schema.by_relationship(rel_name) if schema is not None else None
        field = described.name if described is not None else rel_name
        parent = parent_type or (described.reference_to[0] if described is not None and described.reference_to else "")
        return Reference(parent or rel_name, field, key_field)


SALESFORCE = SalesforceDialect()
