"""Tables and JSON for the CLI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ferry.engine.stats import RunStats
from ferry.store import DeadLetter, RunRow

_OBJECT_COLUMNS = ("read", "written", "created", "updated", "unchanged", "dead_lettered", "api_calls")
_HEADERS = {"unchanged": "same", "dead_lettered": "DLQ", "api_calls": "calls"}


class RichProgress:
    """Adapts the engine's progress protocol to one rich progress bar per phase."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._task: Any = None

    def phase(self, name: str, total: int | None) -> None:
        if self._progress is None:
            return
        self.finish()
        self._task = self._progress.add_task(name, total=total)

    def part(self) -> RichProgress:
        """A tracker of its own on the same display, for work running alongside this one (an object loading
        while streams are read): its bars are its own, so no advance lands on another's bar."""
        return RichProgress(self._progress)

    def finish(self) -> None:
        """Close the running phase at what it really did (a read phase has no total until it ends)."""
        if self._progress is None or self._task is None:
            return
        task = next(t for t in self._progress.tasks if t.id == self._task)
        done = task.completed if task.total is None else task.total
        self._progress.update(self._task, total=done, completed=done)
        self._progress.stop_task(self._task)

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)


@contextmanager
def progress(console: Console, *, disabled: bool) -> Iterator[RichProgress]:
    if disabled or not console.is_terminal:
        yield RichProgress(None)
        return
    bar = Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with bar:
        tracker = RichProgress(bar)
        yield tracker
        tracker.finish()


def demo_json(
    stats: RunStats, *, source_system: str | None = None, target_system: str | None = None
) -> dict[str, Any]:
    """What `ferry demo --json` prints: the same shape for every flow, its source and target named."""
    objects = {
        name: {**{c: getattr(s, c) for c in _OBJECT_COLUMNS}, "strategy": s.strategy, "reason": s.reason}
        for name, s in stats.objects.items()
    }
    return {
        "objects": objects,
        "seconds": round(stats.seconds, 3),
        "run_id": stats.run_id,
        "pipeline": stats.pipeline,
        "status": stats.status,
        "source_records": stats.source_records,
        "source_api_calls": stats.source_api_calls,
        "setup_api_calls": stats.setup_api_calls,
        "source": _source_block(source_system, stats),
        "target": {"system": target_system},
    }


def _source_block(system: str | None, stats: RunStats) -> dict[str, Any]:
    block: dict[str, Any] = {"system": system}
    if stats.source_api:
        block["api"] = stats.source_api
    block["api_calls"] = stats.source_api_calls
    if stats.source_reads:
        block["reads"] = stats.source_reads
    if stats.skipped_entities:  # not read whole: no object maps them
        block["skipped_entities"] = stats.skipped_entities
    if stats.linked_back:  # a source the target's ids were written back to (Salesforce: QuickBooks_Id__c)
        block["linked_back"] = stats.linked_back
    return block


def _read_modes(stats: RunStats) -> str:
    """`` over graphql (orders: bulk, customers: paged)`` when the source says how it read."""
    if not stats.source_api:
        return ""
    modes = ", ".join(f"{k}: {_read_mode(v)}" for k, v in stats.source_reads.items() if isinstance(v, dict))
    return f" over {stats.source_api}" + (f" ({modes})" if modes else "")


def _read_mode(read: dict[str, Any]) -> str:
    """``bulk``, ``paged``, or ``bulk x3`` for a bulk read split over several concurrent operations."""
    return f"{read.get('mode')}" + (f" x{read['operations']}" if read.get("operations") else "")


