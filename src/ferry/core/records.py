"""What the engine hands a sink: mapped records, and references to parent records by their key.

A mapped record is a flat dict from the target's field names to values (``str | int | float | bool |
None``; dates and datetimes as ISO-8601 strings; ``None`` means "set this field to null"). A reference to a
parent is a structured ``Reference`` in the mapping; the sink's dialect renders it as the key the record
carries it under (Salesforce: ``"Account.Shopify_Customer_Id__c"``, the Bulk API 2.0 CSV column form), so
the per-record path stays a plain dict and each sink reads its own form back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MappedRecord = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reference:
    """A child's pointer at a parent record of the target, by the parent's key.

    ``object`` is the parent's target object (``Account``), ``field`` the child's reference field
    (``AccountId``), ``key_field`` the parent's external-id field the value is matched on
    (``Shopify_Customer_Id__c``). The value itself travels in the mapped record.
    """

    object: str
    field: str
    key_field: str


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One record's identity in ferry's state: its key (the source's stable id) and its version.

    Versions are fixed-width strings that order as the source's own updated_at does, so "latest wins"
    is a string comparison (see ``ferry.model.values.version_of``).
    """

    key: str
    version: str
