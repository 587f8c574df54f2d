"""Shopify-like ids: large ints that grow with creation time, unique per resource, with gaps between them."""

from __future__ import annotations

import random

# Starting points with the magnitudes real shops show today (13-14 digit ints).
ID_BASES: dict[str, int] = {
    "customer": 7_104_000_000_000,
    "address": 8_562_000_000_000,
    "product": 8_012_000_000_000,
    "variant": 44_120_000_000_000,
    "inventory_item": 46_310_000_000_000,
    "option": 10_230_000_000_000,
    "image": 3_120_000_000_000,
    "order": 5_560_000_000_000,
    "line_item": 13_740_000_000_000,
    "shipping_line": 4_310_000_000_000,
    "fulfillment": 4_870_000_000_000,
    "refund": 912_000_000_000,
    "refund_line_item": 523_000_000_000,
    "transaction": 6_420_000_000_000,
}


class IdSequence:
    """Strictly increasing ids with random gaps (ids of other shops interleave on Shopify's side)."""

    __slots__ = ("_rnd", "_step", "last")

    def __init__(self, rnd: random.Random, start: int, max_step: int = 4096) -> None:
        self._rnd = rnd
        self._step = max_step
        self.last = start

    def next(self) -> int:
        self.last += 1 + int(self._rnd.random() * self._step)
        return self.last


def gid(kind: str, ident: int) -> str:
    return f"gid://shopify/{kind}/{ident}"
