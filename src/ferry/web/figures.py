"""What the pages show, computed from the store's run rows: per-run totals, throughput points, the API budget.

Everything here is plain data (dicts and lists of numbers and strings), so the HTML pages and the JSON endpoints
the page's script polls show the same figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from ferry.core.ports import RunRow

COUNTS = ("read", "written", "created", "updated", "unchanged", "dead_lettered", "api_calls")
HOURS = 24
RUN_POINTS = 60  # runs on the per-run chart: the newest; more would not be readable


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def run_origin(row: RunRow) -> str | None:
    """How the run started (manual, schedule, webhook, replay) when the store records it."""
    origin = getattr(row, "origin", None) or row.stats.get("origin")
    return str(origin) if origin else None


def duration_seconds(row: RunRow, now: dt.datetime | None = None) -> float | None:
    """The run's own figure when finished; a running run's age so far."""
    if row.stats.get("seconds") and row.status != "running":
        return float(row.stats["seconds"])
    start = parse_time(row.started_at)
    end = parse_time(row.finished_at) or (now or dt.datetime.now(dt.UTC))
    return max(0.0, (end - start).total_seconds()) if start else None


def run_totals(row: RunRow) -> dict[str, int]:
    """Per-object counts summed, and every API call of the run (target writes, source reads, set-up)."""
    objects = (row.stats.get("objects") or {}).values()
    totals = {c: sum(int(o.get(c, 0) or 0) for o in objects) for c in COUNTS}
    totals["target_api_calls"] = totals["api_calls"]
    totals["source_api_calls"] = int(row.stats.get("source_api_calls", 0) or 0)
    totals["api_calls"] += totals["source_api_calls"] + int(row.stats.get("setup_api_calls", 0) or 0)
    totals["source_read"] = sum(int(n or 0) for n in (row.stats.get("source_records") or {}).values())
    return totals


def run_summary(row: RunRow, now: dt.datetime | None = None) -> dict[str, Any]:
    seconds = duration_seconds(row, now)
    totals = run_totals(row)
    return {
        "id": row.id,
        "pipeline": row.pipeline,
        "origin": run_origin(row),
        "status": row.status,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "totals": totals,
        "records_per_second": _rate(totals["written"], seconds),
        "objects": row.stats.get("objects") or {},
        "budget": row.stats.get("budget"),
        "source_records": row.stats.get("source_records") or {},
        "source_api": row.stats.get("source_api"),
        "error": row.error,
    }


def _rate(n: int, seconds: float | None) -> float:
    return round(n / seconds, 1) if seconds else 0.0


def throughput(rows: Sequence[RunRow], now: dt.datetime | None = None) -> dict[str, Any]:
    """The chart's data: one point per finished run (the newest ``RUN_POINTS``, oldest first) and 24 hourly
    buckets ending now.

    Per run: records written per second of the run, and API calls (target and source apart). Per hour: records
    written and API calls of the runs that finished in it, and records/s over the run time spent in it."""
    now = now or dt.datetime.now(dt.UTC)
    runs = []
    done = sorted((r for r in rows if r.status != "running"), key=lambda r: r.id)
    for row in done[-RUN_POINTS:]:
        totals, seconds = run_totals(row), duration_seconds(row, now)
        runs.append({
            "id": row.id, "pipeline": row.pipeline, "at": row.finished_at or row.started_at,
            "records_per_second": _rate(totals["written"], seconds),
            "written": totals["written"], "api_calls": totals["api_calls"],
            "target_api_calls": totals["target_api_calls"], "source_api_calls": totals["source_api_calls"],
        })
    start = (now - dt.timedelta(hours=HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    hours: list[dict[str, Any]] = [
        {"hour": (start + dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H:00Z"), "written": 0, "api_calls": 0,
         "seconds": 0.0, "records_per_second": 0.0}
        for i in range(HOURS)
    ]
    for row in rows:
        finished = parse_time(row.finished_at)
        if finished is None or finished < start:
            continue
        slot = hours[min(HOURS - 1, int((finished - start).total_seconds() // 3600))]
        totals = run_totals(row)
        slot["written"] += totals["written"]
        slot["api_calls"] += totals["api_calls"]
        slot["seconds"] += duration_seconds(row, now) or 0.0
    for slot in hours:
        slot["records_per_second"] = _rate(slot["written"], slot["seconds"])
    return {"runs": runs, "hours": hours}


def budgets(rows: Sequence[RunRow]) -> list[dict[str, Any]]:
    """Each pipeline's target API budget as its newest run reported it: share, spent in 24 h, left."""
    seen: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r.id, reverse=True):
        budget = row.stats.get("budget")
        if row.pipeline in seen or not budget:
            continue
        allowed = budget.get("allowed")
        spent = int(budget.get("spent_24h", 0) or 0)
        seen[row.pipeline] = {
            "pipeline": row.pipeline, "run_id": row.id, "share": budget.get("share"), "allowed": allowed,
            "spent_24h": spent, "spent_this_run": int(budget.get("spent_this_run", 0) or 0),
            "remaining": budget.get("remaining"), "resume_after": budget.get("resume_after"),
            "used_fraction": min(1.0, spent / allowed) if allowed else None,
        }
    return sorted(seen.values(), key=lambda b: b["pipeline"])


def source_calls(rows: Sequence[RunRow], now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per pipeline whose runs called the source's API: calls of the runs finished in the last 24 h and of the
    newest run (what spends a Shopify store's leaky bucket), with the source API it read through."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(hours=HOURS)
    seen: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r.id, reverse=True):
        calls = int(row.stats.get("source_api_calls", 0) or 0)
        entry = seen.get(row.pipeline)
        if entry is None:
            if not calls:
                continue
            entry = seen[row.pipeline] = {
                "pipeline": row.pipeline, "run_id": row.id, "source_api": row.stats.get("source_api"),
                "calls_last_run": calls, "calls_24h": 0,
            }
        finished = parse_time(row.finished_at)
        if finished is not None and finished >= since:
            entry["calls_24h"] += calls
    return sorted(seen.values(), key=lambda s: s["pipeline"])