def print_run(console: Console, stats: RunStats, *, exit_codes: bool = True) -> None:
    """The run's report; ``exit_codes`` names the exit code a verdict gives (not for the demo, which exits 0)."""
    table = Table(
        title=f"run {stats.run_id} of {stats.pipeline}: {stats.status} in {stats.seconds:.1f} s",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("object", no_wrap=True)
    for c in _OBJECT_COLUMNS:
        table.add_column(_HEADERS.get(c, c), justify="right", no_wrap=True)
    table.add_column("strategy", no_wrap=True)
    for name, s in stats.objects.items():
        table.add_row(name, *(f"{getattr(s, c):,}" for c in _OBJECT_COLUMNS), s.strategy)
    console.print(table)
    console.print(
        "  [dim]same = already in the target at this version; DLQ = dead-lettered; calls = target API calls[/]"
    )
    unsplit = [name for name, s in stats.objects.items() if s.created + s.updated < s.written]
    if unsplit:
        console.print(
            f"  [dim]{', '.join(unsplit)}: Bulk jobs whose counts proved their successes do not say created or "
            "updated for those rows (bulk_success_results: true fetches their result files)[/]"
        )
    for name, s in stats.objects.items():
        if s.reason:
            console.print(Text(f"  {name}: {s.reason}", style="dim"))
    reads = ", ".join(f"{n:,} {k}" for k, n in stats.source_records.items())
    console.print(
        f"source: read {reads} in {_calls(stats.source_api_calls)}{_read_modes(stats)}; "
        f"target set-up (auth, describe, queries): {_calls(stats.setup_api_calls)}"
    )
    if stats.skipped_entities:
        console.print(f"source: not read (no object maps them): {', '.join(stats.skipped_entities)}")
    if any(stats.linked_back.values()):
        linked = ", ".join(f"{n:,} {k}" for k, n in stats.linked_back.items() if n)
        console.print(f"source: the target's ids written back to {linked}")
    if stats.resumed_from:
        before = stats.resumed_from
        console.print(f"resumed run {before['run_id']} ({before['status']}): what it committed was kept")
    if stats.resumed_reads or stats.resumed_bulk_jobs:
        parts = [f"read of {', '.join(stats.resumed_reads)} from its saved page"] if stats.resumed_reads else []
        if stats.resumed_bulk_jobs:
            parts.append(f"Bulk job(s) {', '.join(stats.resumed_bulk_jobs)}")
        console.print(f"resumed what an interrupted run left: {'; '.join(parts)}")
    line = budget_line(stats.budget)
    if line:
        console.print(line)
    over = stats.over_dead_letter_cap()
    if over:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in over.items())
        console.print(
            Text.assemble(
                (f"dead letters over max_dead_letter_share {stats.dead_letter_cap:.0%}: {shares}", "bold red"),
                f"; the run counts as failed{' (exit 3)' if exit_codes else ''}; "
                f"`ferry dlq list --pipeline {stats.pipeline}` shows why",
            )
        )
    if stats.dead_lettered and not over and stats.status == "succeeded":
        console.print(
            f"{stats.dead_lettered:,} record(s) dead-lettered, each object within max_dead_letter_share "
            f"{stats.dead_letter_cap:.0%}{' (exit 4)' if exit_codes else ''}; "
            f"`ferry dlq list --pipeline {escape(stats.pipeline)}` shows why"
        )
    if stats.error:
        console.print(Text(stats.error, style="bold red"))


def budget_line(budget: dict[str, Any] | None) -> str | None:
    """The pipeline's API budget in one line: share, what the rolling 24 h spent of it, what is left."""
    if not budget:
        return None
    spent, this_run = budget.get("spent_24h", 0), budget.get("spent_this_run", 0)
    if budget.get("share") is None:
        text = f"Salesforce API calls of this pipeline in the last 24 h: {spent:,} ({this_run:,} this run)"
    elif budget.get("allowed") is None:
        text = f"api_budget {budget['share']}: of an org allocation not reported yet; {spent:,} calls in the last 24 h"
    else:
        left = budget.get("remaining")
        share = f"{budget['share']} = " if str(budget["share"]).endswith("%") else ""
        text = (
            f"api_budget {share}{budget['allowed']:,} calls per rolling 24 h: {spent:,} spent "
            f"({this_run:,} this run), {'?' if left is None else f'{left:,}'} left"
        )
    if budget.get("resume_after"):
        text += f"; paused: resume after {budget['resume_after']} (UTC)"
    return text


