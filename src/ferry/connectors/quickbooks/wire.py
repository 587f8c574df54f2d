"""A mapped record -> the JSON body QuickBooks takes: dotted keys nested, references as ``{"value": id}``.

References (``CustomerRef@DisplayName``) are resolved before this by the sink (``refs.ReferenceResolver``)
and arrive here as ids. A ``None`` is left out of the body: the sink writes sparse updates, in which an
absent field keeps its value (clearing a field in QuickBooks is not done; see docs/connectors/quickbooks.md).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ferry.connectors.quickbooks.dialect import REF_MARK

Record = dict[str, Any]
_NUMBERS = frozenset({"Amount", "Qty", "UnitPrice", "DiscountPercent"})
_CENT = Decimal("0.01")


def nest(flat: Record) -> Record:
    """``{"BillAddr.City": "Oslo", "ItemRef": "7"}`` -> ``{"BillAddr": {"City": "Oslo"}, "ItemRef": {"value": "7"}}``;
    lists of sub-records (an Invoice's ``Line``) are nested the same way, line by line."""
    body: Record = {}
    for key, value in flat.items():
        if value is None:
            continue
        path = key.partition(REF_MARK)[0].split(".")
        leaf = path[-1]
        if isinstance(value, list):
            value = [sales_line(nest(v)) if isinstance(v, dict) else v for v in value]
        elif leaf.endswith("Ref") and not isinstance(value, dict):
            value = {"value": str(value)}
        elif leaf in _NUMBERS:
            value = _number(value)
        node = body
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[leaf] = value
    return body


def sales_line(line: Record) -> Record:
    """A sales line with its ``Amount`` computed from ``Qty * UnitPrice`` (cents, half up) when not given: the
    amount QuickBooks checks it against (6070), so a mapping need not multiply."""
    detail = line.get("SalesItemLineDetail")
    if isinstance(detail, dict) and line.get("Amount") is None:
        qty, price = detail.get("Qty"), detail.get("UnitPrice")
        if isinstance(qty, int | float) and isinstance(price, int | float):
            amount = (Decimal(str(qty)) * Decimal(str(price))).quantize(_CENT, ROUND_HALF_UP)
            line["Amount"] = float(amount)
    if "SalesItemLineDetail" in line:
        line.setdefault("DetailType", "SalesItemLineDetail")
    return line


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return value  # QuickBooks judges it
        return int(number) if number == number.to_integral_value() and "." not in value else float(number)
    return value
