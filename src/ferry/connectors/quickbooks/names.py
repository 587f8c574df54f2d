"""Names QuickBooks accepts, and the record a pipeline created under a name it no longer has.

**Separators.** A Customer's ``DisplayName`` and an Item's ``Name`` may not hold ``:`` (QuickBooks' parent:child
separator in ``FullyQualifiedName``), a tab or a newline: Intuit refuses them with ``2040 Invalid String``.
Source data holds them (a guest checkout keyed ``guest:<email>``, a product called "Cable: USB-C"), so the
sink cleans a name before it writes it, deterministically: ``:`` becomes ``-`` and a tab, a newline or a
carriage return a space. The same source value always gives the same name, so lookups and latest-wins updates
stay stable; two source names differing only there would become one (QuickBooks then refuses the second as a
duplicate name and the sink finds and updates the first: say so in the mapping if that can happen).

**The source key.** ``SourceKey`` is not a QuickBooks field: a mapping sets it to the record's source key
(``SourceKey: key``) and the sink never sends it. It lets the sink find a record whose create was committed
but whose answer was lost, when the record was renamed before the next attempt: the lookup by the new
DisplayName misses, Intuit's ``requestid`` is a new one (the body changed), and a second record would be
created. Before creating, the sink reads once per run the records of that object created in the last
``lost_create_window_hours`` (``MetaData.CreateTime``) and adopts the one whose lookup field holds the
(cleaned) source key as a whole word, *in the same place* as the new name holds it: ``Ada Lovelace (123)``
holds ``123`` where ``Ada King (123)`` does (at the end, after ``(``); ``Bob (1234)`` does not hold it, and
``456 Cable for model 123`` holds it but not where ``123 Cable`` does (first), so neither is taken for it.
"""

from __future__ import annotations

import re

SOURCE_KEY = "SourceKey"
# The name field QuickBooks keeps unique, per name-list entity the sink writes.
NAME_FIELDS = {"Customer": "DisplayName", "Vendor": "DisplayName", "Employee": "DisplayName", "Item": "Name"}
_SEPARATORS = str.maketrans({":": "-", "\t": " ", "\n": " ", "\r": " "})
_WORD = r"[0-9A-Za-z]"


def clean_name(value: str) -> str:
    """A name QuickBooks accepts: ``guest:ada@example.com`` -> ``guest-ada@example.com``."""
    return value.translate(_SEPARATORS)


def holds_key(name: str, key: str) -> bool:
    """Whether ``name`` holds the (cleaned) source key as a whole word (not inside a longer id)."""
    if not key:
        return False
    pattern = rf"(?<!{_WORD}){re.escape(clean_name(key))}(?!{_WORD})"
    return re.search(pattern, name, re.IGNORECASE) is not None


def same_place(name: str, key: str, new_name: str) -> bool:
    """Whether ``name`` (a record's lookup value) holds the source key where ``new_name`` holds it: at the end
    (with the character before it: ``(123)``), or first (with the character after it: ``123 ``); anywhere as a
    whole word when ``new_name`` holds it elsewhere or not at all (cut by a length limit)."""
    if not holds_key(name, key):
        return False
    k, lowered, new = clean_name(key).lower(), name.lower(), new_name.lower()
    at = new.find(k)
    if at < 0:
        return True
    if not re.search(_WORD, new[at + len(k):]):  # nothing but punctuation after it: the name ends with it
        return lowered.endswith(new[max(0, at - 1):])
    if at == 0:
        return lowered.startswith(new[: len(k) + 1])
    return True
