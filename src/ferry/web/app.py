"""The dashboard's routes: ``build_dashboard`` gives an ``APIRouter`` (``ferry serve`` mounts it at ``/``),
``create_app`` a stand-alone FastAPI app (``ferry dashboard``, ``ferry demo --serve``).

Pipelines: the dashboard reads runs and dead letters of every pipeline in the store, but replay and plans need
a pipeline's spec (source, target, mapping); the store does not keep pipeline files, so they are given when the
dashboard starts (``ferry dashboard a.yml b.yml``), and a pipeline without one is shown read-only.

Handlers are ``async``: the store's calls are short local transactions, cheaper than a thread hop, and a replay
awaits the same ``Replayer`` as ``ferry dlq replay``.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, SecretStr

from ferry.core.ports import DLQ_STATUSES, LetterFilter
from ferry.engine import runcalls
from ferry.engine.inspect import inspect_pipeline
from ferry.engine.pipeline import PipelineSpec
from ferry.engine.replay import Replayer, since_timestamp
from ferry.errors import ConfigError, FerryError
from ferry.observe import metrics
from ferry.store import Store
from ferry.web import figures, live, pages
from ferry.web.masking import SECRET_KEY, mask_known
from ferry.web.security import AUTH_COOKIE, CSRF_FIELD, SESSION_COOKIE, DashboardAccess, new_session

RUNS_SHOWN = 200
CHART_RUNS = 5000  # runs read for the last 24 h's chart (a run a minute is 1,440)
LETTERS_SHOWN = 200
CONFIRM_SAMPLE = 20
PLAN_TIMEOUT = 60.0
STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}


@dataclass
class Dashboard:
    """What the pages read: the state store, the pipelines given at start-up, and who may use it."""

    store: Store
    specs: Mapping[str, PipelineSpec] = field(default_factory=dict)
    access: DashboardAccess = field(default_factory=DashboardAccess)
    # Inside ``ferry serve``: the pipelines pages show the real-time panel (events/s, queues, latencies).
    realtime: bool = False
    # Secret values of the pipelines' configuration (tokens, passwords): masked in every page as a last defence.
    secrets: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        for spec in self.specs.values():
            self.secrets |= _secret_values(spec)
        if self.access.token:
            self.secrets.add(self.access.token)
        # As they would appear in a page: HTML-escaped, and inside a JSON payload (escaped, then HTML-escaped).
        for secret in list(self.secrets):
            self.secrets |= {html.escape(secret), html.escape(json.dumps(secret, ensure_ascii=False)[1:-1]),
                             json.dumps(secret)[1:-1]}


def _secret_values(value: Any, secret: bool = False) -> set[str]:
    """Secret strings anywhere in a pipeline's configuration: every ``SecretStr``, and any string value under a
    secret-named key (a token read from the environment into a plain field)."""
    if isinstance(value, SecretStr):
        return _secret_values(value.get_secret_value(), True)
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        out: set[str] = set()
        for k, v in value.items():
            out |= _secret_values(v, secret or bool(SECRET_KEY.search(str(k))))
        return out
    if isinstance(value, list | tuple):
        return set().union(*(_secret_values(v, secret) for v in value)) if value else set()
    return {value} if secret and isinstance(value, str) and len(value) >= 4 else set()


def build_dashboard(dash: Dashboard) -> APIRouter:
    """Every route of the dashboard, to mount at ``/``: ``/login`` and ``/static`` open, the rest behind the token
    when one is set."""
    protected = APIRouter(dependencies=[Depends(_authorized(dash))])
    _page_routes(protected, dash)
    _letter_routes(protected, dash)
    _pipeline_routes(protected, dash)
    _api_routes(protected, dash)
    router = APIRouter()
    router.include_router(login_router(dash))
    router.include_router(protected)
    return router


def login_router(dash: Dashboard) -> APIRouter:
    """``/login`` and ``/static``: reachable before signing in (the login page needs its CSS)."""
    router = APIRouter()

    @router.get("/login", response_class=HTMLResponse)
    async def login_form() -> HTMLResponse:
        return HTMLResponse(pages.login_page(False))

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if not dash.access.required:
            return RedirectResponse("/", status_code=303)
        if not dash.access.token_ok(form.get("token")):
            return HTMLResponse(pages.login_page(True), status_code=401)
        out = RedirectResponse("/", status_code=303)
        out.set_cookie(AUTH_COOKIE, dash.access.auth_cookie_value(), httponly=True, samesite="strict")
        return out

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404)
        text = resources.files("ferry.web").joinpath("static", name).read_text(encoding="utf-8")
        return Response(text, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    return router


def create_app(dash: Dashboard) -> FastAPI:
    """The stand-alone dashboard (``ferry dashboard``, ``ferry demo --serve``), with ``/metrics`` for Prometheus
    (``ferry serve`` has its own, open like its webhooks; here it is behind the dashboard's token when one is
    required: Prometheus sends it as ``Authorization: Bearer``)."""
    app = FastAPI(title="ferry dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(build_dashboard(dash))

    @app.get("/metrics", dependencies=[Depends(_authorized(dash))])
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


# ----------------------------------------------------------------------------------------------- access


def _authorized(dash: Dashboard) -> Any:
    async def check(request: Request) -> None:
        access = dash.access
        if not access.required:
            return
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and access.token_ok(header[7:].strip()):
            return
        if access.auth_cookie_ok(request.cookies.get(AUTH_COOKIE)):
            return
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            raise HTTPException(303, headers={"Location": "/login"})
        raise HTTPException(401, "a dashboard token is required", headers={"WWW-Authenticate": "Bearer"})

    return check


def _session(request: Request) -> tuple[str, bool]:
    """The browser's session id (for its CSRF token), and whether it is new (to be set as a cookie)."""
    existing = request.cookies.get(SESSION_COOKIE)
    return (existing, False) if existing else (new_session(), True)