def _budget_cell(budget: dict[str, Any] | None) -> str:
    if not budget or budget.get("allowed") is None:
        return "-"
    cell = f"{budget.get('remaining') or 0:,} of {budget['allowed']:,} left"
    if budget.get("resume_after"):
        cell += f", resume {budget['resume_after'][:16].replace('T', ' ')}Z"
    return cell


def print_next_steps(
    console: Console, pipeline: str, example: str = "shopify-to-salesforce", *, kept: bool = False
) -> None:
    """What to try after the demo; ``example`` is a packaged example's name, which `ferry plan` finds from any
    directory."""
    steps = [
        ("ferry runs", "every run with its figures"),
        (f"ferry dlq list --pipeline {pipeline}", "records that could not be written, and why"),
        ("ferry dlq show ID", "one dead letter: errors, mapped and source payloads"),
        (f"ferry plan {example}", "what a pipeline will do, before it writes (against running sandboxes: "
         "`ferry sandbox serve SYSTEM --env`)"),
    ]
    if not kept:
        steps.append(("ferry demo --serve", "the same, then the web dashboard: the run, its chart, dead letters, "
                      "replay"))
        steps.append(("ferry demo --keep", "the same, with the sandboxes left running to replay dead letters"))
    width = max(len(cmd) for cmd, _ in steps) + 3
    console.print("\nWhere to look next:")
    for cmd, what in steps:
        console.print(f"  {cmd:<{width}}{what}", highlight=False)


def run_row_json(r: RunRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "pipeline": r.pipeline,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "status": r.status,
        "origin": r.origin,
        "error": r.error,
        "pid": r.pid,
        "host": r.host,
        "stats": r.stats,
    }


def print_runs(console: Console, rows: Sequence[RunRow]) -> None:
    if not rows:
        console.print("no runs yet: try `ferry demo`")
        return
    table = Table(title="runs")
    for c in (
        "id",
        "pipeline",
        "origin",
        "started",
        "status",
        "seconds",
        "written",
        "created",
        "updated",
        "dead-lettered",
        "API calls",
        "API budget",
    ):
        table.add_column(c, justify="right" if c not in ("pipeline", "origin", "started", "status") else "left")
    for r in rows:
        objects = r.stats.get("objects", {}).values()
        total = {
            c: sum(o.get(c, 0) for o in objects)
            for c in ("written", "created", "updated", "dead_lettered", "api_calls")
        }
        calls = total["api_calls"] + r.stats.get("source_api_calls", 0) + r.stats.get("setup_api_calls", 0)
        table.add_row(
            str(r.id),
            r.pipeline,
            r.origin,
            r.started_at[:19].replace("T", " "),
            Text(r.status, style="red" if r.status in ("died", "failed", "interrupted") else ""),
            f"{r.stats.get('seconds', 0):.1f}",
            f"{total['written']:,}",
            f"{total['created']:,}",
            f"{total['updated']:,}",
            f"{total['dead_lettered']:,}",
            f"{calls:,}",
            _budget_cell(r.stats.get("budget")),
        )
    console.print(table)


def letter_json(d: DeadLetter, *, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": d.id,
        "pipeline": d.pipeline,
        "run_id": d.run_id,
        "object": d.object,
        "record_key": d.record_key,
        "version": d.version,
        "error_code": d.error_code,
        "message": d.message,
        "fields": d.fields,
        "attempts": d.attempts,
        "first_seen": d.first_seen,
        "last_seen": d.last_seen,
        "status": d.status,
        "stream": d.stream,
        "source_key": d.source_key,
        "resolved_at": d.resolved_at,
        "resolution": d.resolution,
    }
    if full:
        out.update(errors=d.errors, history=d.history, mapped_payload=d.mapped_payload, source_payload=d.source_payload)
    return out


