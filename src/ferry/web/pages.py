"""The dashboard's pages as HTML strings, from the figures (``figures.py``) and the store's rows."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ferry.core.ports import DeadLetter
from ferry.web.html import e, hidden, json_script, layout, link, num, pretty_json, status_badge, table, when
from ferry.web.masking import mask_secrets
from ferry.web.security import CSRF_FIELD

OBJECT_COLUMNS = ("read", "written", "created", "updated", "unchanged", "dead_lettered", "api_calls")


def run_rows(summaries: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in summaries:
        t = s["totals"]
        rows.append([
            link(f"/runs/{s['id']}", s["id"]),
            link(f"/pipelines/{s['pipeline']}", s["pipeline"]),
            e(s["origin"] or "-"),
            f'<span data-status="{e(s["status"])}">{status_badge(s["status"])}</span>',
            when(s["started_at"]),
            num(s["seconds"]),
            num(t["read"]), num(t["written"]), num(t["created"]), num(t["updated"]), num(t["dead_lettered"]),
            num(t["api_calls"]), num(s["records_per_second"]),
        ])
    return rows


RUN_HEADERS = ("run", "pipeline", "origin", "status", "started (UTC)", "seconds", "read", "written", "created",
               "updated", "dead-lettered", "API calls", "records/s")


def runs_table(summaries: Sequence[dict[str, Any]]) -> str:
    return table(RUN_HEADERS, run_rows(summaries), cls="runs", body_id="runs-body")


def runs_page(summaries: Sequence[dict[str, Any]], chart: dict[str, Any], budgets: Sequence[dict[str, Any]],
              live_budgets: Sequence[dict[str, Any]] = (), sources: Sequence[dict[str, Any]] = ()) -> str:
    if not summaries:
        return layout("Runs", "<p>No runs yet: try <code>ferry demo --serve</code> or <code>ferry run</code>.</p>"
                      + live_budget_section(live_budgets))
    body = (
        '<section class="charts"><h2>Throughput</h2>'
        + json_script("throughput-data", chart)
        + '<div class="chart-grid">'
        '<figure><figcaption>records/s per run</figcaption><div class="chart" data-series="runs" '
        'data-key="records_per_second" data-label="id"></div></figure>'
        '<figure><figcaption>API calls per run (target + source)</figcaption><div class="chart" data-series="runs" '
        'data-key="api_calls" data-label="id"></div></figure>'
        '<figure><figcaption>records/s, last 24 h (per hour)</figcaption><div class="chart" data-series="hours" '
        'data-key="records_per_second" data-label="hour"></div></figure>'
        '<figure><figcaption>API calls, last 24 h (per hour)</figcaption><div class="chart" data-series="hours" '
        'data-key="api_calls" data-label="hour"></div></figure>'
        "</div></section>"
        + budget_section(budgets)
        + source_section(sources)
        + live_budget_section(live_budgets)
        + "<section><h2>Runs</h2>" + runs_table(summaries) + "</section>"
    )
    return layout("Runs", body, active="/")


def budget_section(budgets: Sequence[dict[str, Any]]) -> str:
    if not budgets:
        return ""
    parts = []
    for b in budgets:
        frac = b["used_fraction"]
        bar = (f'<div class="bar" title="{e(f"{frac:.1%}")} used"><div class="fill" style="width:{frac * 100:.1f}%">'
               "</div></div>") if frac is not None else ""
        if b["share"] is None:
            head = "no api_budget share set, the org's whole allocation: "
        elif b["allowed"] is None:
            head = f"share {e(b['share'])} of an allocation not reported yet: "
        else:
            head = f"share {e(b['share'])} = {num(b['allowed'])} calls per rolling 24 h: "
        resume = f"; paused, resumes after {when(b['resume_after'])} UTC" if b["resume_after"] else ""
        parts.append(
            f'<div class="budget" data-pipeline="{e(b["pipeline"])}"><strong>{e(b["pipeline"])}</strong> {head}'
            f"<span class=\"spent\">{num(b['spent_24h'])}</span> calls in the last 24 h "
            f"({num(b['spent_this_run'])} in run {num(b['run_id'])}), {num(b['remaining'])} left{resume}{bar}</div>"
        )
    return "<section><h2>Target API budget (pipeline's share)</h2>" + "".join(parts) + "</section>"


def source_section(sources: Sequence[dict[str, Any]]) -> str:
    """Per pipeline, the source API calls its runs made (Shopify's bucket is spent by them: the live level is in
    the next section while this process talks to the shop)."""
    if not sources:
        return ""
    parts = [f'<div class="budget source-calls" data-pipeline="{e(s["pipeline"])}"><strong>{e(s["pipeline"])}'
             f'</strong> source{" over " + e(s["source_api"]) if s["source_api"] else ""}: '
             f'<span class="spent">{num(s["calls_24h"])}</span> calls in the last 24 h ({num(s["calls_last_run"])} in '
             f'run {num(s["run_id"])})</div>' for s in sources]
    return "<section><h2>Source API calls (Shopify: its leaky bucket)</h2>" + "".join(parts) + "</section>"


def run_page(summary: dict[str, Any], live: dict[str, int] | None) -> str:
    t = summary["totals"]
    facts = [
        ("pipeline", link(f"/pipelines/{summary['pipeline']}", summary["pipeline"])),
        ("origin", e(summary["origin"] or "-")), ("status", status_badge(summary["status"])),
        ("started (UTC)", when(summary["started_at"])), ("finished (UTC)", when(summary["finished_at"])),
        ("seconds", num(summary["seconds"])), ("records/s", num(summary["records_per_second"])),
        ("API calls", f"{num(t['api_calls'])} ({num(t['target_api_calls'])} target, "
                      f"{num(t['source_api_calls'])} source)"),
    ]
    if summary["source_records"]:
        read = ", ".join(f"{num(n)} {e(stream)}" for stream, n in summary["source_records"].items())
        via = f" over {e(summary['source_api'])}" if summary["source_api"] else ""
        facts.append(("source read", f"{read}{via}"))
    if live is not None:
        facts.append(("in progress", f"{num(live['staged'])} records staged, {num(live['queued'])} queued for the "
                                     "target (refreshes)"))
    dl = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in facts)
    objects = summary["objects"]
    rows = [[e(name), *(num(o.get(c, 0)) for c in OBJECT_COLUMNS), e(o.get("strategy", "-")),
             f'<span class="reason">{e(o.get("reason", ""))}</span>'] for name, o in objects.items()]
    body = f'<dl class="facts"{" data-running=1" if live is not None else ""}>{dl}</dl>'
    body += "<h2>Per object</h2>" + table(
        ("object", "read", "written", "created", "updated", "unchanged", "dead-lettered", "API calls", "strategy",
         "why"), rows, cls="objects") if rows else "<p>No per-object figures yet.</p>"
    if summary["budget"]:
        body += "<h2>API budget after the run</h2>" + pretty_json(mask_secrets(summary["budget"]))
    if summary["error"]:
        body += f'<h2>Error</h2><pre class="error">{e(summary["error"])}</pre>'
    if t["dead_lettered"]:
        body += "<p>" + link("/letters", "This run's pipeline's dead letters", pipeline=summary["pipeline"]) + "</p>"
    return layout(f"Run {summary['id']}", body, active="/")


LETTER_HEADERS = ("", "id", "pipeline", "object", "record", "code", "fields", "attempts", "last seen (UTC)",
                  "status", "message")


def letters_page(
    letters: Sequence[DeadLetter], total: int, criteria: Mapping[str, str], csrf: str, options: Mapping[str, Any],
    replayable: set[str],
) -> str:
    form = _filter_form(criteria, options, sorted({d.error_code for d in letters}))
    rows = [[
        f'<input type="checkbox" name="id" value="{d.id}" form="act" aria-label="select letter {d.id}">'
        if d.status == "open" else "",
        link(f"/letters/{d.id}", d.id), e(d.pipeline), e(d.object), e(d.record_key), f"<code>{e(d.error_code)}</code>",
        e(", ".join(d.fields)), num(d.attempts), when(d.last_seen), status_badge(d.status), e(d.message),
    ] for d in letters]
    shown = f"{len(letters):,} of {total:,} matching" if total != len(letters) else f"{total:,} matching"
    body = form + f'<p class="count" data-total="{total}">{shown}</p>'
    if letters:
        body += table(LETTER_HEADERS, rows, cls="letters")
    body += _action_form(criteria, csrf, total, replayable)
    return layout("Dead letters", body, active="/letters")


def _filter_form(criteria: Mapping[str, str], options: Mapping[str, Any], codes: Sequence[str]) -> str:
    def select(name: str, values: Sequence[str], any_label: str = "any") -> str:
        opts = f'<option value="">{e(any_label)}</option>' + "".join(
            f'<option value="{e(v)}"{" selected" if criteria.get(name) == v else ""}>{e(v)}</option>' for v in values)
        return f'<label>{e(name)} <select name="{e(name)}">{opts}</select></label>'

    statuses = ("open", "resolved", "discarded", "all")
    status_opts = "".join(f'<option value="{s}"{" selected" if criteria.get("status", "open") == s else ""}>{s}'
                          "</option>" for s in statuses)
    return (
        '<form class="filters" method="get" action="/letters">'
        + select("pipeline", options["pipelines"]) + select("object", options["objects"])
        + f'<label>code <input name="code" list="codes" placeholder="INVALID_EMAIL_ADDRESS" '
        f'value="{e(criteria.get("code", ""))}"></label><datalist id="codes">'
        + "".join(f'<option value="{e(c)}">' for c in codes) + "</datalist>"
        + f'<label>since <input name="since" placeholder="2h, 7d, 2026-03-01" value="{e(criteria.get("since", ""))}">'
        "</label>"
        + f'<label>status <select name="status">{status_opts}</select></label>'
        '<button type="submit">Filter</button></form>'
    )


def _action_form(criteria: Mapping[str, str], csrf: str, total: int, replayable: set[str]) -> str:
    """Replay or discard the ticked letters, or (none ticked) every open letter the filter matches: both ask
    for confirmation on the next page."""
    if criteria.get("status", "open") != "open" or not total:
        return ""
    keep = "".join(hidden(k, v) for k, v in criteria.items() if k in ("pipeline", "object", "code", "since") and v)
    note = "" if replayable else (
        '<p class="hint">Replay needs the pipeline file: start the dashboard with it '
        "(<code>ferry dashboard PIPELINE.yml</code>).</p>")
    return (
        f'<form id="act" class="actions" method="post" action="/letters/action">{hidden(CSRF_FIELD, csrf)}{keep}'
        "<p>Ticked letters, or when none is ticked every open letter this filter matches:</p>"
        '<button type="submit" name="action" value="replay">Replay…</button> '
        '<button type="submit" name="action" value="discard">Discard…</button>'
        f"{note}</form>"
    )


def letter_page(d: DeadLetter, csrf: str, can_replay: bool) -> str:
    facts = [("pipeline", e(d.pipeline)), ("run", link(f"/runs/{d.run_id}", d.run_id) if d.run_id else "-"),
             ("object", e(d.object)), ("record", e(d.record_key)), ("version", e(d.version)),
             ("source record", e(f"{d.stream} {d.source_key}" if d.stream else "-")),
             ("code", f"<code>{e(d.error_code)}</code>"), ("fields", e(", ".join(d.fields))),
             ("attempts", num(d.attempts)), ("first seen (UTC)", when(d.first_seen)),
             ("last seen (UTC)", when(d.last_seen)), ("status", status_badge(d.status))]
    if d.resolution:
        facts.append(("resolution", e(f"{d.resolution} at {d.resolved_at or '-'}")))
    body = '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    body += f'<h2>Errors</h2><p class="message">{e(d.message)}</p>' + pretty_json(mask_secrets(d.errors))
    if d.history:
        body += "<h2>Attempts</h2>" + pretty_json(mask_secrets(d.history))
    body += '<h2>Mapped payload</h2><div class="mapped">' + pretty_json(mask_secrets(d.mapped_payload)) + "</div>"
    body += '<h2>Source record</h2><div class="source">' + pretty_json(mask_secrets(d.source_payload)) + "</div>"
    if d.status == "open":
        replay = ('<button type="submit" name="action" value="replay">Replay…</button> ' if can_replay else
                  '<span class="hint">Replay needs the pipeline file (<code>ferry dashboard PIPELINE.yml</code>).'
                  "</span> ")
        body += (f'<form class="actions" method="post" action="/letters/action">{hidden(CSRF_FIELD, csrf)}'
                 f'{hidden("id", d.id)}{replay}<button type="submit" name="action" value="discard">Discard…</button>'
                 "</form>")
    return layout(f"Dead letter {d.id}", body, active="/letters")


def confirm_page(action: str, fields: Sequence[tuple[str, str]], count: int, sample: Sequence[DeadLetter],
                 csrf: str) -> str:
    """The confirmation step: what the action will touch, and a form that repeats the request with confirm=1."""
    keep = "".join(hidden(k, v) for k, v in fields if k not in (CSRF_FIELD, "confirm", "reason"))
    rows = [[link(f"/letters/{d.id}", d.id), e(d.object), e(d.record_key), f"<code>{e(d.error_code)}</code>",
             e(d.message)] for d in sample]
    listing = table(("id", "object", "record", "code", "message"), rows) if rows else ""
    more = f"<p>and {count - len(sample):,} more</p>" if count > len(sample) else ""
    reason = ('<label>Why these need no replay (kept with them) <input name="reason" required '
              'minlength="3" size="50"></label> ') if action == "discard" else ""
    what = ("read each record again from the source, map it with the current mapping and write it"
            if action == "replay" else "mark them discarded (nothing is deleted)")
    body = (
        f'<p class="confirm-question">{e(action.capitalize())} {count:,} open dead letter{"s" if count != 1 else ""}? '
        f"This will {e(what)}.</p>{listing}{more}"
        f'<form class="actions" method="post" action="/letters/action">{hidden(CSRF_FIELD, csrf)}{keep}'
        f'{hidden("confirm", "1")}{reason}<button type="submit" class="danger" id="confirm">'
        f"Yes, {e(action)} {count:,}</button> <a href=\"/letters\">Cancel</a></form>"
    )
    return layout(f"Confirm {action}", body, active="/letters")


def replay_result_page(report: dict[str, Any]) -> str:
    counts = report["counts"]
    summary = ", ".join(f"{num(n)} {e(k)}" for k, n in counts.items()) or "nothing to replay"
    rows = [[link(f"/letters/{o['id']}", o["id"]), e(o["object"]), e(o["record_key"]),
             f'<span class="outcome outcome-{e(o["outcome"])}">{e(o["outcome"])}</span>', e(o["source"]),
             e(o["message"] or (o["errors"][0].get("message") if o["errors"] else ""))] for o in report["outcomes"]]
    body = f'<p class="result">Replayed pipeline {e(report["pipeline"])}: {summary}.</p>'
    if rows:
        body += table(("id", "object", "record", "outcome", "read from", "message"), rows, cls="outcomes")
    for s in report["skipped"]:
        body += f"<p class=\"hint\">letter {num(s['id'])} skipped: {e(s['reason'])}</p>"
    body += "<p>" + link("/letters", "Back to the dead letters") + "</p>"
    return layout("Replay result", body, active="/letters")


def discard_result_page(count: int, reason: str) -> str:
    body = (f'<p class="result">Discarded {count:,} dead letter{"s" if count != 1 else ""}: {e(reason)}</p>'
            + "<p>" + link("/letters", "Back to the dead letters", status="discarded") + "</p>")
    return layout("Discard result", body, active="/letters")


def seconds_text(value: float | None) -> str:
    """A latency as people read it: ``2.4 ms``, ``850 ms``, ``3.20 s`` (``-`` when there is none yet).
    dashboard.js formats the polled figures the same way."""
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def rate_text(value: float | None) -> str:
    """A rate with two decimals: a few events a minute (0.05/s) is not shown as 0."""
    return "-" if value is None else f"{value:,.2f}"


def _live_cell(path: Sequence[str], value: Any, unit: str = "") -> str:
    """A cell dashboard.js refreshes from ``/api/live``: ``data-live`` is the JSON path of its figure."""
    shown = seconds_text(value) if unit == "s" else rate_text(value) if unit == "rate" else num(value)
    return (f'<span class="live" data-live="{e(json.dumps(list(path)))}" data-unit="{e(unit)}">{shown}</span>')


LIVE_HEADERS = ("pipeline", "events/s", "events (5 min)", "inbox queue", "outbox queue", "ack p50", "ack p95",
                "ack p99", "end-to-end p50", "end-to-end p95", "end-to-end p99")


def live_panel(data: dict[str, Any], names: Sequence[str]) -> str:
    """``ferry serve``'s recent figures per pipeline, refreshed every 2 s by dashboard.js from ``/api/live``."""
    rows = []
    for name in names:
        p = data["pipelines"].get(name)
        if p is None:
            continue
        base = ("pipelines", name)
        rows.append([
            link(f"/pipelines/{name}", name),
            _live_cell((*base, "events_per_second"), p["events_per_second"], "rate"),
            _live_cell((*base, "events"), p["events"]),
            _live_cell((*base, "queue", "inbox"), p["queue"]["inbox"]),
            _live_cell((*base, "queue", "outbox"), p["queue"]["outbox"]),
            *(_live_cell((*base, "ack", q), p["ack"][q], "s") for q in ("p50", "p95", "p99")),
            *(_live_cell((*base, "end_to_end", q), p["end_to_end"][q], "s") for q in ("p50", "p95", "p99")),
        ])
    objects = ""
    if len(names) == 1 and names[0] in data["pipelines"]:
        per = data["pipelines"][names[0]]["objects"]
        obj_rows = [[e(obj), num(s["count"]), rate_text(s["per_second"]),
                     *(seconds_text(s[q]) for q in ("p50", "p95", "p99"))] for obj, s in per.items()]
        if obj_rows:
            objects = "<h3>End to end, per object written</h3>" + table(
                ("object", "records (5 min)", "records/s", "p50", "p95", "p99"), obj_rows, cls="live-objects")
    note = (f'<p class="hint">Events: webhooks accepted; events/s over the last {int(data["rate_seconds"])} s, '
            f'latency percentiles over the last {int(data["window_seconds"] // 60)} min (webhook arrival to '
            "ferry's answer; to the record written in the target). Refreshes every 2 s.</p>")
    return ('<section class="realtime" id="realtime" data-poll="/api/live"><h2>Real time</h2>'
            + table(LIVE_HEADERS, rows, cls="live") + objects + note + "</section>")


