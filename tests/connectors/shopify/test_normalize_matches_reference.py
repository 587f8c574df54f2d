"""The normalizer's fast builders give records equal, field for field, to the previous ones (kept in reference/)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from ferry.connectors.shopify import normalize as shopify
from ferry.model import values
from ferry.sandbox.shopify.generator import generate_store
from tests.connectors.shopify.reference import shopify_before, values_before

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = {"customer": "customers", "order": "orders", "product": "products"}

TIMESTAMPS = [
    "2026-03-04T10:11:12-05:00", "2026-03-04T23:59:59-05:00", "2026-03-04T00:00:00+01:00",
    "2026-03-04T10:11:12+00:00", "2026-03-04T10:11:12-00:30", "2026-03-04T24:00:00-05:00",
    "2026-03-04T10:60:00-05:00", "2026-03-04T+1:11:12-05:00", "2026-03-04T10:11:12+25:00",
    "2026-03-04T10:11:12-05:99", "2026-03-04T10:11:12-5:000", "2026-03-04T10:11x12-05:00",
    "2026-03-04T10 11:12-05:00", "abcd-03-04T10:11:12-05:00", "2026-02-29T10:11:12-05:00",
    "2026-03-04T10:11:12.5-05:00", "2026-03-04T10:11:12Z", "2026-03-04", " 2026-03-04T10:11:12-05:00 ",
    "", "   ", "not a date", None, 0, 1.5, True,
]
AWKWARD: list[Any] = [
    None, "", "  ", " x ", "0", "12.50", "1,234.00", 12, 12.5, -0.0, True, False, [], {}, ["a", " b ", ""], "a, b,,c",
    "<p>Hi &amp; bye</p><script>x</script>", "Zürich 🚢", *TIMESTAMPS[:8],
]


def same(stream: str, raw: dict[str, Any]) -> None:
    assert list(shopify.normalize(stream, raw)) == list(shopify_before.normalize(stream, raw)), raw


def mangle(value: Any, rnd: random.Random, depth: int = 0) -> Any:
    """A messier copy: keys dropped, values swapped for awkward ones, all the way down."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            roll = rnd.random()
            if roll < 0.08:
                continue
            out[k] = rnd.choice(AWKWARD) if roll < 0.2 else mangle(v, rnd, depth + 1)
        return out
    if isinstance(value, list):
        return [mangle(v, rnd, depth + 1) for v in value if rnd.random() > 0.1]
    return value


def test_a_generated_store_and_the_fixtures_normalize_to_equal_records() -> None:
    store = generate_store(seed=3, customers=200, products=40, orders=400)
    for stream in ("customers", "products", "orders"):
        for raw in store.records(stream):
            same(stream, raw)
    for path in sorted(FIXTURES.glob("*.json")):
        same(STREAMS[path.stem.split("_")[0]], json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("seed", range(5))
def test_mangled_records_normalize_to_equal_records(seed: int) -> None:
    rnd = random.Random(seed)
    store = generate_store(seed=seed, customers=60, products=12, orders=120)
    for stream in ("customers", "products", "orders"):
        for raw in store.records(stream):
            for _ in range(3):
                same(stream, mangle(copy.deepcopy(raw), rnd))


DAYS = ["2026-03-04", "2026-12-31", "2027-01-01", "2026-02-28", "2028-02-29", "2026-02-29", "2026-04-31", "0001-01-01",
        "9999-12-31", "2026-13-01", "2026-00-10", "2026-3-041", "20260304xx"]


def test_timestamps_and_local_dates_convert_as_before() -> None:
    cases: list[Any] = list(TIMESTAMPS)
    rnd = random.Random(1)
    for _ in range(20_000):  # every time of day and offset, both signs, days that roll over months and years
        cases.append(f"{rnd.choice(DAYS)}T{rnd.randrange(26):02d}:{rnd.randrange(62):02d}:{rnd.randrange(62):02d}"
                     f"{rnd.choice('+-')}{rnd.randrange(26):02d}:{rnd.randrange(62):02d}")
    for ts in cases:
        try:
            expected: Any = values_before.utc_timestamp(ts)
        except OverflowError as err:  # datetime's own limit at year 1 and 9999: the same failure
            with pytest.raises(type(err)):
                values.utc_timestamp(ts)
        else:
            assert values.utc_timestamp(ts) == expected, ts
        assert shopify._local_date(ts) == shopify_before._local_date(ts), ts


def test_a_timestamp_with_any_one_character_changed_converts_as_before() -> None:
    """Every position of the usual shapes swapped for a digit, a sign, a separator or a letter."""
    for base in ("2026-03-04T10:11:12-05:00", "2026-03-04T22:11:12-05:00", "2026-03-04T01:11:12+05:30",
                 "2026-03-04T10:11:12+00:00"):
        for i in range(len(base)):
            for ch in "09+-:Tx .Z":
                ts = base[:i] + ch + base[i + 1:]
                assert values.utc_timestamp(ts) == values_before.utc_timestamp(ts), ts
                assert shopify._local_date(ts) == shopify_before._local_date(ts), ts
