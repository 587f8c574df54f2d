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

from ferry.sandbox.salesforce.org_rules import (
    ObjectRules,
    RuleSpecError,
    parse_duplicate_rule,
    parse_record_type,
    parse_validation_rule,
    record_type_id,
)

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
    child_relationship: str | None = None  # the parent's name for the children along this lookup (Contacts)
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
    rules: ObjectRules = field(default_factory=ObjectRules)  # validation/duplicate rules, record types (opt-in)

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
                            ChildRelationship(obj.name, f.name, f.child_relationship, f.cascade_delete)
                        )

    def get(self, name: str) -> SObjectSchema | None:
        return self._by_lower.get(name.lower())

    def by_prefix(self, prefix: str) -> SObjectSchema | None:
        return self._by_prefix.get(prefix)


class SchemaError(ValueError):
    """A schema file that does not describe a valid org; the message names the file, object and field."""


_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_KEY_PREFIX = re.compile(r"^[0-9A-Za-z]{3}$")
_RULE_KEYS = ("validationRules", "recordTypes", "duplicateRules")
_OBJECT_KEYS = frozenset({"keyPrefix", "label", "labelPlural", "owned", "fields", *_RULE_KEYS})
_FIELD_KEYS = frozenset({
    "name", "type", "label", "length", "precision", "scale", "digits", "nillable", "createable", "updateable",
    "defaultedOnCreate", "defaultValue", "externalId", "idLookup", "unique", "caseSensitive", "referenceTo",
    "relationshipName", "childRelationshipName", "cascadeDelete", "picklist", "restricted", "autoNumber",
    "calculated", "nameField", "masterDetail",
})
_SYSTEM_FIELDS = frozenset({"id", "isdeleted", "createddate", "createdbyid", "lastmodifieddate", "lastmodifiedbyid",
                            "systemmodstamp"})
_PICKLIST_TYPES = frozenset({"picklist", "multipicklist", "combobox"})
_EXTERNAL_ID_TYPES = frozenset({"string", "email", "int", "double"})
# The org's maximum lengths per text type (string 255, long text area 131,072).
_MAX_LENGTH = {"string": 255, "textarea": 131072, "email": 128, "phone": 40, "url": 1024, "encryptedstring": 175,
               "picklist": 255, "multipicklist": 4099, "combobox": 255}
_CUSTOM_PREFIX_BASE = "a0"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class _Where:
    """Where a spec came from, for error messages: `my.yaml: objects.Invoice__c.fields[2] (Amount__c)`."""

    def __init__(self, source: str, path: str) -> None:
        self.source, self.path = source, path

    def error(self, text: str) -> SchemaError:
        return SchemaError(f"{self.source}: {self.path}: {text}")

    def child(self, path: str) -> _Where:
        return _Where(self.source, f"{self.path}{path}")


def _default_child_relationship(child: SObjectSchema, f: FieldSchema) -> str | None:
    if f.name in ("CreatedById", "LastModifiedById", "OwnerId"):
        return None
    if child.custom or f.custom:
        return f"{child.label_plural.replace(' ', '_')}__r"
    return child.label_plural.replace(" ", "")


def _default_relationship_name(name: str) -> str:
    if name.endswith("__c"):
        return name[:-3] + "__r"
    return name[:-2] if name.endswith("Id") and len(name) > 2 else name


def _label_from_name(name: str) -> str:
    base = name[:-3] if name.endswith("__c") else name
    base = base.replace("_", " ")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", base).strip()


def _picklist(spec: dict[str, Any], where: _Where) -> tuple[PicklistValue, ...]:
    raw = spec.get("picklist", [])
    if not isinstance(raw, list):
        raise where.error("picklist must be a list of values")
    default_value = spec.get("defaultValue")
    values: list[PicklistValue] = []
    for entry in raw:
        if isinstance(entry, dict):
            unknown = set(entry) - {"value", "label", "active", "default"}
            if "value" not in entry or unknown:
                raise where.error(f"picklist entry {entry!r} needs 'value' (and may have label, active, default)")
            value = str(entry["value"])
            values.append(PicklistValue(value, str(entry.get("label", value)), bool(entry.get("active", True)),
                                        bool(entry.get("default", False)) or value == default_value))
        else:
            values.append(PicklistValue(str(entry), str(entry), True, str(entry) == str(default_value)))
    names = [v.value for v in values]
    if len(set(names)) != len(names):
        raise where.error("picklist values must be unique")
    if names and default_value is not None and str(default_value) not in names:
        raise where.error(f"defaultValue {default_value!r} is not one of the picklist values")
    return tuple(values)


