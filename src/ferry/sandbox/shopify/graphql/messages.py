"""graphql-core's validation messages in the words Shopify's graphql-ruby uses where clients look."""

from __future__ import annotations

import re
from typing import Any

_UNDEFINED_FIELD = re.compile(r"^Cannot query field '(?P<field>[^']+)' on type '(?P<type>[^']+)'\.")


def undefined_field(message: str) -> tuple[str, dict[str, Any]] | None:
    """``Field 'x' doesn't exist on type 'Y'`` and its ``undefinedField`` extensions, for graphql-core's
    ``Cannot query field 'x' on type 'Y'. Did you mean ...?``; None for any other message."""
    m = _UNDEFINED_FIELD.match(message)
    if m is None:
        return None
    return (f"Field '{m['field']}' doesn't exist on type '{m['type']}'",
            {"code": "undefinedField", "typeName": m["type"], "fieldName": m["field"]})
