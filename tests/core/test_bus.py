"""The bus port's vocabulary: partitions stable and spread, subjects safe."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ferry.core.bus import BusConfigError, partition_of, subject_token, work_subject


def test_a_key_always_lands_in_the_same_partition_in_any_process() -> None:
    here = [partition_of(f"gid://shopify/Order/{i}", 8) for i in range(50)]
    code = (
        "from ferry.core.bus import partition_of\n"
        "print([partition_of(f'gid://shopify/Order/{i}', 8) for i in range(50)])"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PYTHONPATH": src})
    assert str(here) == there.stdout.strip()  # CRC-32, not hash(): PYTHONHASHSEED does not move keys


def test_keys_spread_over_the_partitions() -> None:
    counts = Counter(partition_of(f"order-{i}", 8) for i in range(8000))
    assert set(counts) == set(range(8))
    assert min(counts.values()) > 800  # roughly even (1000 each)


def test_subjects_hold_one_token_per_name() -> None:
    assert work_subject("shop.to sf", "Order*", 3) == "ferry.work.shop_to_sf.Order_.3"
    assert subject_token("orders-2024_eu") == "orders-2024_eu"
    with pytest.raises(BusConfigError):
        subject_token("")
    with pytest.raises(BusConfigError):
        partition_of("k", 0)