def _check_field_spec(spec: Any, where: _Where) -> tuple[str, str]:
    if not isinstance(spec, dict):
        raise where.error("a field must be a mapping with at least 'name' and 'type'")
    unknown = sorted(set(spec) - _FIELD_KEYS)
    if unknown:
        raise where.error(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELD_KEYS))}")
    name, ftype = spec.get("name"), spec.get("type")
    if not isinstance(name, str) or not _API_NAME.match(name):
        raise where.error(f"'name' must be an API name (letters, digits, underscores), got {name!r}")
    if name.lower() in _SYSTEM_FIELDS:
        raise where.error(f"{name} is a system field; the sandbox adds it to every object")
    if ftype not in FIELD_TYPES:
        raise where.error(f"unknown type {ftype!r}; choose one of {', '.join(sorted(FIELD_TYPES - {'id'}))}")
    if ftype == "id":
        raise where.error("type 'id' is reserved for the Id field")
    max_len = _MAX_LENGTH.get(ftype)
    if max_len is not None:
        # The org caps custom fields by type; standard fields keep their own lengths (OpportunityLineItem.Name 376).
        max_len = max_len if name.endswith("__c") else 1 << 20
        length = spec.get("length", 255 if ftype in _PICKLIST_TYPES else None)
        if not isinstance(length, int) or not 0 < length <= max_len:
            raise where.error(f"type {ftype} needs 'length' between 1 and {max_len}, got {length!r}")
    if ftype == "reference":
        targets = spec.get("referenceTo")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise where.error("a reference field needs 'referenceTo', a list of object names")
        rel = spec.get("relationshipName")
        if name.endswith("__c") and rel is not None and not str(rel).endswith("__r"):
            raise where.error(f"the relationshipName of custom lookup {name} must end in __r, got {rel!r}")
    elif "referenceTo" in spec or "relationshipName" in spec or "childRelationshipName" in spec \
            or "masterDetail" in spec:
        raise where.error("referenceTo/relationshipName/childRelationshipName/masterDetail only apply to type "
                          "reference")
    if ("picklist" in spec or spec.get("restricted")) and ftype not in _PICKLIST_TYPES:
        raise where.error(f"picklist values only apply to picklist types, not {ftype}")
    if spec.get("externalId") and ftype not in _EXTERNAL_ID_TYPES:
        raise where.error(f"only {', '.join(sorted(_EXTERNAL_ID_TYPES))} fields can be external ids, not {ftype}")
    return name, str(ftype)


def _field_from_spec(spec: dict[str, Any], where: _Where | None = None) -> FieldSchema:
    where = where or _Where("schema", f"field {spec.get('name')!r}")
    name, ftype = _check_field_spec(spec, where)
    default_value = spec.get("defaultValue")
    external_id = bool(spec.get("externalId", False))
    auto_number = bool(spec.get("autoNumber", False))
    length = int(spec.get("length", 255 if ftype in _PICKLIST_TYPES else 0))
    relationship_name = spec.get("relationshipName")
    if ftype == "reference" and relationship_name is None:
        relationship_name = _default_relationship_name(name)
    # A master-detail field: required, its details deleted with the master, and not reparentable unless
    # `updateable: true` says the relationship allows reparenting.
    master_detail = bool(spec.get("masterDetail", False))
    return FieldSchema(
        name=name,
        type=ftype,
        label=str(spec.get("label") or _label_from_name(name)),
        length=length,
        precision=int(spec.get("precision", 0)),
        scale=int(spec.get("scale", 0)),
        digits=int(spec.get("digits", 0)),
        nillable=bool(spec.get("nillable", not master_detail)),
        createable=bool(spec.get("createable", True)),
        updateable=bool(spec.get("updateable", not master_detail)),
        defaulted_on_create=bool(spec.get("defaultedOnCreate", default_value is not None or ftype == "boolean"
                                         or auto_number)),
        default_value=default_value if default_value is not None else (False if ftype == "boolean" else None),
        external_id=external_id,
        id_lookup=bool(spec.get("idLookup", external_id)),
        unique=bool(spec.get("unique", False)),
        case_sensitive=bool(spec.get("caseSensitive", False)),
        reference_to=tuple(spec.get("referenceTo", ())),
        relationship_name=relationship_name,
        cascade_delete=bool(spec.get("cascadeDelete", master_detail)),
        picklist=_picklist(spec, where),
        restricted_picklist=bool(spec.get("restricted", False)),
        auto_number=auto_number,
        calculated=bool(spec.get("calculated", False)),
        name_field=bool(spec.get("nameField", False)),
        custom=name.endswith("__c"),
    )