def _html(dash: Dashboard, text: str, session: tuple[str, bool] | None = None, status: int = 200) -> HTMLResponse:
    out = HTMLResponse(mask_known(text, dash.secrets), status_code=status,
                       headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
                                "Referrer-Policy": "same-origin"})
    if session and session[1]:
        out.set_cookie(SESSION_COOKIE, session[0], httponly=True, samesite="strict")
    return out


async def _form(request: Request, dash: Dashboard) -> list[tuple[str, str]]:
    """The POSTed form's fields, after the CSRF check: a form without this session's token is refused."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise HTTPException(415, "post a form (application/x-www-form-urlencoded)")
    fields = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    given = next((v for k, v in fields if k == CSRF_FIELD), None)
    if not dash.access.csrf_ok(request.cookies.get(SESSION_COOKIE), given):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return fields


# ----------------------------------------------------------------------------------------------- runs


def _summaries(dash: Dashboard, limit: int = RUNS_SHOWN) -> list[dict[str, Any]]:
    return [figures.run_summary(r) for r in _runs(dash, limit)]


def _runs(dash: Dashboard, limit: int = RUNS_SHOWN) -> list[Any]:
    from dataclasses import replace

    from ferry.store.lease import is_running

    # A distributed run's calls: its workers' too, also when its coordinator died or is still running.
    rows = runcalls.with_run_calls(dash.store, dash.store.list_runs(None, limit))
    live: dict[str, bool] = {}
    out = []
    for r in rows:  # a row still `running` whose pipeline lock no process holds: that process died
        home = getattr(dash.store, "path", None)
        if r.status == "running" and home is not None:  # the lease lives next to a file-backed store
            if r.pipeline not in live:
                live[r.pipeline] = is_running(home.parent, r.pipeline)
            if not live[r.pipeline]:
                r = replace(r, status="died")
        out.append(r)
    return out


def _page_routes(router: APIRouter, dash: Dashboard) -> None:
    @router.get("/", response_class=HTMLResponse)
    async def runs_page() -> HTMLResponse:
        rows = _runs(dash, CHART_RUNS)
        summaries = [figures.run_summary(r) for r in rows[:RUNS_SHOWN]]
        return _html(dash, pages.runs_page(summaries, figures.throughput(rows), figures.budgets(rows),
                                           live.live_budgets(), figures.source_calls(rows)))

    @router.get("/runs/rows", response_class=HTMLResponse)
    async def run_rows() -> HTMLResponse:
        """The runs table's body, which the page's script polls while a run is running."""
        rows = pages.run_rows(_summaries(dash))
        return _html(dash, "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows))

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    async def run_page(run_id: int) -> HTMLResponse:
        row = dash.store.get_run(run_id)
        if row is None:
            raise HTTPException(404, f"no run {run_id}")
        row = next((r for r in _runs(dash) if r.id == run_id), None) or runcalls.with_run_calls(dash.store, [row])[0]
        live = None
        if row.status == "running":
            live = {"staged": dash.store.staged_count(row.pipeline), "queued": dash.store.outbox_count(row.pipeline)}
        return _html(dash, pages.run_page(figures.run_summary(row), live))


def _api_routes(router: APIRouter, dash: Dashboard) -> None:
    @router.get("/api/runs")
    async def runs_json(limit: int = 50) -> JSONResponse:
        return JSONResponse(_summaries(dash, max(1, min(limit, 1000))))

    @router.get("/api/throughput")
    async def throughput_json() -> JSONResponse:
        rows = _runs(dash, CHART_RUNS)
        return JSONResponse({**figures.throughput(rows), "budgets": figures.budgets(rows),
                             "source_calls": figures.source_calls(rows), "live_budgets": live.live_budgets()})

    @router.get("/api/live")
    async def live_json() -> JSONResponse:
        """What the real-time panel polls: recent events/s, queue depth, latency percentiles, live budgets."""
        return JSONResponse({"realtime": dash.realtime, **live.realtime(dash.specs)})


# ----------------------------------------------------------------------------------------------- dead letters


def _criteria(params: Mapping[str, str] | Sequence[tuple[str, str]]) -> dict[str, str]:
    items = params.items() if isinstance(params, Mapping) else params
    return {k: v.strip() for k, v in items if k in ("pipeline", "object", "code", "since", "status") and v.strip()}


def _selection(criteria: Mapping[str, str], ids: Sequence[int] = (), status: str | None = None) -> LetterFilter:
    status = status or criteria.get("status", "open")
    if status != "all" and status not in DLQ_STATUSES:
        raise ConfigError(f"status {status!r}: choose one of {', '.join((*DLQ_STATUSES, 'all'))}")
    return LetterFilter(criteria.get("pipeline"), criteria.get("object"), criteria.get("code"),
                        since_timestamp(criteria.get("since")), None if status == "all" else status, tuple(ids))


def _filter_options(dash: Dashboard) -> dict[str, list[str]]:
    """What the filter's drop-downs offer, from cheap grouped counts: the pipelines and the objects with letters
    (the error code is typed, with the codes on the page as suggestions)."""
    objects: set[str] = set()
    for status in DLQ_STATUSES:
        objects |= set(dash.store.count_dead_letters(None, status))
    return {"pipelines": sorted(dash.store.pipelines() | set(dash.specs)), "objects": sorted(objects)}


def _letter_routes(router: APIRouter, dash: Dashboard) -> None:
    @router.get("/letters", response_class=HTMLResponse)
    async def letters(request: Request) -> HTMLResponse:
        session = _session(request)
        criteria = _criteria(dict(request.query_params))
        try:
            selection = _selection(criteria)
        except FerryError as exc:
            raise HTTPException(400, str(exc)) from None
        found = dash.store.find_dead_letters_lean(selection, LETTERS_SHOWN)
        total = dash.store.count_matching_letters(selection)
        page = pages.letters_page(found, total, criteria, dash.access.csrf_for(session[0]), _filter_options(dash),
                                  set(dash.specs))
        return _html(dash, page, session)

    @router.get("/letters/{letter_id}", response_class=HTMLResponse)
    async def letter(request: Request, letter_id: int) -> HTMLResponse:
        d = dash.store.get_dead_letter(letter_id)
        if d is None:
            raise HTTPException(404, f"no dead letter {letter_id}")
        session = _session(request)
        return _html(dash, pages.letter_page(d, dash.access.csrf_for(session[0]), d.pipeline in dash.specs), session)

    @router.post("/letters/action", response_class=HTMLResponse)
    async def act(request: Request) -> HTMLResponse:
        fields = await _form(request, dash)
        session = _session(request)
        form = dict(fields)
        action = form.get("action", "")
        if action not in ("replay", "discard"):
            raise HTTPException(400, "action must be replay or discard")
        try:
            ids = [int(v) for k, v in fields if k == "id"]
            selection = _selection(_criteria(fields), ids, status="open")
        except (ValueError, FerryError) as exc:
            raise HTTPException(400, f"bad selection: {exc}") from None
        if not form.get("confirm"):
            count = dash.store.count_matching_letters(selection)
            sample = dash.store.find_dead_letters_lean(selection, CONFIRM_SAMPLE)
            return _html(dash, pages.confirm_page(action, fields, count, sample, dash.access.csrf_for(session[0])),
                         session)
        if action == "discard":
            reason = form.get("reason", "").strip()
            if len(reason) < 3:
                raise HTTPException(400, "say why these letters need no replay (reason)")
            count = dash.store.discard_dead_letters(selection, f"{reason} (dashboard)")
            return _html(dash, pages.discard_result_page(count, reason), session)
        report = await _replay(dash, selection)
        return _html(dash, pages.replay_result_page(report), session)


async def _replay(dash: Dashboard, selection: LetterFilter) -> dict[str, Any]:
    """The same Replayer as ``ferry dlq replay``, once per pipeline the chosen letters belong to."""
    chosen = dash.store.find_dead_letters_lean(selection, limit=100_000)
    by_pipeline = sorted({d.pipeline for d in chosen})
    merged: dict[str, Any] = {"pipeline": ", ".join(by_pipeline) or "-", "counts": {}, "outcomes": [],
                              "skipped": []}
    for name in by_pipeline:
        spec = dash.specs.get(name)
        if spec is None:
            merged["skipped"] += [{"id": d.id, "reason": f"pipeline {name} was not given to the dashboard"}
                                  for d in chosen if d.pipeline == name]
            continue
        one = LetterFilter(name, selection.object, selection.code, selection.since, "open", selection.ids)
        try:
            report = (await Replayer(spec, dash.store).replay(one)).as_dict()
        except FerryError as exc:
            merged["skipped"] += [{"id": d.id, "reason": f"replay failed: {exc}"} for d in chosen
                                  if d.pipeline == name]
            continue
        for k, n in report["counts"].items():
            merged["counts"][k] = merged["counts"].get(k, 0) + n
        merged["outcomes"] += report["outcomes"]
        merged["skipped"] += report["skipped"]
    return merged


# ----------------------------------------------------------------------------------------------- pipelines


def _pipeline_routes(router: APIRouter, dash: Dashboard) -> None:
    @router.get("/pipelines", response_class=HTMLResponse)
    async def pipelines() -> HTMLResponse:
        names = sorted(dash.store.pipelines() | set(dash.specs))
        entries = []
        for name in names:
            last = dash.store.list_runs(name, 1)
            entries.append({"name": name, "loaded": name in dash.specs,
                            "last": figures.run_summary(last[0]) if last else None,
                            "open_letters": sum(dash.store.count_dead_letters(name).values())})
        realtime = live.realtime(names) if dash.realtime else None
        return _html(dash, pages.pipelines_page(entries, realtime))

    @router.get("/pipelines/{name}", response_class=HTMLResponse)
    async def pipeline(name: str) -> HTMLResponse:
        if name not in dash.specs and name not in dash.store.pipelines():
            raise HTTPException(404, f"no pipeline {name}")
        last = dash.store.list_runs(name, 1)
        plan, error = None, None
        spec = dash.specs.get(name)
        if spec is None:
            error = "the pipeline file was not given to the dashboard: `ferry dashboard PIPELINE.yml` shows its plan"
        else:
            try:
                plan = (await asyncio.wait_for(inspect_pipeline(spec, dash.store), PLAN_TIMEOUT)).as_dict()
            except (FerryError, TimeoutError) as exc:
                error = f"the plan could not be made: {exc or 'the systems did not answer in time'}"
        realtime = live.realtime([name]) if dash.realtime else None
        return _html(dash, pages.pipeline_page(name, plan, error, figures.run_summary(last[0]) if last else None,
                                               realtime))
