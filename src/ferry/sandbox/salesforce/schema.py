"""The org's metadata: sObjects and fields, loaded from schema.yaml (plus an optional user file).

Salesforce API names are case-insensitive (`name`, `NAME` and `Name` are the
same field), so every lookup goes through lower-cased dicts while records and
describe output use the canonical spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

STRING_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox", "encryptedstring"}
)
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})
FIELD_TYPES = STRING_TYPES | NUMBER_TYPES | {"boolean", "date", "datetime", "time", "reference", "id"}

_SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "int": "xsd:int", "double": "xsd:double",
    "currency": "xsd:double", "percent": "xsd:double", "date": "xsd:date", "datetime": "xsd:dateTime",
    "time": "xsd:time",
}


@dataclass(slots=True, eq=False)
class PicklistValue:
    value: str
    label: str
    active: bool = True
    default: bool = False


@dataclass(slots=True, eq=False)
class FieldSchema:
    name: str
    type: str
    label: str
    length: int = 0
    precision: int = 0
    scale: int = 0
    digits: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    default_value: Any = None
    external_id: bool = False
    id_lookup: bool = False
    unique: bool = False
    case_sensitive: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    cascade_delete: bool = False
    picklist: tuple[PicklistValue, ...] = ()
    restricted_picklist: bool = False
    auto_number: bool = False
    calculated: bool = False
    name_field: bool = False
    custom: bool = False
    coercer: Any = None  # set by validate.Coercers on first use (the hot path reads it directly)

    @property
    def soap_type(self) -> str:
        return _SOAP_TYPES.get(self.type, "xsd:string")

    @property
    def indexed(self) -> bool:
        """Fields the store keeps a value index for: upsert keys, unique checks, relationship lookups."""
        return self.external_id or self.id_lookup or self.unique

    @property
    def required_on_create(self) -> bool:
        # The org's rule: not nillable, createable, and nothing fills it in for you.
        return not self.nillable and self.createable and not self.defaulted_on_create and self.type != "boolean"


@dataclass(slots=True, eq=False)
class SObjectSchema:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    custom: bool = False
    owned: bool = False
    fields: dict[str, FieldSchema] = field(default_factory=dict)  # canonical name -> field, in describe order
    by_lower: dict[str, FieldSchema] = field(default_factory=dict)
    relationships: dict[str, FieldSchema] = field(default_factory=dict)  # lower relationshipName -> reference field

    def field(self, name: str) -> FieldSchema | None:
        return self.by_lower.get(name.lower())

    def relationship(self, name: str) -> FieldSchema | None:
        return self.relationships.get(name.lower())

    def add_field(self, f: FieldSchema) -> None:
        old = self.by_lower.get(f.name.lower())
        if old is not None:
            self.fields.pop(old.name, None)
            if old.relationship_name:
                self.relationships.pop(old.relationship_name.lower(), None)
        self.fields[f.name] = f
        self.by_lower[f.name.lower()] = f
        if f.relationship_name:
            self.relationships[f.relationship_name.lower()] = f


@dataclass(slots=True)
class ChildRelationship:
    child: str
    field: str
    relationship_name: str | None
    cascade_delete: bool


class Schema:
    """All sObjects of the org, looked up case-insensitively by name or by id key prefix."""

    def __init__(self, objects: dict[str, SObjectSchema]) -> None:
        self.objects = objects
        self._by_lower = {name.lower(): obj for name, obj in objects.items()}
        self._by_prefix = {obj.key_prefix: obj for obj in objects.values()}
        self.children: dict[str, list[ChildRelationship]] = {name: [] for name in objects}
        for obj in objects.values():
            for f in obj.fields.values():
                for parent in f.reference_to:
                    if parent in self.children:
                        self.children[parent].append(
                            ChildRelationship(obj.name, f.name, _child_relationship_name(obj, f), f.cascade_delete)
                        )

    def get(self, name: str) -> SObjectSchema | None:
        return self._by_lower.get(name.lower())

    def by_prefix(self, prefix: str) -> SObjectSchema | None:
        return self._by_prefix.get(prefix)


def _child_relationship_name(child: SObjectSchema, f: FieldSchema) -> str | None:
    if f.name in ("CreatedById", "LastModifiedById", "OwnerId"):
        return None
    if child.custom or f.custom:
        return f"{child.label_plural.replace(' ', '_')}__r"
    return child.label_plural.replace(" ", "")


def _label_from_name(name: str) -> str:
    base = name[:-3] if name.endswith("__c") else name
    base = base.replace("_", " ")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", base).strip()


def _field_from_spec(spec: dict[str, Any]) -> FieldSchema:
    name = str(spec["name"])
    ftype = str(spec["type"])
    if ftype not in FIELD_TYPES:
        raise ValueError(f"field {name}: unknown type {ftype!r}")
    default_value = spec.get("defaultValue")
    picklist_defaults = {str(default_value)} if default_value is not None else set()
    picklist = tuple(
        PicklistValue(str(v), str(v), True, str(v) in picklist_defaults) for v in spec.get("picklist", [])
    )
    external_id = bool(spec.get("externalId", False))
    auto_number = bool(spec.get("autoNumber", False))
    return FieldSchema(
        name=name,
        type=ftype,
        label=str(spec.get("label") or _label_from_name(name)),
        length=int(spec.get("length", 0)),
        precision=int(spec.get("precision", 0)),
        scale=int(spec.get("scale", 0)),
        digits=int(spec.get("digits", 0)),
        nillable=bool(spec.get("nillable", True)),
        createable=bool(spec.get("createable", True)),
        updateable=bool(spec.get("updateable", True)),
        defaulted_on_create=bool(spec.get("defaultedOnCreate", default_value is not None or ftype == "boolean"
                                         or auto_number)),
        default_value=default_value if default_value is not None else (False if ftype == "boolean" else None),
        external_id=external_id,
        id_lookup=bool(spec.get("idLookup", external_id)),
        unique=bool(spec.get("unique", False)),
        case_sensitive=bool(spec.get("caseSensitive", False)),
        reference_to=tuple(spec.get("referenceTo", ())),
        relationship_name=spec.get("relationshipName"),
        cascade_delete=bool(spec.get("cascadeDelete", False)),
        picklist=picklist,
        restricted_picklist=bool(spec.get("restricted", False)),
        auto_number=auto_number,
        calculated=bool(spec.get("calculated", False)),
        name_field=bool(spec.get("nameField", False)),
        custom=name.endswith("__c"),
    )


def _system_fields(owned: bool) -> tuple[list[FieldSchema], list[FieldSchema]]:
    """Fields every object has: Id (first), audit fields (last), OwnerId on owned objects."""
    head = [
        FieldSchema("Id", "id", "Record ID", length=18, nillable=False, createable=False, updateable=False,
                    defaulted_on_create=True, id_lookup=True),
    ]
    if owned:
        head.append(FieldSchema("OwnerId", "reference", "Owner ID", length=18, nillable=False,
                                defaulted_on_create=True, reference_to=("User",), relationship_name="Owner"))
    tail = [
        FieldSchema("IsDeleted", "boolean", "Deleted", nillable=False, createable=False, updateable=False,
                    defaulted_on_create=True, default_value=False),
        FieldSchema("CreatedDate", "datetime", "Created Date", nillable=False, createable=False, updateable=False,
                    defaulted_on_create=True),
        FieldSchema("CreatedById", "reference", "Created By ID", length=18, nillable=False, createable=False,
                    updateable=False, defaulted_on_create=True, reference_to=("User",), relationship_name="CreatedBy"),
        FieldSchema("LastModifiedDate", "datetime", "Last Modified Date", nillable=False, createable=False,
                    updateable=False, defaulted_on_create=True),
        FieldSchema("LastModifiedById", "reference", "Last Modified By ID", length=18, nillable=False,
                    createable=False, updateable=False, defaulted_on_create=True, reference_to=("User",),
                    relationship_name="LastModifiedBy"),
        FieldSchema("SystemModstamp", "datetime", "System Modstamp", nillable=False, createable=False,
                    updateable=False, defaulted_on_create=True),
    ]
    return head, tail


def _merge_object(objects: dict[str, SObjectSchema], name: str, spec: dict[str, Any]) -> None:
    existing = objects.get(name)
    if existing is None:
        prefix = str(spec.get("keyPrefix") or "")
        if len(prefix) != 3:
            raise ValueError(f"object {name}: keyPrefix must be 3 characters")
        obj = SObjectSchema(
            name=name,
            label=str(spec.get("label") or _label_from_name(name)),
            label_plural=str(spec.get("labelPlural") or f"{spec.get('label') or _label_from_name(name)}s"),
            key_prefix=prefix,
            custom=name.endswith("__c"),
            owned=bool(spec.get("owned", False)),
        )
        head, tail = _system_fields(obj.owned)
        for f in head:
            obj.add_field(f)
        for fspec in spec.get("fields", []):
            obj.add_field(_field_from_spec(fspec))
        for f in tail:
            obj.add_field(f)
        objects[name] = obj
        return
    for fspec in spec.get("fields", []):
        existing.add_field(_field_from_spec(fspec))


def load_schema(extra_schema: Path | None = None) -> Schema:
    """The default schema, extended (objects added, fields added or replaced) by ``extra_schema``."""
    text = resources.files("ferry.sandbox.salesforce").joinpath("schema.yaml").read_text(encoding="utf-8")
    specs: list[dict[str, Any]] = [yaml.safe_load(text)]
    if extra_schema is not None:
        specs.append(yaml.safe_load(extra_schema.read_text(encoding="utf-8")) or {})
    objects: dict[str, SObjectSchema] = {}
    for spec in specs:
        for name, obj_spec in (spec.get("objects") or {}).items():
            _merge_object(objects, str(name), obj_spec or {})
    return Schema(objects)