def _system_fields(owned: bool, label: str) -> tuple[list[FieldSchema], list[FieldSchema]]:
    """Fields every object has: Id (first, labelled "Account ID"), audit fields (last), OwnerId on owned objects."""
    head = [
        FieldSchema("Id", "id", f"{label} ID", length=18, nillable=False, createable=False, updateable=False,
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


def _add_fields(obj: SObjectSchema, specs: Any, where: _Where, child_names: dict[int, Any]) -> None:
    if not isinstance(specs, list):
        raise where.error("'fields' must be a list")
    seen: set[str] = set()
    for index, fspec in enumerate(specs):
        fwhere = where.child(f".fields[{index}]" + (f" ({fspec.get('name')})" if isinstance(fspec, dict) else ""))
        f = _field_from_spec(fspec, fwhere)
        if f.name.lower() in seen:
            raise fwhere.error(f"field {f.name} is declared twice")
        seen.add(f.name.lower())
        # The parent's name for these children: explicit (may be null), else derived as the org does.
        f.child_relationship = fspec["childRelationshipName"] if "childRelationshipName" in fspec \
            else _default_child_relationship(obj, f)
        child_names[id(f)] = (obj, f, fwhere)
        obj.add_field(f)


def _next_custom_prefix(used: set[str]) -> str:
    # Custom objects get a0X-style prefixes (a01, a02, ...), as an org assigns them.
    for ch in _BASE62[1:]:
        prefix = _CUSTOM_PREFIX_BASE + ch
        if prefix not in used:
            return prefix
    raise SchemaError("no free custom-object key prefix left")


def _merge_object(objects: dict[str, SObjectSchema], name: str, spec: Any, where: _Where,
                  field_where: dict[int, Any], rule_specs: list[tuple[str, str, Any, _Where]]) -> None:
    if not isinstance(spec, dict):
        raise where.error("an object must be a mapping (keyPrefix, label, labelPlural, owned, fields)")
    unknown = sorted(set(spec) - _OBJECT_KEYS)
    if unknown:
        raise where.error(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_OBJECT_KEYS))}")
    if not _API_NAME.match(name):
        raise where.error("an object name must be an API name (letters, digits, underscores)")
    for key in _RULE_KEYS:
        entries = spec.get(key) or []
        if not isinstance(entries, list):
            raise where.error(f"{key} must be a list")
        rule_specs.extend((name, key, entry, where.child(f".{key}[{i}]")) for i, entry in enumerate(entries))
    existing = next((o for o in objects.values() if o.name.lower() == name.lower()), None)
    if existing is not None:
        prefix = spec.get("keyPrefix")
        if prefix is not None and str(prefix) != existing.key_prefix:
            raise where.error(f"{existing.name} already has keyPrefix {existing.key_prefix}; it cannot change")
        _add_fields(existing, spec.get("fields", []), where, field_where)
        return
    used = {o.key_prefix for o in objects.values()}
    custom = name.endswith("__c")
    prefix = str(spec.get("keyPrefix") or (_next_custom_prefix(used) if custom else ""))
    if not _KEY_PREFIX.match(prefix):
        raise where.error(f"keyPrefix must be 3 letters or digits, got {prefix!r}"
                          + ("" if custom else " (only custom __c objects get one assigned)"))
    if prefix in used:
        raise where.error(f"keyPrefix {prefix} is already used by "
                          f"{next(o.name for o in objects.values() if o.key_prefix == prefix)}")
    label = str(spec.get("label") or _label_from_name(name))
    obj = SObjectSchema(
        name=name,
        label=label,
        label_plural=str(spec.get("labelPlural") or f"{label}s"),
        key_prefix=prefix,
        custom=custom,
        owned=bool(spec.get("owned", custom)),
    )
    head, tail = _system_fields(obj.owned, obj.label)
    for f in head:
        obj.add_field(f)
    specs = spec.get("fields", [])
    declares_name = isinstance(specs, list) and any(
        isinstance(fs, dict) and str(fs.get("name", "")).lower() == "name" for fs in specs)
    if custom and not declares_name:
        # Every custom object has a Name field (text 80) unless the file declares one.
        obj.add_field(FieldSchema("Name", "string", f"{label} Name", length=80, name_field=True))
    _add_fields(obj, specs, where, field_where)
    for f in tail:
        obj.add_field(f)
    objects[name] = obj


