from __future__ import annotations

from ferry.sandbox.salesforce.ids import IdFactory, checksum_suffix, normalize_id, to18


def test_checksum_matches_known_real_ids() -> None:
    # The REST guide's create example returns 001D000000IqhSLIAZ for 001D000000IqhSL.
    assert to18("001D000000IqhSL") == "001D000000IqhSLIAZ"
    # VALDt: V, A, L, D upper case -> bits 0-3 -> 15 -> "P"
    assert to18("0015000000VALDt") == "0015000000VALDtAAP"
    assert checksum_suffix("000000000000000") == "AAA"
    assert checksum_suffix("AAAAAAAAAAAAAAA") == "555"


def test_normalize_accepts_15_and_18_and_rejects_bad_suffix() -> None:
    assert normalize_id("001D000000IqhSL") == "001D000000IqhSLIAZ"
    assert normalize_id("001D000000IqhSLiaz") == "001D000000IqhSLIAZ"  # suffix is case-insensitive
    assert normalize_id("001D000000IqhSLAAA") is None
    assert normalize_id("not-an-id") is None


def test_factory_mints_valid_unique_ids_per_prefix_and_seed() -> None:
    a, b = IdFactory(0), IdFactory(1)
    ids = {a.new("001") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 18 and i.startswith("001") and normalize_id(i) == i for i in ids)
    assert a.new("003") != b.new("003")
