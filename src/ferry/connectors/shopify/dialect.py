"""Shopify's validation dialect for the sink (``ferry.core.dialect.Dialect``).

* Lengths are in characters (code points): Shopify's "is too long (maximum is 255 characters)".
* Tags are a list on the wire; a multi-value field travels joined by ``,`` (Shopify's own tag separator) and
  the sink splits it again.
* Dotted fields (``address.city``) are nested fields of the customer's address, never references: the Customer
  writes nothing that points at another object, so no key is a reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.core.records import Reference
from ferry.core.schema import ObjectSchema


@dataclass(frozen=True, slots=True)
class ShopifyDialect:
    name: str = "shopify"
    multi_value_separator: str = ","
    max_char_units: int = 1

    def text_length(self, text: str) -> int:
        return len(text)

    def truncate(self, text: str, limit: int) -> str:
        return text[: max(limit, 0)]

    def reference_key(self, ref: Reference, schema: ObjectSchema | None) -> str:
        return f"{ref.field}@{ref.key_field}"

    def reference_of(self, key: str, schema: ObjectSchema | None) -> Reference | None:
        return None


SHOPIFY = ShopifyDialect()
