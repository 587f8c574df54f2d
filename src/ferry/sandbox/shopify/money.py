"""Money as Shopify serializes it: decimal strings, and ``*_set`` bags with shop and presentment amounts.

Amounts are carried as integer cents of the shop currency (USD) so sums are exact; the
presentment side is converted at a fixed rate and rounded to the currency's minor unit.
"""

from __future__ import annotations

from typing import Any

SHOP_CURRENCY = "USD"


# Memoized: a store repeats the same few thousand amounts millions of times, and sharing the
# strings and money bags keeps a 100,000-order store small and fast to build. Treat nested
# objects of generated records as read-only (the sandbox replaces, never mutates, them).
_DEC: dict[int, str] = {}


def dec(cents: int) -> str:
    """``19900`` -> ``"199.00"``."""
    text = _DEC.get(cents)
    if text is None:
        sign = "-" if cents < 0 else ""
        whole, frac = divmod(abs(cents), 100)
        text = f"{sign}{whole}.{frac:02d}"
        if len(_DEC) < 1_000_000:
            _DEC[cents] = text
    return text


class Presentment:
    """The currency a buyer saw; converts shop cents into presentment amounts."""

    __slots__ = ("_sets", "code", "digits", "rate_per_mille")

    def __init__(self, code: str = SHOP_CURRENCY, rate_per_mille: int = 1000, digits: int = 2) -> None:
        self.code = code
        self.rate_per_mille = rate_per_mille
        self.digits = digits
        self._sets: dict[int, dict[str, Any]] = {}

    def amount(self, cents: int) -> str:
        if self.rate_per_mille == 1000 and self.digits == 2:
            return dec(cents)
        # minor units = cents * rate / 1000 * 10**digits / 100, rounded half away from zero
        num = cents * self.rate_per_mille * 10**self.digits
        den = 1000 * 100
        minor = (abs(num) + den // 2) // den * (1 if num >= 0 else -1)
        if self.digits == 0:
            return f"{minor}.0"  # Shopify writes zero-decimal currencies with one trailing ".0"
        whole, frac = divmod(abs(minor), 10**self.digits)
        return f"{'-' if minor < 0 else ''}{whole}.{frac:0{self.digits}d}"

    def money_set(self, cents: int) -> dict[str, Any]:
        """The ``*_set`` bag for ``cents`` (shared between records: do not mutate)."""
        bag = self._sets.get(cents)
        if bag is None:
            bag = self._make_set(cents)
            if len(self._sets) < 200_000:
                self._sets[cents] = bag
        return bag

    def _make_set(self, cents: int) -> dict[str, Any]:
        return {
            "shop_money": {"amount": dec(cents), "currency_code": SHOP_CURRENCY},
            "presentment_money": {"amount": self.amount(cents), "currency_code": self.code},
        }


USD = Presentment()