def live_budget_section(budgets: Sequence[dict[str, Any]]) -> str:
    """The API budgets as this process last saw them (the ``ferry_api_budget_remaining`` gauge): Shopify's
    leaky bucket beside Salesforce's daily allocation, while ``ferry serve`` or a replay talks to them."""
    if not budgets:
        return ""
    names = {("shopify", "bucket"): "Shopify leaky bucket", ("shopify", "graphql_points"): "Shopify GraphQL cost "
             "points (calls' query cost)", ("salesforce", "org_daily"): "Salesforce daily API "
             "allocation", ("salesforce", "pipeline_share"): "Salesforce, pipeline's share"}
    parts = []
    for b in budgets:
        label = names.get((b["system"], b["budget"]), f"{b['system']} {b['budget']}")
        size = f" of {num(int(b['limit']))}" if b["limit"] is not None else ""
        frac = b["used_fraction"]
        bar = (f'<div class="bar" title="{e(f"{frac:.1%}")} used"><div class="fill" style="width:{frac * 100:.1f}%">'
               "</div></div>") if frac is not None else ""
        at = ""
        if b["at"]:
            at = " (as of " + dt.datetime.fromtimestamp(float(b["at"]), dt.UTC).strftime("%H:%M:%S") + " UTC)"
        parts.append(f'<div class="budget live-budget" data-system="{e(b["system"])}" data-budget="{e(b["budget"])}">'
                     f'<strong>{e(label)}</strong>: <span class="remaining">{num(int(b["remaining"]))}</span>{size} '
                     f'{"points" if b["budget"] == "graphql_points" else "calls"} left{at}{bar}</div>')
    return "<section><h2>API budgets, live (this process)</h2>" + "".join(parts) + "</section>"


