"""Per target object: the compiled mapping, its validator, its parents, and the load order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ferry.core.dialect import Dialect
from ferry.core.records import MappedRecord
from ferry.core.schema import ObjectSchema
from ferry.errors import ConfigError, RecordError
from ferry.mapping.compile import CompiledMapping, compile_mapping
from ferry.mapping.fused import MapAndValidate, fuse
from ferry.mapping.spec import ObjectMapping, ref_dependencies
from ferry.mapping.validate import RecordValidator, build_validator


@dataclass(frozen=True, slots=True)
class ParentRef:
    object: str  # parent target object, e.g. Account
    field: str  # the child's reference field, e.g. AccountId
    payload_key: str  # the mapped key in the sink's dialect, e.g. Account.Shopify_Customer_Id__c


@dataclass(slots=True)
class ObjectPlan:
    name: str
    entity: str
    external_id: str
    mapping: CompiledMapping
    validator: RecordValidator
    parents: list[ParentRef] = field(default_factory=list)
    # mapping.map then validator.validate, in one generated function when the mapping allows (mapping/fused.py)
    fused: MapAndValidate | None = None

    def map_and_validate(self, record: Any) -> tuple[MappedRecord, list[RecordError]]:
        if self.fused is not None:
            return self.fused(record)
        mapped = self.mapping.map(record)
        return self.validator.validate(mapped, str(record.key))


def build_plans(
    mappings: Sequence[ObjectMapping], schemas: dict[str, ObjectSchema], constants: dict[str, Any], dialect: Dialect
) -> list[ObjectPlan]:
    """Compile each mapping against its object's describe, in the sink's dialect (``sink.dialect``)."""
    plans = []
    for m in mappings:
        schema = schemas[m.name]
        compiled = compile_mapping(m, schema, constants, dialect)
        parents = [ParentRef(dep.object, dep.field, dep.payload_key(schema, dialect)) for dep in ref_dependencies(m)]
        validator = build_validator(m, schema, dialect)
        fused = fuse(compiled, validator, tuple(m.fields.values()))
        plans.append(ObjectPlan(m.name, m.from_, m.external_id, compiled, validator, parents, fused))
    return plans


def order_plans(plans: Sequence[ObjectPlan]) -> list[ObjectPlan]:
    """Parents before children (Account -> Contact -> Order -> OrderItem), file order otherwise."""
    by_name = {p.name: p for p in plans}
    ordered: list[ObjectPlan] = []
    state: dict[str, str] = {}

    def visit(p: ObjectPlan, path: list[str]) -> None:
        if state.get(p.name) == "done":
            return
        if state.get(p.name) == "visiting":
            raise ConfigError(f"objects reference each other in a cycle: {' -> '.join([*path, p.name])}")
        state[p.name] = "visiting"
        for parent in p.parents:
            if parent.object in by_name and parent.object != p.name:
                visit(by_name[parent.object], [*path, p.name])
        state[p.name] = "done"
        ordered.append(p)

    for p in plans:
        visit(p, [])
    return ordered
