"""The `ferry` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ferry.cli import render
from ferry.cli.logging import configure_logging
from ferry.errors import FerryError
from ferry.paths import ferry_home

app = typer.Typer(
    name="ferry",
    help="Move orders, customers and products between systems: never lost, never duplicated.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold secrets
)
dlq_app = typer.Typer(help="Inspect, replay and discard dead letters.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Local emulators of the systems ferry talks to.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(sandbox_app, name="sandbox")

# Piped output keeps whole table rows instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _store() -> Any:
    from ferry.store import Store

    return Store(ferry_home() / "ferry.db")


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress as structured lines on stderr.")
    ] = False,
) -> None:
    configure_logging(verbose)


@app.command()
def demo(
    flow: Annotated[
        str, typer.Argument(help="Which pair to run (`--list` shows them).", show_default=True)
    ] = "shopify-to-salesforce",
    customers: Annotated[int, typer.Option(min=1, help="Customers in the generated store.")] = 1000,
    products: Annotated[int, typer.Option(min=1, help="Products (each with 1-5 variants).")] = 200,
    orders: Annotated[int, typer.Option(min=1, help="Orders (with line items, refunds, guests).")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the generated store: same seed, same store.")] = 7,
    list_flows: Annotated[bool, typer.Option("--list", help="List the demo flows and exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a store's and a Salesforce sandbox, generate a messy store, and sync it with the example pipeline."""
    from ferry.cli.demo import FLOWS, demo_flow, run_demo

    if list_flows:
        if as_json:
            listed = [{"flow": f.name, "source": f.source, "target": "salesforce"} for f in FLOWS.values()]
            sys.stdout.write(json.dumps(listed) + "\n")
        else:
            for f in FLOWS.values():
                console.print(f"{f.name}  [dim]({f.source_label} -> Salesforce org, examples/{f.name}.yml)[/]")
        return
    try:
        chosen = demo_flow(flow)
        result = run_demo(
            customers=customers, products=products, orders=orders, seed=seed, quiet=as_json, console=console,
            flow=chosen.name,
        )
    except FerryError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(render.demo_json(result, source_system=chosen.source)) + "\n")
    else:
        render.print_run(console, result)
        render.print_next_steps(console, result.pipeline, f"examples/{chosen.name}.yml")


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline once: read what changed, write it, dead-letter what cannot be written."""
    from ferry.engine.pipeline import load_pipeline
    from ferry.engine.runner import Runner

    try:
        spec = load_pipeline(pipeline)
        store = _store()
        with render.progress(console, disabled=as_json) as progress:
            stats = asyncio.run(Runner(spec, store, progress).run())
    except FerryError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(stats.as_dict()) + "\n")
    else:
        render.print_run(console, stats)
    if stats.status != "succeeded":
        raise typer.Exit(code=1)


@app.command()
def plan(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show what a run would do, and what is wrong with the mapping against the target's schema. Writes nothing."""
    from ferry.engine.inspect import inspect_pipeline
    from ferry.engine.pipeline import load_pipeline

    try:
        spec = load_pipeline(pipeline)
        report = asyncio.run(inspect_pipeline(spec, _store()))
    except FerryError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    else:
        render.print_plan(console, report)
    if report.errors:
        raise typer.Exit(code=1)


