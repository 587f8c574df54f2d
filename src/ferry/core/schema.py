"""The target's objects and fields, as its describe reports them, in one shape every sink maps onto.

Field ``type`` names are the core's: ``string``, ``textarea``, ``email``, ``phone``, ``url``, ``picklist``,
``multipicklist``, ``id``, ``reference``, ``boolean``, ``int``, ``double``, ``currency``, ``percent``,
``date``, ``datetime``, ``time`` (Salesforce's describe names, which were the first ones ferry spoke; another
sink maps its own types onto the closest one). Lengths are in the unit the sink's dialect counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class FieldSchema:
    """One field as the target's describe reports it."""

    name: str
    type: str
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    external_id: bool = False
    id_lookup: bool = False
    unique: bool = False
    precision: int = 0
    scale: int = 0
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    picklist_values: list[str] = field(default_factory=list)
    restricted_picklist: bool = False

    @property
    def required_on_create(self) -> bool:
        return self.createable and not self.nillable and not self.defaulted_on_create and self.type != "boolean"


@dataclass(slots=True)
class ObjectSchema:
    name: str
    fields: dict[str, FieldSchema]
    createable: bool = True
    updateable: bool = True

    def field(self, name: str) -> FieldSchema | None:
        return self.fields.get(name)

    def by_relationship(self, relationship_name: str) -> FieldSchema | None:
        for f in self.fields.values():
            if f.relationship_name == relationship_name:
                return f
        return None
