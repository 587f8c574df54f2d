"""The `ferry` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from ferry import __version__
from ferry.cli import render
from ferry.cli.exits import Exit, exit_code_of
from ferry.cli.logging import configure_logging
from ferry.errors import ConfigError, FerryError
from ferry.paths import ferry_home


class _FerryTyper(typer.Typer):
    """The `ferry` console script calls the app: every error a user can cause ends there in one line and a
    documented exit code (cli/exits.py), never a traceback. ``FERRY_TRACEBACK=1`` shows an unexpected one's."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            # Not standalone: click's own usage errors come back here instead of being drawn in a Rich box.
            outcome = super().__call__(*args, **{**kwargs, "standalone_mode": False})
        except _CLICK_ERRORS as exc:  # a missing argument, an unknown option or command, a bad value
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.exit(Exit.USAGE)  # the command's help is printed already: that is the answer
            _say_error(_usage_line(exc))
            sys.exit(getattr(exc, "exit_code", Exit.USAGE))
        except typer.Abort:  # end of input at a prompt (Ctrl-C arrives as typer.Exit(130))
            _say_error("aborted")
            sys.exit(Exit.FAILED)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("FERRY_TRACEBACK") and not isinstance(exc, FerryError | OSError | sqlite3.Error):
                raise
            _say_error(_one_line_of(exc))
            sys.exit(_exit_code_of_any(exc))
        # Not standalone, click returns a command's `typer.Exit(code)` instead of exiting with it.
        sys.exit(outcome if isinstance(outcome, int) else 0)


def _usage_line(exc: Exception) -> str:
    """Click's message on one line, and where the command's usage is (``ferry run --help``)."""
    message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
    ctx = getattr(exc, "ctx", None)
    path = str(ctx.command_path) if ctx is not None else ""
    command = "ferry" + path[path.index(" "):] if " " in path else "ferry"  # `python -m ferry` says ferry too
    return f"{message} (see: {command} --help)"


def _click_errors() -> tuple[type[Exception], ...]:
    """The exception types of click's usage errors: typer >= 0.2x vendors click (its own ``TyperException``);
    older ones raise click's."""
    from typer.exceptions import TyperException

    found: list[type[Exception]] = [TyperException]
    try:
        import click

        found.append(click.ClickException)
    except ImportError:  # pragma: no cover - typer without click
        pass
    return tuple(found)


_CLICK_ERRORS = _click_errors()


def _one_line_of(exc: Exception) -> str:
    if isinstance(exc, FerryError):
        return str(exc)
    if isinstance(exc, sqlite3.Error):
        return f"state database: {exc}"
    if isinstance(exc, OSError):  # a file or directory ferry was pointed at cannot be used
        return f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc.strerror or exc)
    return f"unexpected {type(exc).__name__}: {exc} (a bug in ferry: FERRY_TRACEBACK=1 shows where)"


def _exit_code_of_any(exc: Exception) -> int:
    if isinstance(exc, OSError):
        return Exit.USAGE
    return exit_code_of(exc)