def pipelines_page(entries: Sequence[dict[str, Any]], realtime: dict[str, Any] | None = None) -> str:
    rows = [[link(f"/pipelines/{p['name']}", p["name"]), "yes" if p["loaded"] else "no",
             link(f"/runs/{p['last']['id']}", p["last"]["id"]) if p["last"] else "-",
             status_badge(p["last"]["status"]) if p["last"] else "-",
             when(p["last"]["started_at"]) if p["last"] else "-", num(p["open_letters"])] for p in entries]
    body = table(("pipeline", "file loaded", "last run", "status", "started (UTC)", "open dead letters"), rows)
    body += ('<p class="hint">Plans and replay need the pipeline file: '
             "<code>ferry dashboard PIPELINE.yml ...</code>.</p>")
    if realtime is not None:
        body = live_panel(realtime, [p["name"] for p in entries]) + body
    return layout("Pipelines", body, active="/pipelines")


def pipeline_page(name: str, plan: dict[str, Any] | None, plan_error: str | None, last: dict[str, Any] | None,
                  realtime: dict[str, Any] | None = None) -> str:
    body = live_panel(realtime, [name]) if realtime is not None else ""
    if last:
        body += "<h2>Last run</h2>" + runs_table([last])
    body += "<h2>Plan</h2>"
    if plan_error:
        body += f'<p class="error">{e(plan_error)}</p>'
    if plan:
        body += f"<p>load order: {e(' → '.join(plan['load_order']))}</p>"
        if plan.get("api_usage"):
            used, total = plan["api_usage"]
            body += f"<p>org API usage: {num(used)} of {num(total)} daily requests</p>"
        problems = plan.get("problems") or []
        body += ("<ul class=\"problems\">" + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>") if problems \
            else '<p class="ok">No problems found against the target\'s describe and the source\'s records.</p>'
        for o in plan["objects"]:
            rows = [[e(f["field"]), f"<code>{e(f['expression'])}</code>", e(f["type"]), num(f["length"] or None),
                     "yes" if f["required"] else ""] for f in o["fields"]]
            body += (f'<h3>{e(o["name"])} ← {e(o["entity"])}, upsert by {e(o["external_id"])}</h3>'
                     f'<p class="strategy">strategy: <strong>{e(o["strategy"])}</strong> — {e(o["reason"])} '
                     f"({num(o['pending'])} pending)</p>"
                     + table(("target field", "from", "type", "length", "required"), rows, cls="fields"))
            body += "".join(f'<p class="problem">problem: {e(p)}</p>' for p in o["problems"])
            body += "".join(f'<p class="hint">note: {e(n)}</p>' for n in o.get("notes", []))
    return layout(f"Pipeline {name}", body, active="/pipelines")


def login_page(failed: bool) -> str:
    note = '<p class="error">That token is not right.</p>' if failed else ""
    body = (note + '<form method="post" action="/login"><label>Dashboard token '
            '<input type="password" name="token" autocomplete="current-password" required></label> '
            '<button type="submit">Sign in</button></form>')
    return layout("Sign in", body)