@app.command()
def runs(
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs with their per-object figures."""
    rows = _store().list_runs(pipeline, limit)
    if as_json:
        sys.stdout.write(json.dumps([render.run_row_json(r) for r in rows]) + "\n")
    else:
        render.print_runs(console, rows)


StatusOpt = Annotated[str, typer.Option(help="open, resolved, discarded or all.")]
SinceOpt = Annotated[
    str | None, typer.Option(help="Only letters last seen since then: 30m, 2h, 7d, or a date/time (UTC).")
]
ObjectOpt = Annotated[str | None, typer.Option("--object", help="Only this target object.")]
CodeOpt = Annotated[str | None, typer.Option(help="Only this error code, e.g. INVALID_EMAIL_ADDRESS.")]
IdsOpt = Annotated[list[int] | None, typer.Option("--id", help="Only this dead-letter id (repeatable).")]


def _letter_filter(
    pipeline: str | None, obj: str | None, code: str | None, since: str | None, status: str, ids: list[int] | None
) -> Any:
    from ferry.engine.replay import since_timestamp
    from ferry.store import DLQ_STATUSES, LetterFilter

    if status != "all" and status not in DLQ_STATUSES:
        raise FerryError(f"--status {status!r}: choose one of {', '.join((*DLQ_STATUSES, 'all'))}")
    return LetterFilter(pipeline, obj, code, since_timestamp(since), None if status == "all" else status, ids or ())


@dlq_app.command("list")
def dlq_list(
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    object_: ObjectOpt = None,
    code: CodeOpt = None,
    since: SinceOpt = None,
    status: StatusOpt = "open",
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters: records that could not be written, with the reason."""
    try:
        selection = _letter_filter(pipeline, object_, code, since, status, None)
    except FerryError as exc:
        _fail(exc)
        return
    letters = _store().find_dead_letters(selection, limit)
    if as_json:
        sys.stdout.write(json.dumps([render.letter_json(d, full=False) for d in letters]) + "\n")
    else:
        render.print_letters(console, letters)


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[int, typer.Argument(help="Dead-letter id from `ferry dlq list`.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one dead letter: errors, attempts, mapped payload and the source record."""
    letter = _store().get_dead_letter(letter_id)
    if letter is None:
        _fail(FerryError(f"no dead letter with id {letter_id}"))
        return
    if as_json:
        sys.stdout.write(json.dumps(render.letter_json(letter, full=True)) + "\n")
    else:
        render.print_letter(console, letter)


@dlq_app.command("replay")
def dlq_replay(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file (its current mapping is applied).")],
    ids: IdsOpt = None,
    object_: ObjectOpt = None,
    code: CodeOpt = None,
    since: SinceOpt = None,
    children: Annotated[
        bool,
        typer.Option(
            "--children/--no-children",
            help="Also replay records dead-lettered as PARENT_DEAD_LETTERED because of a parent replayed now.",
        ),
    ] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and judge, write nothing.")] = False,
    details: Annotated[
        bool, typer.Option("--verbose", help="List each letter's outcome, not only the summary per object and code.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read dead-lettered records from the source again, map them with the current mapping and write them."""
    from ferry.engine.pipeline import load_pipeline
    from ferry.engine.replay import Replayer

    try:
        spec = load_pipeline(pipeline)
        selection = _letter_filter(spec.name, object_, code, since, "open", ids)
        with render.progress(console, disabled=as_json) as progress:
            replayer = Replayer(spec, _store(), children=children, dry_run=dry_run, progress=progress)
            report = asyncio.run(replayer.replay(selection))
    except FerryError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    else:
        render.print_replay(console, report, verbose=details)


@dlq_app.command("discard")
def dlq_discard(
    reason: Annotated[str, typer.Option(help="Why these letters need no replay (kept with them).")],
    ids: IdsOpt = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    object_: ObjectOpt = None,
    code: CodeOpt = None,
    since: SinceOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Allow discarding with no filter at all.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark open dead letters as discarded, with a reason. Nothing is deleted: `dlq list --status discarded`."""
    if not reason.strip():
        _fail(FerryError("--reason must say why the letters are discarded"))
        return
    if not (ids or pipeline or object_ or code or since or all_):
        _fail(FerryError("say which letters to discard (--id, --pipeline, --object, --code, --since) or pass --all"))
        return
    try:
        selection = _letter_filter(pipeline, object_, code, since, "open", ids)
    except FerryError as exc:
        _fail(exc)
        return
    count = _store().discard_dead_letters(selection, reason.strip())
    if as_json:
        sys.stdout.write(json.dumps({"discarded": count, "reason": reason.strip()}) + "\n")
    else:
        console.print(f"discarded {count} dead letter{'s' if count != 1 else ''}: {reason.strip()}")


@sandbox_app.command("serve")
def sandbox_serve(
    system: Annotated[str, typer.Argument(help="shopify, salesforce, woocommerce or quickbooks")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
    customers: Annotated[int, typer.Option(help="Shopify, WooCommerce: customers to generate.")] = 1000,
    products: Annotated[int, typer.Option(help="Shopify, WooCommerce: products to generate.")] = 200,
    orders: Annotated[int, typer.Option(help="Shopify, WooCommerce: orders to generate.")] = 2000,
    state_dir: Annotated[Path | None, typer.Option(help="Where the CA, keys and state live.")] = None,
    persist: Annotated[
        bool,
        typer.Option("--persist", help="Salesforce: keep the org in <state-dir>/salesforce/org.db across restarts; "
                     "QuickBooks: the company and tokens in <state-dir>/quickbooks/company.json."),
    ] = False,
    latency: Annotated[str, typer.Option(help="Salesforce latency profile: off or real.")] = "off",
    schema: Annotated[
        Path | None, typer.Option(help="Salesforce: a YAML file of objects and fields merged over the built-in schema.")
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="Inject a fault, KIND[:RATE][,path=..,method=..,count=..,ms=..,hold=..,retry_after=..,"
            "processed=true]; KIND: 500 502 503 504 429 limit concurrent lock expire reset timeout latency "
            "(Shopify: 500 502 503 504 429 reset timeout latency; QuickBooks: those and commit_then_reset). "
            "Repeatable.",
        ),
    ] = None,
    lock_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Salesforce: share of record saves failing UNABLE_TO_LOCK_ROW.")
    ] = 0.0,
    expire_session_every: Annotated[
        int, typer.Option(min=0, help="Salesforce: invalidate the token of every Nth API call (401).")
    ] = 0,
    timeout_hold: Annotated[
        float | None, typer.Option(help="Salesforce: seconds a `timeout` fault holds a call (default 30, max 600).")
    ] = None,
    fault_seed: Annotated[
        int | None, typer.Option(help="Seed of the fault draws (default: --seed).")
    ] = None,
    faults_file: Annotated[
        Path | None, typer.Option(help="A JSON fault configuration (the POST /__sandbox/faults body).")
    ] = None,
    daily_api_limit: Annotated[
        int | None, typer.Option(min=1, help="Salesforce: DailyApiRequests allocation (default 1,000,000).")
    ] = None,
    concurrent_limit: Annotated[
        int | None,
        typer.Option(min=1, help="Salesforce: concurrent requests running 20 s or longer (default 25; 5 on a "
                     "Developer Edition org)."),
    ] = None,
    plain_http: Annotated[
        bool, typer.Option("--plain-http", help="WooCommerce: serve http:// (the OAuth 1.0a path) instead of HTTPS.")
    ] = False,
    timezone: Annotated[
        str | None, typer.Option(help="WooCommerce: the store's timezone (default Europe/Berlin).")
    ] = None,
    pubsub_port: Annotated[
        int,
        typer.Option(min=-1, help="Salesforce: port of the Pub/Sub API (gRPC, TLS) on 127.0.0.1; 0 picks a free "
                     "one, -1 serves none."),
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Serve one sandbox over HTTPS on 127.0.0.1 until interrupted."""
    from ferry.cli.serve import fault_config, limit_options, serve_sandbox

    try:
        faults = fault_config(fault or [], seed=seed if fault_seed is None else fault_seed, lock_rate=lock_rate,
                              expire_session_every=expire_session_every, timeout_hold=timeout_hold,
                              faults_file=faults_file)
        serve_sandbox(
            system,
            port=port,
            seed=seed,
            customers=customers,
            products=products,
            orders=orders,
            state_dir=state_dir or ferry_home() / "sandbox",
            as_json=as_json,
            console=console,
            schema=schema,
            persist=persist,
            latency=latency,
            faults=faults,
            limits=limit_options(daily_api_limit, concurrent_limit, pubsub_port if system == "salesforce" else -1),
            plain_http=plain_http,
            timezone=timezone,
        )
    except FerryError as exc:
        _fail(exc)
