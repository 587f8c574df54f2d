"""Describe output in the org's real shape (global describe, sObject describe, 57 keys per field)."""

from __future__ import annotations

from typing import Any

from ferry.sandbox.salesforce.org_rules import MASTER_RECORD_TYPE_ID
from ferry.sandbox.salesforce.schema import NUMBER_TYPES, STRING_TYPES, FieldSchema, Schema, SObjectSchema

_NON_FILTERABLE = frozenset({"textarea"})


def _urls(obj: SObjectSchema, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{obj.name}"
    return {
        "compactLayouts": f"{base}/describe/compactLayouts",
        "rowTemplate": f"{base}/{{ID}}",
        "approvalLayouts": f"{base}/describe/approvalLayouts",
        "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
        "listviews": f"{base}/listviews",
        "describe": f"{base}/describe",
        "quickActions": f"{base}/quickActions",
        "layouts": f"{base}/describe/layouts",
        "sobject": base,
    }


def object_summary(obj: SObjectSchema, version: str) -> dict[str, Any]:
    """One entry of the global describe (also the `objectDescribe` of sObject basic info)."""
    return {
        "activateable": False, "associateEntityType": None, "associateParentEntity": None,
        "createable": True, "custom": obj.custom, "customSetting": False, "deepCloneable": False,
        "deletable": True, "deprecatedAndHidden": False, "feedEnabled": obj.owned, "hasSubtypes": False,
        "isInterface": False, "isSubtype": False, "keyPrefix": obj.key_prefix, "label": obj.label,
        "labelPlural": obj.label_plural, "layoutable": True, "mergeable": obj.name in ("Account", "Contact", "Lead"),
        "mruEnabled": True, "name": obj.name, "queryable": True, "replicateable": True, "retrieveable": True,
        "searchable": True, "triggerable": True, "undeletable": True, "updateable": True,
        "urls": _urls(obj, version),
    }


def global_describe(schema: Schema, version: str) -> dict[str, Any]:
    return {
        "encoding": "UTF-8",
        "maxBatchSize": 200,
        "sobjects": [object_summary(obj, version) for obj in schema.objects.values()],
    }


def _byte_length(f: FieldSchema) -> int:
    if f.type in ("id", "reference"):
        return 18
    return f.length * 3 if f.type in STRING_TYPES else 0


def _length(f: FieldSchema) -> int:
    if f.type in ("id", "reference"):
        return 18
    return f.length if f.type in STRING_TYPES else 0


def describe_field(f: FieldSchema) -> dict[str, Any]:
    """All 57 keys a real field describe carries, in their alphabetical order."""
    filterable = f.type not in _NON_FILTERABLE or f.length <= 255
    return {
        "aggregatable": filterable and f.type != "boolean",
        "aiPredictionField": False,
        "autoNumber": f.auto_number,
        "byteLength": _byte_length(f),
        "calculated": f.calculated,
        "calculatedFormula": None,
        "cascadeDelete": f.cascade_delete,
        "caseSensitive": f.case_sensitive,
        "compoundFieldName": None,
        "controllerName": None,
        "createable": f.createable,
        "custom": f.custom,
        # A picklist's default is flagged in picklistValues; only checkboxes carry it here.
        "defaultValue": f.default_value if f.type == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": f.defaulted_on_create,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": f.digits if f.type == "int" else 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": f.external_id,
        "extraTypeInfo": "plaintextarea" if f.type == "textarea" else None,
        "filterable": filterable,
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": filterable and f.type not in ("double", "currency", "percent", "datetime"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": f.id_lookup,
        "inlineHelpText": None,
        "label": f.label,
        "length": _length(f),
        "mask": None,
        "maskType": None,
        "name": f.name,
        "nameField": f.name_field,
        "namePointing": False,
        "nillable": f.nillable,
        "permissionable": f.nillable and f.createable and not f.name_field,
        "picklistValues": [
            {"active": p.active, "defaultValue": p.default, "label": p.label, "validFor": None, "value": p.value}
            for p in f.picklist
        ],
        "polymorphicForeignKey": len(f.reference_to) > 1,
        "precision": f.precision if f.type in NUMBER_TYPES and f.type != "int" else 0,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(f.reference_to),
        "relationshipName": f.relationship_name,
        "relationshipOrder": 0 if f.cascade_delete else None,
        "restrictedDelete": False,
        "restrictedPicklist": f.restricted_picklist,
        "scale": f.scale if f.type in NUMBER_TYPES and f.type != "int" else 0,
        "searchPrefilterable": f.type == "reference",
        "soapType": f.soap_type,
        "sortable": filterable,
        "type": f.type,
        "unique": f.unique,
        "updateable": f.updateable,
        "writeRequiresMasterRead": False,
    }


def record_type_infos(obj: SObjectSchema, version: str) -> list[dict[str, Any]]:
    """The declared record types, then Master (the only one without a schema file's record types)."""
    layouts = _urls(obj, version)["layouts"]
    default = obj.rules.default_record_type()

    def info(rt_id: str, dev: str, name: str, active: bool, master: bool, is_default: bool) -> dict[str, Any]:
        return {"active": active, "available": active, "defaultRecordTypeMapping": is_default,
                "developerName": dev, "master": master, "name": name, "recordTypeId": rt_id,
                "urls": {"layout": f"{layouts}/{rt_id}"}}

    infos = [info(rt.record_type_id, rt.developer_name, rt.name, rt.active, False, rt is default)
             for rt in obj.rules.record_types]
    infos.append(info(MASTER_RECORD_TYPE_ID, "Master", "Master", True, True, default is None))
    return infos


def describe_object(schema: Schema, obj: SObjectSchema, version: str) -> dict[str, Any]:
    summary = object_summary(obj, version)
    children: list[dict[str, Any]] = [
        {
            "cascadeDelete": rel.cascade_delete, "childSObject": rel.child, "deprecatedAndHidden": False,
            "field": rel.field, "junctionIdListNames": [], "junctionReferenceTo": [],
            "relationshipName": rel.relationship_name, "restrictedDelete": False,
        }
        for rel in schema.children.get(obj.name, [])
    ]
    return {
        **summary,
        "actionOverrides": [],
        "childRelationships": children,
        "compactLayoutable": True,
        "defaultImplementation": None,
        "extendedBy": None,
        "extendsInterfaces": None,
        "fields": [describe_field(f) for f in obj.fields.values()],
        "implementedBy": None,
        "implementsInterfaces": None,
        "listviewable": None,
        "lookupLayoutable": None,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "recordTypeInfos": record_type_infos(obj, version),
        "searchLayoutable": True,
        "sobjectDescribeOption": "FULL",
        "supportedScopes": [{"label": "All " + obj.label_plural.lower(), "name": "everything"}],
    }
