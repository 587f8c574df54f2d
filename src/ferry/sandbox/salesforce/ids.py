"""Salesforce record ids: 15-char case-sensitive ids and their 18-char case-safe form.

An 18-char id is the 15-char id plus a 3-char suffix that encodes, for each
5-char block, which characters are upper case. That makes the id unique even
when compared case-insensitively (Excel, SQL collations). We implement the real
algorithm so ids produced here pass any client-side checksum check.
"""

from __future__ import annotations

import re

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_CHARS = _BASE62
_ID15 = re.compile(r"^[a-zA-Z0-9]{15}$")
_ID18 = re.compile(r"^[a-zA-Z0-9]{18}$")


_UPPER_BITS = str.maketrans({c: ("1" if "A" <= c <= "Z" else "0") for c in _BASE62_CHARS})


def checksum_suffix(id15: str) -> str:
    """The 3-char case-safe suffix of a 15-char id."""
    # Each 5-char block becomes a 5-bit number: bit i is set when char i is upper case.
    bits = id15.translate(_UPPER_BITS)
    return (
        _SUFFIX_ALPHABET[int(bits[4::-1], 2)]
        + _SUFFIX_ALPHABET[int(bits[9:4:-1], 2)]
        + _SUFFIX_ALPHABET[int(bits[14:9:-1], 2)]
    )


def to18(id15: str) -> str:
    return id15 + checksum_suffix(id15)


def normalize_id(value: str) -> str | None:
    """Return the canonical 18-char id for a 15- or 18-char id, or None if it is not an id.

    An 18-char id is accepted only when its suffix matches (case-insensitively,
    as the org does); its first 15 characters are what identify the record.
    """
    if _ID18.match(value):
        id15 = value[:15]
        if checksum_suffix(id15) != value[15:].upper():
            return None
        return to18(id15)
    if _ID15.match(value):
        return to18(value)
    return None


def key_prefix(record_id: str) -> str:
    return record_id[:3]


def _base62(n: int, width: int) -> str:
    chars = []
    for _ in range(width):
        n, rem = divmod(n, 62)
        chars.append(_BASE62[rem])
    if n:
        raise OverflowError("id counter exhausted")
    return "".join(reversed(chars))


class IdFactory:
    """Mints ids like an org: key prefix, a 2-char pod, a reserved char, then a base-62 serial.

    The pod characters come from the sandbox seed so two sandboxes never mint the same ids.
    """

    def __init__(self, seed: int = 0) -> None:
        self._pod = _base62(seed % (62 * 62), 2)
        self._counters: dict[str, int] = {}
        # Bulk loads mint an id per row: format the serial's high digits once per 3,844 ids.
        self._low = [_base62(n, 2) for n in range(62 * 62)]
        self._high: dict[str, tuple[int, str]] = {}

    def new(self, prefix: str) -> str:
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        high_n, low_n = divmod(n, 62 * 62)
        cached = self._high.get(prefix)
        if cached is None or cached[0] != high_n:
            cached = self._high[prefix] = (high_n, f"{prefix}{self._pod}0{_base62(high_n, 7)}")
        return to18(cached[1] + self._low[low_n])

    def counters(self) -> dict[str, int]:
        """The serial last minted per key prefix (persisted by persist.py)."""
        return self._counters

    def restore(self, counters: dict[str, int]) -> None:
        self._counters.update(counters)
        self._high.clear()

    def reset(self) -> None:
        self._counters.clear()
        self._high.clear()
