"""Text mapped to a number or date field: `ferry plan` reports it and `ferry run` stops before reading or writing
(issue 16, item 4), for each class of target type, and the run's own validation agrees when forced: every
record of the object is dead-lettered for that field. Against the sandboxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry.engine.inspect import inspect_pipeline
from ferry.engine.runner import Runner
from ferry.errors import PlanProblems
from ferry.store import Store
from tests.engine.world import query, world

# class -> (object, field, target type, [(mapping that is always text, why the problem says it is)],
#           [mappings that may fit: no problem])
CASES: dict[str, tuple[str, str, str, list[tuple[Any, str]], list[Any]]] = {
    "text into a double": (
        "OrderItem", "Quantity", "double",
        [("name", "order_line.name is text"),
         ({"template": "qty {quantity}"}, "the template 'qty {quantity}' is text ('q' is in every value)")],
        ["quantity", {"template": "{quantity}"}, {"template": " {quantity}.0"}],
    ),
    "text into a date": (
        "Contact", "Birthdate", "date",
        [({"path": "first_name", "transform": "strip"}, "customer.first_name is text"),
         ({"template": "born {created_at}"}, "the template 'born {created_at}' is text ('b' is in every value)")],
        [{"template": "{created_at}"}, {"path": "created_at", "transform": "date"}],
    ),
    "text into an int": (
        "Account", "NumberOfEmployees", "int",
        [("note", "customer.note is text"),
         ({"template": "n{key}"}, "the template 'n{key}' is text ('n' is in every value)"),
         ({"coalesce": [{"path": "note"}, {"template": "n{key}"}]}, "every value of the coalesce is text")],
        [{"template": "{key}"}, {"coalesce": [{"path": "note"}, {"template": "{key}"}]}],
    ),
}


def _mapped(obj: str, field: str, expr: Any) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        next(o for o in spec["objects"] if o["name"] == obj)["fields"][field] = expr

    return edit


@pytest.mark.parametrize("case", sorted(CASES))
async def test_text_into_a_typed_field_is_a_static_problem_that_stops_the_run(case: str, tmp_path: Path) -> None:
    obj, field, target_type, always_text, may_fit = CASES[case]
    with world(tmp_path, seed=2, customers=12, products=4, orders=12) as w:
        for n, (expr, why) in enumerate(always_text):
            spec = w.spec(w.pipeline_file(f"bad{n}", _mapped(obj, field, expr)))
            report = await inspect_pipeline(spec, Store(tmp_path / f"plan{n}.db"))
            mine = [p for p in report.errors if p.startswith(f"{obj}.{field}: ")]
            assert len(mine) == 1, report.errors  # one problem per field, sampled records or not
            takes = "a date" if target_type == "date" else "a number"
            assert mine[0].startswith(f"{obj}.{field}: {why}"), mine
            assert mine[0].endswith(
                f", but {field} is {'an' if target_type == 'int' else 'a'} {target_type} field that takes {takes}; "
                "map a field of that type, or transform it"
            ), mine

            # `ferry run` stops on it before reading or writing anything.
            db = tmp_path / f"run{n}.db"
            with pytest.raises(PlanProblems) as stopped:
                await Runner(spec, Store(db)).run()
            assert any(p.startswith(f"{obj}.{field}: ") for p in stopped.value.problems)
            assert not query(db, "SELECT * FROM staging") and not w.records(obj)

        # Forced, the run's validation agrees: every record of the object is dead-lettered for that field.
        forced_db = tmp_path / "forced.db"
        stats = await Runner(spec, Store(forced_db), force=True).run()
        assert stats.objects[obj].read > 0 and stats.objects[obj].written == 0, stats.objects[obj]
        letters = query(forced_db, "SELECT error_code, fields, errors FROM dlq WHERE object = ?", obj)
        assert len(letters) == stats.objects[obj].read, letters
        for _, fields, errors in letters:  # the field fails on each record (next to any problem of its own)
            assert f'"{field}"' in fields and "INVALID_TYPE_ON_FIELD_IN_RECORD" in errors, (fields, errors)

        for n, expr in enumerate(may_fit):
            spec = w.spec(w.pipeline_file(f"fits{n}", _mapped(obj, field, expr)))
            report = await inspect_pipeline(spec, Store(tmp_path / f"fits{n}.db"))
            assert not [p for p in report.errors if p.startswith(f"{obj}.{field}: ")], (expr, report.errors)
