"""``GET /sobjects/{Obj}/describe`` → ``ObjectSchema``: only what mapping validation and the sink use."""

from __future__ import annotations

from typing import Any

from ferry.core.schema import FieldSchema, ObjectSchema


def parse_field(raw: dict[str, Any]) -> FieldSchema:
    picklist = raw.get("picklistValues") or []
    return FieldSchema(
        name=raw["name"],
        type=raw.get("type", "string"),
        length=int(raw.get("length") or 0),
        nillable=bool(raw.get("nillable", True)),
        createable=bool(raw.get("createable", True)),
        updateable=bool(raw.get("updateable", True)),
        defaulted_on_create=bool(raw.get("defaultedOnCreate", False)),
        external_id=bool(raw.get("externalId", False)),
        id_lookup=bool(raw.get("idLookup", False)),
        unique=bool(raw.get("unique", False)),
        precision=int(raw.get("precision") or 0),
        scale=int(raw.get("scale") or 0),
        reference_to=list(raw.get("referenceTo") or []),
        relationship_name=raw.get("relationshipName"),
        # Inactive values are refused on write, so they are not offered to the validator.
        picklist_values=[p["value"] for p in picklist if isinstance(p, dict) and p.get("active", True)],
        restricted_picklist=bool(raw.get("restrictedPicklist", False)),
    )


def parse_describe(body: dict[str, Any]) -> ObjectSchema:
    fields = {f.name: f for f in (parse_field(raw) for raw in body.get("fields", []))}
    return ObjectSchema(
        name=body["name"],
        fields=fields,
        createable=bool(body.get("createable", True)),
        updateable=bool(body.get("updateable", True)),
    )
