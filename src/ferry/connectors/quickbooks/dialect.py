"""QuickBooks' validation dialect (``ferry.core.dialect.Dialect``).

* Lengths are counted in characters (code points): Intuit's "Max:21 supported. Supplied length:N".
* A reference travels as ``"<Field>@<by>"`` (``CustomerRef@DisplayName``, inside a line
  ``SalesItemLineDetail.ItemRef@Name``): the ``@`` keeps it apart from a nested field's dots. The value is the
  parent's source key, which the sink resolves through ferry's id map, or (a parent this pipeline does not
  write) the value of the parent's ``by`` field, resolved by a query. On the wire it becomes ``{"value": id}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.core.records import Reference
from ferry.core.schema import ObjectSchema

REF_MARK = "@"


def parent_of(field: str, schema: ObjectSchema | None) -> str:
    """``CustomerRef`` -> ``Customer`` (from the schema when it knows the field)."""
    described = schema.field(field) if schema is not None else None
    if described is not None and described.reference_to:
        return described.reference_to[0]
    last = field.rsplit(".", 1)[-1]
    return last[:-3] if last.endswith("Ref") and len(last) > 3 else last


@dataclass(frozen=True, slots=True)
class QuickBooksDialect:
    name: str = "quickbooks"
    multi_value_separator: str = ","
    max_char_units: int = 1

    def text_length(self, text: str) -> int:
        return len(text)

    def truncate(self, text: str, limit: int) -> str:
        return text[: max(limit, 0)]

    def reference_key(self, ref: Reference, schema: ObjectSchema | None) -> str:
        return f"{ref.field}{REF_MARK}{ref.key_field}"

    def reference_of(self, key: str, schema: ObjectSchema | None) -> Reference | None:
        field, mark, key_field = key.partition(REF_MARK)
        if not mark:
            return None
        return Reference(parent_of(field, schema), field, key_field)


QUICKBOOKS = QuickBooksDialect()
