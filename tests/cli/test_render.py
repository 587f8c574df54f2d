from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from ferry.cli.render import RichProgress


def test_a_phase_without_a_total_ends_showing_what_it_did() -> None:
    bar = Progress(console=Console(file=io.StringIO(), force_terminal=True))
    tracker = RichProgress(bar)
    tracker.phase("read orders", None)
    tracker.advance(250)
    tracker.advance(120)
    tracker.phase("write Order", 370)
    tracker.advance(370)
    tracker.finish()
    read, write = bar.tasks
    assert (read.completed, read.total) == (370, 370)
    assert (write.completed, write.total) == (370, 370)


def test_a_part_running_alongside_keeps_its_own_bar() -> None:
    """An object loading while streams are read: neither one's advances land on the other's bar."""
    bar = Progress(console=Console(file=io.StringIO(), force_terminal=True))
    run = RichProgress(bar)
    run.phase("read orders", None)
    load = run.part()
    load.phase("write Product2 (composite)", 10)
    run.advance(250)
    load.advance(4)
    run.phase("map and validate", 5)  # the run's next phase closes its own, not the part's
    load.advance(6)
    load.finish()
    done = {t.description: (t.completed, t.total) for t in bar.tasks}
    assert done == {"read orders": (250, 250), "write Product2 (composite)": (10, 10), "map and validate": (0, 5)}


def test_the_plan_shows_a_bulk_read_split_over_several_operations() -> None:
    from types import SimpleNamespace

    from ferry.cli.render import print_plan

    report = SimpleNamespace(
        pipeline="p", load_order=["Account"], api_usage=None, budget=None, api_budget=None, source=None, objects=[],
        errors=[],
        source_reads={"customers": {"mode": "bulk", "expected": 5000},
                      "orders": {"mode": "bulk", "expected": 10000, "operations": 3}},
    )
    out = io.StringIO()
    print_plan(Console(file=out, width=200), report)
    assert "source reads: customers: bulk (5,000 changed), orders: bulk x3 (10,000 changed)" in out.getvalue()