app = _FerryTyper(
    name="ferry",
    help="Move orders, customers and products between systems: never lost, never duplicated.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold secrets
)
dlq_app = _FerryTyper(help="Inspect, replay and discard dead letters.", no_args_is_help=True)
sandbox_app = _FerryTyper(help="Local emulators of the systems ferry talks to.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(sandbox_app, name="sandbox")

# Piped output keeps whole table rows instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _store() -> Any:
    """The state store FERRY_STATE_URL names (default: SQLite in FERRY_HOME)."""
    from ferry.store.factory import open_store

    return open_store()


def _say_error(message: str) -> None:
    """``error: <message>`` on stderr, the message printed as it is: never read as markup."""
    from ferry.cli.logging import fold_retries  # a call that gave up: its attempts in this line, not another

    err_console.print(Text.assemble(("error:", "bold red"), " ", fold_retries(message)), soft_wrap=True,
                      highlight=False)


def _fail(exc: Exception) -> None:
    _say_error(str(exc))
    raise typer.Exit(code=exit_code_of(exc))


class LogFormat(StrEnum):
    console = "console"
    json = "json"


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"ferry {__version__}\n")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True,
                     help="More log lines on stderr: -v a run's progress (info), -vv every retry (debug)."),
    ] = 0,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Log lines as text (console) or one JSON object a line (json).")
    ] = LogFormat.console,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print ferry's version and exit."),
    ] = False,
) -> None:
    configure_logging(verbose, log_format.value)
    # Traces go out over OTLP only when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (docs/observability.md).
    from ferry.observe.tracing import configure_tracing

    configure_tracing()


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
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Keep the sandboxes running after the run (Ctrl-C stops them), with the "
                     "pipeline file and environment it used: its dead letters can be replayed."),
    ] = False,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="After the run, keep the sandboxes up and serve the dashboard on 127.0.0.1 "
                     "(its URL is printed) until Ctrl-C: the run, its chart and dead letters, replay included."),
    ] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="--serve: the dashboard's port (0: a free one).")] = 0,
    seconds: Annotated[float, typer.Option(min=1, help="realtime: how long to make changes.")] = 10.0,
    rate: Annotated[float, typer.Option(min=0.5, max=500, help="realtime: changes a second.")] = 5.0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Sync through N `ferry worker` processes over FERRY_STATE_URL (PostgreSQL) and "
                     "FERRY_BUS_URL (NATS JetStream), then check the org record by record (README, 'Scale out')."),
    ] = None,
    kill_worker: Annotated[
        bool, typer.Option("--kill-worker", help="--workers: SIGKILL one worker while it holds rows of the load.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a store's and a target's sandbox, generate a messy store, and sync it with the example pipeline.

    `ferry demo realtime [--seconds N --rate R]`: a two-way sync (Shopify <-> Salesforce) live in `ferry serve`."""
    from ferry.cli.demo import FLOWS, demo_flow, run_demo

    if flow == "realtime" and not list_flows:
        _demo_realtime(seconds, rate, as_json)
        return
    if workers is not None or kill_worker:
        if keep or serve or list_flows:
            _fail(ConfigError("--workers / --kill-worker do not go with --keep, --serve or --list"))
        _demo_distributed(flow, workers, kill_worker, customers, products, orders, seed, as_json)
        return

    if list_flows:
        if as_json:
            listed = [{"flow": f.name, "source": f.source, "target": f.target} for f in FLOWS.values()]
            sys.stdout.write(json.dumps(listed) + "\n")
        else:
            for f in FLOWS.values():
                console.print(f"{f.name}  [dim]({f.source_label} -> {f.target_label}, examples/{f.name}.yml)[/]")
        return
    try:
        chosen = demo_flow(flow)
        result = run_demo(
            customers=customers, products=products, orders=orders, seed=seed, quiet=as_json, console=console,
            flow=chosen.name, keep=keep, serve_port=port if serve else None,
        )
    except FerryError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(
            json.dumps(render.demo_json(result, source_system=chosen.source, target_system=chosen.target)) + "\n"
        )
    else:
        if not (keep or serve):  # --keep and --serve printed the run before serving on
            render.print_run(console, result)
        render.print_next_steps(console, result.pipeline, chosen.name, kept=keep or serve)


def _demo_distributed(
    flow: str, workers: int | None, kill: bool, customers: int, products: int, orders: int, seed: int, as_json: bool
) -> None:
    """`ferry demo --workers N [--kill-worker]` (cli/demo_distributed.py): exit 0 only when every record landed
    once or is dead-lettered with its reason; 2 without PostgreSQL and NATS; 130/143 interrupted."""
    from ferry.cli.demo_distributed import DemoStopped, render_lines, run_distributed_demo

    if workers is None:
        _fail(ConfigError("--kill-worker needs --workers N (2 or more)"))
        return
    say = (lambda _: None) if as_json else (lambda line: console.print(line, highlight=False, markup=False))
    try:
        demo = run_distributed_demo(workers=workers, kill=kill, customers=customers, products=products,
                                    orders=orders, seed=seed, say=say, flow=flow)
    except FerryError as exc:
        _fail(exc)
        return
    except (DemoStopped, KeyboardInterrupt) as stop:
        _say_error("the demo was interrupted; its workers and sandboxes are stopped")
        raise typer.Exit(code=getattr(stop, "exit_code", Exit.INTERRUPTED)) from None
    report = demo.as_dict()
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for line in render_lines(report):
            console.print(line, highlight=False, markup=False)
    if not demo.ok:
        raise typer.Exit(code=Exit.FAILED)


def _demo_realtime(seconds: float, rate: float, as_json: bool) -> None:
    from ferry.cli.demo_realtime import render, run_realtime

    lines = (lambda _: None) if as_json else (lambda line: console.print(line, highlight=False, markup=False))
    try:
        report = run_realtime(seconds, rate, lines)
    except FerryError as exc:
        _fail(exc)
        return
    figures = report.as_dict()
    if as_json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        for line in render(figures):
            console.print(line, highlight=False, markup=False)
    if not figures["ok"]:
        raise typer.Exit(1)


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file, or the name of a packaged example.")],
    force: Annotated[
        bool, typer.Option("--force", help="Write even when `ferry plan` reports problems with the mapping.")
    ] = False,
    as_json: JsonOpt = False,
    metrics_file: Annotated[
        Path | None,
        typer.Option("--metrics-file", envvar="FERRY_METRICS_FILE",
                     help="Write the run's Prometheus metrics to this file when it ends (for node_exporter's "
                     "textfile collector; docs/observability.md)."),
    ] = None,
    distributed: Annotated[
        bool | None,
        typer.Option("--distributed/--embedded",
                     help="Hand the loads to `ferry worker`s over the bus (default: when FERRY_BUS_URL is set and "
                     "the state is PostgreSQL; docs/distributed.md)."),
    ] = None,
) -> None:
    """Run a pipeline once: read what changed, write it, dead-letter what cannot be written.

    Exit codes: 0 done, 1 failed, 2 usage or configuration error (nothing written), 3 an object's dead letters
    over max_dead_letter_share, 4 done with dead letters within it, 5 try later (API budget paused, or the
    pipeline is running elsewhere), 6 state directory unusable, 130/143 interrupted (SIGINT/SIGTERM)."""
    from ferry.engine.pipeline import load_pipeline
    from ferry.engine.runner import Runner

    try:
        spec = load_pipeline(pipeline)
        store = _store()
        settings = _distributed_settings(distributed, store)
        runner: Runner
        if settings is not None:
            from ferry.engine.distributed import DistributedRunner

            runner = DistributedRunner(spec, store, settings, force=force, batch=_work_batch())
        else:
            runner = Runner(spec, store, force=force)
        with render.progress(console, disabled=as_json) as progress, _metrics_written_to(metrics_file):
            runner.progress = progress
            stats = _run_until_signalled(runner)
    except _Interrupted as stop:
        _say_error(stop.message(runner.run_id))
        raise typer.Exit(code=stop.exit_code) from None
    except FerryError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(stats.as_dict()) + "\n")
    else:
        render.print_run(console, stats)
    raise typer.Exit(code=_run_exit_code(stats))


def _work_batch() -> int:
    """Outbox rows per load work item of a distributed run (FERRY_WORK_BATCH, default 200)."""
    raw = os.environ.get("FERRY_WORK_BATCH", "200")
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"FERRY_WORK_BATCH={raw!r}: a whole number of records, 1 or more")
    return int(raw)


def _distributed_settings(wanted: bool | None, store: Any) -> Any:
    """The bus settings when this run hands its loads to workers, else None (the embedded run)."""
    from ferry.cli.worker import worker_settings

    if wanted is False:
        return None
    shared = type(store).__name__ == "PostgresStore"
    if wanted is None:
        if not (shared and os.environ.get("FERRY_BUS_URL")):
            return None
    elif not shared:
        raise ConfigError("--distributed needs a shared state store: set FERRY_STATE_URL=postgresql://...")
    return worker_settings(None)


@app.command()
def worker(
    pipelines: Annotated[list[Path], typer.Argument(help="Pipeline YAML files this worker may be given work for.")],
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Work items this process handles at once (default FERRY_BUS_MAX_IN_FLIGHT)."),
    ] = None,
) -> None:
    """Take work from the bus (FERRY_BUS_URL) and do it against the shared state (FERRY_STATE_URL, PostgreSQL).

    Run any number, on any machines sharing both. SIGTERM/SIGINT: finish the items in hand, exit 0.
    Exit codes: 2 configuration error, 6 state store unusable."""
    from ferry.cli.worker import load_specs, serve_until_signalled, shared_store, worker_settings

    try:
        settings = worker_settings(concurrency)
        store = shared_store(settings.max_in_flight)
        specs = load_specs(pipelines)
        err_console.print(f"ferry worker: taking work for {', '.join(sorted(specs))} "
                          f"(concurrency {settings.max_in_flight})", markup=False, highlight=False)
        sent = serve_until_signalled(specs, store, settings)
        err_console.print(f"ferry worker: stopped; records sent: {sent}", markup=False, highlight=False)
    except FerryError as exc:
        _fail(exc)
        return


@contextmanager
def _metrics_written_to(path: Path | None) -> Iterator[None]:
    """The metrics of the process written to ``path`` when the block ends, whichever way (a failed run too)."""
    try:
        yield
    finally:
        if path is not None:
            from ferry.observe.metrics import write_textfile

            write_textfile(path)


def _run_exit_code(stats: Any) -> int:
    if stats.status == "paused":
        return Exit.TRY_LATER
    if stats.status != "succeeded":
        return Exit.FAILED
    if stats.over_dead_letter_cap():
        return Exit.DEAD_LETTERS_OVER_SHARE
    return Exit.DEAD_LETTERS if stats.dead_lettered else Exit.OK


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum

    def message(self, run_id: int | None) -> str:
        which = f"run {run_id}" if run_id is not None else "the run"
        return (
            f"{signal.Signals(self.signum).name}: {which} stopped and marked interrupted; what it committed is kept, "
            "and the next `ferry run` resumes from there"
        )


def _run_until_signalled(runner: Any) -> Any:
    """The run, cancelled cleanly by SIGINT or SIGTERM (its row is then marked interrupted): ``_Interrupted``."""
    received: list[int] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await runner.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise _Interrupted(received[0] if received else signal.SIGINT) from None


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
def dashboard(
    pipelines: Annotated[
        list[Path] | None,
        typer.Argument(help="Pipeline files whose plans to show and whose dead letters to replay (runs and dead "
                       "letters of every pipeline in the state store are shown either way)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind. Any other than loopback requires FERRY_DASHBOARD_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 picks a free one).")] = 8050,
) -> None:
    """Serve the web dashboard: runs, throughput, API budget, dead letters (replay, discard), pipeline plans."""
    from ferry.engine.pipeline import load_pipeline
    from ferry.web import Dashboard, DashboardAccess
    from ferry.web.server import DashboardServer

    try:
        access = DashboardAccess.from_env(host)
        specs = {spec.name: spec for spec in (load_pipeline(p) for p in pipelines or [])}
        server = DashboardServer(Dashboard(_store(), specs, access), host, port)
    except FerryError as exc:
        _fail(exc)
        return
    server.serve_forever(lambda url: console.print(
        f"ferry dashboard on {url}{'login' if access.required else ''}  (Ctrl-C stops it)", highlight=False))


@app.command()
def runs(
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs with their per-object figures (`died`: its process is gone without finishing)."""
    store = _store()
    _known_pipeline(store, pipeline)
    from ferry.engine.runcalls import with_run_calls

    # A distributed run's calls: its workers' too, also when its coordinator died or is still running.
    rows = with_run_calls(store, _with_dead_runs(store, store.list_runs(pipeline, limit)))
    if as_json:
        sys.stdout.write(json.dumps([render.run_row_json(r) for r in rows]) + "\n")
    else:
        render.print_runs(console, rows)


@app.command("serve")
def serve_command(
    pipelines: Annotated[list[Path], typer.Argument(help="Pipeline YAML files (or packaged example names).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")] = 8080,
    public_url: Annotated[
        str | None, typer.Option(help="The URL the sources deliver to (default: this server's own).")
    ] = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Create the webhook subscriptions at the sources.")
    ] = True,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
    window_ms: Annotated[
        int | None, typer.Option(min=0, max=600_000, help="How long a micro-batch gathers events after the first "
                                 "(default: each pipeline's realtime.max_wait_ms, 150 unless set).")
    ] = None,
    dedup_hours: Annotated[
        float, typer.Option(min=4, help="How long a delivery id is remembered (Shopify retries for 4 h).")
    ] = 24.0,
    no_schedules: Annotated[bool, typer.Option("--no-schedules", help="Do not run the pipelines' schedules.")] = False,
    distributed: Annotated[
        bool | None,
        typer.Option("--distributed/--embedded",
                     help="Hand events to `ferry worker`s over the bus (default: when FERRY_BUS_URL is set and "
                     "the state is PostgreSQL; docs/distributed.md)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve pipelines: take their webhooks in, load events in micro-batches, run their schedules.

    Exit codes: 2 usage or configuration error, 6 state directory unusable, 130/143 stopped by SIGINT/SIGTERM
    (after requests under way finished and each event batch under way was written)."""
    from ferry.cli.serving import serve_pipelines
    from ferry.serve.service import ServeOptions

    try:
        store = _store()
        options = ServeOptions(
            host=host, port=port, public_url=public_url, register=register, tls_cert=tls_cert, tls_key=tls_key,
            window=None if window_ms is None else window_ms / 1000, dedup_hours=dedup_hours,
            schedules=not no_schedules, bus=_distributed_settings(distributed, store),
        )
        code = serve_pipelines(pipelines, options, store, console, as_json=as_json)
    except FerryError as exc:
        _fail(exc)
        return
    raise typer.Exit(code=code)


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check the configured state store (FERRY_STATE_URL: reachable, migrations current) and say what to fix.

    Exit codes: 0 every check passed, 6 a check failed."""
    from ferry.cli.doctor import run_checks

    checks = run_checks()
    if as_json:
        sys.stdout.write(json.dumps([c.as_dict() for c in checks]) + "\n")
    else:
        for c in checks:
            mark = Text("ok  ", style="green") if c.ok else Text("FAIL", style="bold red")
            console.print(Text.assemble(mark, " ", (c.name, "bold"), ": ", c.detail), highlight=False)
            if not c.ok and c.fix:
                console.print(Text.assemble("      fix: ", c.fix), highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(code=Exit.STATE)


@app.command()
def migrate() -> None:
    """Bring the PostgreSQL state database (FERRY_STATE_URL) to this ferry's schema; safe to run from many
    machines at once. SQLite state migrates itself when opened."""
    from ferry.cli.doctor import migrate_state

    url, applied = migrate_state()
    if url.kind != "postgresql":
        console.print(f"{url.safe}: SQLite state migrates itself on open; nothing to do", highlight=False)
    elif applied:
        console.print(f"{url.safe}: applied migration(s) {', '.join(map(str, applied))}", highlight=False)
    else:
        console.print(f"{url.safe}: schema already current", highlight=False)


def _known_pipeline(store: Any, pipeline: str | None) -> None:
    """An unknown --pipeline is a usage error naming the known ones, not an empty list."""
    if pipeline is None:
        return
    known = store.pipelines()
    if pipeline not in known:
        import difflib

        close = difflib.get_close_matches(pipeline, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else (
            f"; known: {', '.join(sorted(known))}" if known else "; no pipeline has run with this FERRY_HOME yet"
        )
        raise ConfigError(f"--pipeline {pipeline}: no run and no dead letter of such a pipeline{hint}")


def _with_dead_runs(store: Any, rows: list[Any]) -> list[Any]:
    """A row still `running` whose pipeline lock no process holds: that process died (shown `died`)."""
    from dataclasses import replace

    from ferry.store.lease import is_running

    live: dict[str, bool] = {}
    out = []
    for r in rows:
        if r.status == "running":
            if r.pipeline not in live:
                shared = getattr(store, "is_running", None)  # PostgreSQL: its advisory lock, on any machine
                live[r.pipeline] = shared(r.pipeline) if shared else is_running(store.path.parent, r.pipeline)
            if not live[r.pipeline]:
                r = replace(r, status="died")
        out.append(r)
    return out


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
        raise ConfigError(f"--status {status!r}: choose one of {', '.join((*DLQ_STATUSES, 'all'))}")
    return LetterFilter(pipeline, obj, code, since_timestamp(since), None if status == "all" else status, ids or ())


@dlq_app.command("list")
def dlq_list(
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    object_: ObjectOpt = None,
    code: CodeOpt = None,
    since: SinceOpt = None,
    status: StatusOpt = "open",
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first (paging: --offset 100).")] = 0,
    all_: Annotated[bool, typer.Option("--all", help="Show every matching letter (no --limit).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters: records that could not be written, with the reason. Says how many match in all."""
    try:
        selection = _letter_filter(pipeline, object_, code, since, status, None)
        store = _store()
        _known_pipeline(store, pipeline)
    except FerryError as exc:
        _fail(exc)
        return
    letters = store.find_dead_letters(selection, None if all_ else limit, offset)
    total = store.count_matching_letters(selection)
    if as_json:
        sys.stdout.write(json.dumps([render.letter_json(d, full=False) for d in letters]) + "\n")
    else:
        render.print_letters(console, letters)
        _print_more_letters(len(letters), offset, total, limit)


def _print_more_letters(shown: int, offset: int, total: int, limit: int) -> None:
    """The count of what matched and how to see the rest, when the list is not all of it."""
    if shown == total:
        return
    first, last = (offset + 1, offset + shown) if shown else (offset, offset)
    left = total - offset - shown
    more = f"--offset {offset + shown} for the next {min(limit, left)}" if left > 0 else ""
    hint = ", ".join(part for part in (more, "--all for every one", "--limit N for N a page") if part)
    console.print(Text(f"showing {first:,}-{last:,} of {total:,} matching dead letters: {hint}"))


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[int, typer.Argument(help="Dead-letter id from `ferry dlq list`.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one dead letter: errors, attempts, mapped payload and the source record."""
    letter = _store().get_dead_letter(letter_id)
    if letter is None:
        _fail(ConfigError(f"no dead letter with id {letter_id}"))
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
        _fail(ConfigError("--reason must say why the letters are discarded"))
        return
    if not (ids or pipeline or object_ or code or since or all_):
        _fail(ConfigError("say which letters to discard (--id, --pipeline, --object, --code, --since) or pass --all"))
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
        console.print(Text(f"discarded {count} dead letter{'s' if count != 1 else ''}: {reason.strip()}"))


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
    env: Annotated[
        bool,
        typer.Option("--env", help="Announce with `export NAME=value` lines: the variables the example pipelines "
                     "read (`ferry sandbox serve shopify --env > shop.env &`, then `. shop.env`)."),
    ] = False,
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
            env=env,
        )
    except FerryError as exc:
        _fail(exc)


@sandbox_app.command("env")
def sandbox_env(
    system: Annotated[str, typer.Argument(help="shopify, salesforce or woocommerce")],
    state_dir: Annotated[Path | None, typer.Option(help="The running sandbox's --state-dir.")] = None,
) -> None:
    """Print `export NAME=value` lines pointing the example pipelines at a running sandbox: `eval "$(ferry
    sandbox env shopify)"`."""
    from ferry.cli.serve import print_sandbox_env

    try:
        print_sandbox_env(system, state_dir or ferry_home() / "sandbox")
    except FerryError as exc:
        _fail(exc)