def print_letters(console: Console, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        console.print("the dead-letter queue is empty")
        return
    pipelines = sorted({d.pipeline for d in letters})
    one = len(pipelines) == 1
    title = f"dead letters ({len(letters)})" + (f" of {pipelines[0]}" if one else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    columns = ["id", *([] if one else ["pipeline"]), "object", "key", "code", "fields", "tries", "last seen"]
    for c in columns:
        table.add_column(c, no_wrap=c != "fields", justify="right" if c in ("id", "tries") else "left")
    table.add_column("status" if any(d.status != "open" for d in letters) else "", no_wrap=True)
    table.add_column("message", overflow="fold")
    for d in letters:
        table.add_row(
            str(d.id),
            *([] if one else [d.pipeline]),
            Text(d.object),
            Text(d.record_key),
            Text(d.error_code),
            Text(", ".join(d.fields)),
            str(d.attempts),
            d.last_seen[:16].replace("T", " "),
            d.status if d.status != "open" else "",
            # The row already names the record; its messages (which must name it elsewhere) need not.
            Text(d.message.replace(f"{d.object} {d.record_key}: ", "")),
        )
    console.print(table)
    console.print(
        "  [dim]ferry dlq show ID: one letter in full; ferry dlq replay PIPELINE.yml --id ID: write it again[/]"
    )


def print_letter(console: Console, d: DeadLetter) -> None:
    console.print(
        f"[bold]dead letter {d.id}[/]: {escape(d.object)} {escape(d.record_key)} ({d.status}, {d.attempts} attempt(s))"
    )
    console.print(
        Text(f"  pipeline {d.pipeline}, run {d.run_id}, first seen {d.first_seen}, last seen {d.last_seen}")
    )
    if d.resolution:
        console.print(Text(f"  {d.status} at {d.resolved_at}: {d.resolution}"))
    source = f"{d.stream} {d.source_key}" if d.stream else "unknown (stored before ferry kept it)"
    console.print(Text(f"  source record: {source}"))
    for e in d.errors:
        fields = ", ".join(e.get("fields", []))
        console.print(Text.assemble("  ", (str(e.get("code")), "red"), f" {e.get('message')}  fields: {fields}"))
    if d.history:
        console.print("[bold]attempts[/]")
        for h in d.history:
            codes = ", ".join(f"{e.get('code')}: {e.get('message')}" for e in h.get("errors", []))
            console.print(Text(f"  {h.get('attempt')}. {h.get('at')}  {codes}"), highlight=False)
    console.print("[bold]mapped payload[/]")
    console.print_json(data=d.mapped_payload)
    console.print("[bold]source record[/]")
    console.print_json(data=d.source_payload)


def print_plan(console: Console, report: Any) -> None:
    console.print(f"[bold]plan for {escape(report.pipeline)}[/]  load order: {escape(' → '.join(report.load_order))}")
    if report.api_usage:
        used, total = report.api_usage
        console.print(f"org API usage: {used:,} of {total:,} daily requests")
    line = budget_line(getattr(report, "budget", None))
    if line and getattr(report, "api_budget", None):
        console.print(line.replace("this run", "this plan's describes and queries"))
    reads = getattr(report, "source_reads", None) or {}
    if reads:
        parts = [f"{s}: {_read_mode(r)}" + (f" ({r['expected']:,} changed)" if r.get("expected") is not None else "")
                 for s, r in reads.items() if r.get("mode")]
        errors = {r["error"] for r in reads.values() if r.get("error")}
        console.print(f"source reads: {', '.join(parts)}" if parts else f"source reads: unknown ({', '.join(errors)})")
    skipped = getattr(report, "skipped_entities", None) or []
    if skipped:
        console.print(f"source: not read (no object maps them): {', '.join(skipped)}")
    _print_source_check(console, report.source)
    for o in report.objects:
        table = Table(title=Text(f"{o.name} ← {o.entity}, upsert by {o.external_id}"), title_justify="left")
        for c in ("target field", "from", "type", "length", "required"):
            table.add_column(c, overflow="fold")
        for f in o.fields:
            required = "yes" if f.required else ""
            table.add_row(Text(f.field), Text(f.expression), Text(f.type), str(f.length or ""), required)
        console.print(table)
        console.print(Text(f"  strategy of the next run ({_next_run_records(o)}): {o.strategy} — {o.reason}"))
        for p in o.problems:
            console.print(Text.assemble("  ", ("problem:", "bold red"), f" {p}"))
        for n in getattr(o, "notes", ()):
            console.print(Text.assemble("  ", ("note:", "yellow"), f" {n}"))
    if not report.errors:
        console.print("[green]no problems found against the target's describe and the source's records[/]")


def _next_run_records(o: Any) -> str:
    """How many records the next run would write: queued already, and estimated from the source's counts."""
    pending = f"{o.pending:,} pending"
    if o.to_read is None:
        return f"{pending}; the source could not be counted"
    return f"~{o.pending + o.to_read:,} records: {pending} + ~{o.to_read:,} to read"


def _print_source_check(console: Console, checked: Any) -> None:
    if checked is None:
        return
    for p in checked.problems:
        console.print(Text.assemble(("problem:", "bold red"), f" {p}"))
    if checked.problems:
        return
    counts = ", ".join(f"{'?' if n is None else f'~{n:,}'} {stream}" for stream, n in checked.estimates.items())
    console.print(
        Text(
            f"source {checked.system}: reachable, credentials accepted; a next run would read {counts} "
            f"({_calls(checked.api_calls)} to find out)"
        )
    )


_REPLAY_OK = frozenset({"replayed", "up_to_date", "would_replay"})


def print_replay(console: Console, report: Any, *, verbose: bool = False) -> None:
    """A table of letters per object, outcome and error code; each letter's own line with ``verbose``.
    Names, keys and messages are printed literally (``Text``), never read as markup."""
    verb = "dry run of replay" if report.dry_run else "replay"
    if not report.outcomes and not report.skipped:
        console.print(Text(f"{verb} for {report.pipeline}: no open dead letter matches"))
        return
    if verbose:
        _print_replay_letters(console, report, verb)
    table = Table(title=Text(f"{verb} for {report.pipeline}"), box=box.SIMPLE_HEAD, pad_edge=False,
                  title_justify="left")
    for c in ("object", "outcome", "code", "letters"):
        table.add_column(c, no_wrap=True, justify="right" if c == "letters" else "left")
    for obj, outcome, code, n in report.summary():
        table.add_row(Text(obj), _outcome(outcome), Text(code or "-"), f"{n:,}")
    console.print(table)
    counts = ", ".join(f"{n:,} {k}" for k, n in sorted(report.counts().items()))
    if counts:
        console.print(Text(f"  {counts}"))
    for why, n in Counter(why for _, why in report.skipped).most_common():
        console.print(Text(f"  skipped {n:,}: {why}", style="dim"))
    if not verbose:
        console.print(Text("  --verbose lists each letter; --json gives every outcome with its errors", style="dim"))


def _outcome(outcome: str) -> Text:
    return Text(outcome, style="green" if outcome in _REPLAY_OK else "red")


def _print_replay_letters(console: Console, report: Any, verb: str) -> None:
    table = Table(title=Text(f"{verb} for {report.pipeline}: each letter"), box=box.SIMPLE_HEAD, pad_edge=False)
    for c in ("id", "object", "key", "outcome", "read from", "detail"):
        table.add_column(c, overflow="fold")
    for o in report.outcomes:
        detail = o.message + (f" (with its parent {o.as_child_of})" if o.as_child_of else "")
        table.add_row(str(o.letter_id), Text(o.object), Text(o.record_key), _outcome(o.outcome), Text(o.source),
                      Text(detail[:300]))
    console.print(table)
    for letter_id, why in report.skipped:
        console.print(Text(f"  skipped {letter_id}: {why}", style="dim"))


def _calls(n: int) -> str:
    return f"{n:,} API call" if n == 1 else f"{n:,} API calls"
