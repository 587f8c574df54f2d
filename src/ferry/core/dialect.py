"""A target's validation dialect: how it counts text, how it carries a reference to a parent.

The mapping layer validates records before any API call is spent on them (types, required fields,
restricted picklists). What differs between targets is given here by the sink: Salesforce counts length
in UTF-16 code units (an emoji is 2) and carries a parent reference as ``"Account.Ext__c"``; another target
counts code points and may carry it as a nested object. The type conversions themselves follow the core's
field types (``ferry.core.schema``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ferry.core.records import Reference
from ferry.core.schema import ObjectSchema


class Dialect(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def multi_value_separator(self) -> str:
        """How a multi-select value is joined into the one text the target stores (Salesforce: ";")."""
        ...

    @property
    def max_char_units(self) -> int:
        """The most units one character (code point) can count for in ``text_length`` (UTF-16: 2): a text of
        ``n`` characters is at most ``n * max_char_units`` long, so the validator passes short text uncounted."""
        ...

    def text_length(self, text: str) -> int:
        """The length the target's field limits are measured in."""
        ...

    def truncate(self, text: str, limit: int) -> str:
        """``text`` cut to at most ``limit`` in the target's unit, never inside a character."""
        ...

    def reference_key(self, ref: Reference, schema: ObjectSchema | None) -> str:
        """The mapped-record key a reference to a parent travels under (from the child's describe when known)."""
        ...

    def reference_of(self, key: str, schema: ObjectSchema | None) -> Reference | None:
        """The reference a mapped-record key stands for, or None for a plain field."""
        ...


@dataclass(frozen=True, slots=True)
class PlainDialect:
    """Code points for length; a reference as ``"<field>.<key_field>"``. For targets with no quirks of their own."""

    name: str = "plain"
    multi_value_separator: str = ";"
    max_char_units: int = 1

    def text_length(self, text: str) -> int:
        return len(text)

    def truncate(self, text: str, limit: int) -> str:
        return text[:limit]

    def reference_key(self, ref: Reference, schema: ObjectSchema | None) -> str:
        return f"{ref.field}.{ref.key_field}"

    def reference_of(self, key: str, schema: ObjectSchema | None) -> Reference | None:
        field, dot, key_field = key.partition(".")
        if not dot:
            return None
        described = schema.field(field) if schema is not None else None
        parent = described.reference_to[0] if described is not None and described.reference_to else field
        return Reference(parent, field, key_field)