def _check_references(objects: dict[str, SObjectSchema], field_where: dict[int, Any]) -> None:
    """Every lookup points at a known object, and no parent has two child relationships of one name.

    Fields are checked in the order they were declared (built-in first), so the error names the user's field.
    """
    known = {name.lower() for name in objects}
    child_names: dict[tuple[str, str], str] = {}
    for obj, f, where in field_where.values():
        if obj.fields.get(f.name) is not f:
            continue  # replaced by a later file
        for target in f.reference_to:
            if target.lower() not in known:
                raise where.error(f"referenceTo {target!r} is not an object of the schema")
        if f.child_relationship is None:
            continue
        for target in f.reference_to:
            key = (target.lower(), f.child_relationship.lower())
            other = child_names.get(key)
            if other is not None:
                raise where.error(f"child relationship {f.child_relationship!r} on {target} is already used "
                                  f"by {other}; set childRelationshipName")
            child_names[key] = f"{obj.name}.{f.name}"


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SchemaError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(spec, dict) or set(spec) - {"objects"} or not isinstance(spec.get("objects") or {}, dict):
        raise SchemaError(f"{source}: a schema file is a mapping with one key, 'objects' (object name -> spec)")
    return spec


def load_schema(extra_schema: Path | None = None) -> Schema:
    """The built-in schema, extended by ``extra_schema`` (objects added, fields added or replaced).

    Raises SchemaError (a ValueError) naming the file, object and field of the first problem.
    """
    text = resources.files("ferry.sandbox.salesforce").joinpath("schema.yaml").read_text(encoding="utf-8")
    sources: list[tuple[str, dict[str, Any]]] = [("schema.yaml (built-in)", _read_yaml(text, "schema.yaml"))]
    if extra_schema is not None:
        try:
            extra_text = Path(extra_schema).read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"{extra_schema}: cannot read the schema file: {exc.strerror}") from None
        sources.append((str(extra_schema), _read_yaml(extra_text, str(extra_schema))))
    objects: dict[str, SObjectSchema] = {}
    field_where: dict[int, Any] = {}
    rule_specs: list[tuple[str, str, Any, _Where]] = []
    for source, spec in sources:
        for name, obj_spec in (spec.get("objects") or {}).items():
            _merge_object(objects, str(name), obj_spec or {}, _Where(source, f"objects.{name}"), field_where,
                          rule_specs)
    _check_references(objects, field_where)
    _add_rules(objects, rule_specs)
    return Schema(objects)


def _add_rules(objects: dict[str, SObjectSchema], rule_specs: list[tuple[str, str, Any, _Where]]) -> None:
    """Rules are read once every file's fields are known, so a rule may use a field a later file adds."""
    by_lower = {name.lower(): obj for name, obj in objects.items()}
    object_index = {name: i for i, name in enumerate(objects)}
    for name, key, spec, where in rule_specs:
        obj = by_lower[name.lower()]

        def canonical(field_name: str, obj: SObjectSchema = obj) -> str | None:
            f = obj.field(field_name)
            return f.name if f is not None else None

        try:
            if key == "validationRules":
                obj.rules.validation.append(parse_validation_rule(spec, canonical))
            elif key == "duplicateRules":
                obj.rules.duplicates.append(parse_duplicate_rule(spec, obj.name, canonical))
            else:
                picklists = {f.name: frozenset(p.value for p in f.picklist) if f.picklist else None
                             for f in obj.fields.values()}
                rt_id = record_type_id(object_index[obj.name], len(obj.rules.record_types) + 1)
                restricted = frozenset(f.name for f in obj.fields.values() if f.restricted_picklist)
                obj.rules.record_types.append(parse_record_type(spec, rt_id, picklists, restricted))
                _add_record_type_field(obj)
        except RuleSpecError as exc:
            raise where.error(str(exc)) from None


def _add_record_type_field(obj: SObjectSchema) -> None:
    if obj.field("RecordTypeId") is not None:
        return
    # The org's RecordTypeId sits with the object's own fields (before the audit fields).
    tail = [f for f in obj.fields.values() if f.name in ("IsDeleted", "CreatedDate", "CreatedById",
                                                           "LastModifiedDate", "LastModifiedById", "SystemModstamp")]
    for f in tail:
        obj.fields.pop(f.name)
    obj.add_field(FieldSchema("RecordTypeId", "reference", "Record Type ID", length=18, defaulted_on_create=True,
                              reference_to=("RecordType",), relationship_name="RecordType"))
    for f in tail:
        obj.fields[f.name] = f
