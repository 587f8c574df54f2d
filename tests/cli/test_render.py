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
