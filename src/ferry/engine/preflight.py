"""What `ferry run` checks before it reads or writes anything: the static problems `ferry plan` reports.

A static problem (an unknown target field, a required field left unmapped, a constant the field cannot hold, a
reference to the wrong object, text mapped to a number or date field) would dead-letter every record of its
object; the run stops before the first write instead (``ferry run --force`` writes anyway). The checks are
`ferry plan`'s own (engine/inspect.py), applied to the
describes the run has already fetched: no extra API call.
"""

from __future__ import annotations

from collections.abc import Sequence

from ferry.core.schema import ObjectSchema
from ferry.engine.inspect import _constant_problems, _ref_problems, _text_type_problems, _write_access_problems
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.plan import ObjectPlan


def static_problems(spec: PipelineSpec, plans: Sequence[ObjectPlan], schemas: dict[str, ObjectSchema]) -> list[str]:
    """Every problem `ferry plan` would list for the mapping against these describes, in pipeline order."""
    by_name = {p.name: p for p in plans}
    problems: list[str] = []
    for m in spec.objects:
        plan, schema = by_name.get(m.name), schemas.get(m.name)
        if plan is None or schema is None:
            continue
        problems += list(plan.validator.problems)
        problems += _write_access_problems(m, schema)
        for name, expr in m.fields.items():
            fs = schema.field(name)
            problems += _ref_problems(m, name, expr, schema, schemas)
            problems += _text_type_problems(m, name, expr, fs.type if fs else None)
            problems += _constant_problems(m, name, expr, plan)
    return problems
